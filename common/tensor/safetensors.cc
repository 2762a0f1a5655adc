#include "common/tensor/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <functional>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/file_util.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Real headers are kilobytes; anything this large is corruption, not a model.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
constexpr char kIndexName[] = "model.safetensors.index.json";
constexpr char kSingleName[] = "model.safetensors";

absl::Status Invalid(absl::string_view source, absl::string_view tensor, absl::string_view what) {
  if (tensor.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
  return absl::InvalidArgumentError(absl::StrCat(source, ": tensor \"", tensor, "\": ", what));
}

absl::StatusOr<TensorInfo> ParseEntry(const std::string& name, const json& entry,
                                      uint64_t data_size, absl::string_view source) {
  if (!entry.is_object()) return Invalid(source, name, "header entry is not an object");
  TensorInfo info;
  info.name = name;

  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    return Invalid(source, name, "missing string field \"dtype\"");
  }
  auto dtype = ParseDType(dtype_it->get<std::string>());
  if (!dtype.ok()) return Invalid(source, name, dtype.status().message());
  info.dtype = *dtype;

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    return Invalid(source, name, "missing array field \"shape\"");
  }
  uint64_t numel = 1;
  for (const json& d : *shape_it) {
    if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0)) {
      return Invalid(source, name, "shape must hold non-negative integers");
    }
    const uint64_t dim = d.get<uint64_t>();
    if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim / 8) {
      return Invalid(source, name, "shape is too large");
    }
    numel *= dim;
    info.shape.push_back(static_cast<int64_t>(dim));
  }

  auto off_it = entry.find("data_offsets");
  auto non_negative = [](const json& v) {
    return v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
  };
  if (off_it == entry.end() || !off_it->is_array() || off_it->size() != 2 ||
      !non_negative((*off_it)[0]) || !non_negative((*off_it)[1])) {
    return Invalid(source, name, "\"data_offsets\" must be two non-negative integers");
  }
  const uint64_t begin = (*off_it)[0].get<uint64_t>();
  const uint64_t end = (*off_it)[1].get<uint64_t>();
  if (begin > end) {
    return Invalid(source, name,
                   absl::StrCat("data_offsets [", begin, ", ", end, "] are reversed"));
  }
  if (end > data_size) {
    return Invalid(source, name,
                   absl::StrCat("data_offsets [", begin, ", ", end, "] run past the end of the ",
                                data_size, "-byte data region (truncated or corrupt file)"));
  }
  const uint64_t expected = numel * DTypeSize(info.dtype);
  if (end - begin != expected) {
    return Invalid(source, name,
                   absl::StrCat("holds ", end - begin, " bytes but dtype ", DTypeName(info.dtype),
                                " and shape need ", expected));
  }
  info.offset = begin;
  info.nbytes = end - begin;
  return info;
}

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  const int err = errno;
  const std::string msg = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(msg);
  return absl::UnavailableError(msg);
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view text, uint64_t data_size,
                                                         absl::string_view source) {
  json header = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return Invalid(source, "", "header is not valid JSON");
  if (!header.is_object()) return Invalid(source, "", "header is not a JSON object");

  SafetensorsHeader out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) return Invalid(source, "", "\"__metadata__\" is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return Invalid(source, "",
                         absl::StrCat("\"__metadata__\".\"", m.key(), "\" is not a string"));
        }
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    auto info = ParseEntry(it.key(), *it, data_size, source);
    if (!info.ok()) return info.status();
    out.tensors.push_back(*std::move(info));
  }

  std::sort(out.tensors.begin(), out.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.offset != b.offset ? a.offset < b.offset : a.nbytes < b.nbytes;
  });
  for (size_t i = 1; i < out.tensors.size(); ++i) {
    const TensorInfo& prev = out.tensors[i - 1];
    const TensorInfo& cur = out.tensors[i];
    if (cur.offset < prev.offset + prev.nbytes) {
      return Invalid(source, cur.name,
                     absl::StrCat("bytes overlap those of tensor \"", prev.name, "\""));
    }
    if (cur.offset > prev.offset + prev.nbytes) {
      return Invalid(source, cur.name,
                     absl::StrCat("starts at byte ", cur.offset, " of the data, but tensor \"",
                                  prev.name, "\" ends at ", prev.offset + prev.nbytes,
                                  " (the format requires the data to be covered exactly)"));
    }
  }
  // The tensors must cover the data region exactly: a header that is a byte short of the file
  // (or a file with bytes no tensor owns) is truncated or tampered with.
  const uint64_t covered =
      out.tensors.empty() ? 0 : out.tensors.back().offset + out.tensors.back().nbytes;
  if (!out.tensors.empty() && out.tensors.front().offset != 0) {
    return Invalid(source, out.tensors.front().name,
                   absl::StrCat("starts at byte ", out.tensors.front().offset,
                                " of the data; the first tensor must start at 0"));
  }
  if (covered != data_size) {
    return Invalid(source, "",
                   absl::StrCat("the tensors cover ", covered, " bytes of a ", data_size,
                                "-byte data region (truncated, padded or corrupt file)"));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  if (auto s = CheckRegularFile(path); !s.ok()) return s;  // a FIFO would block the open
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return ErrnoError("cannot open", path);
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    auto status = absl::InvalidArgumentError(absl::StrCat(path, ": expected a regular file"));
    ::close(fd);
    return status;
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return Invalid(
        path, "", absl::StrCat("file is ", size, " bytes, too short for the 8-byte header length"));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // the mapping keeps its own reference
  if (map == MAP_FAILED) return ErrnoError("cannot mmap", path);

  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->map_ = static_cast<const uint8_t*>(map);
  file->map_size_ = size;

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file->map_[i];
  if (header_len > kMaxHeaderBytes || header_len > size - 8) {
    return Invalid(path, "",
                   absl::StrCat("header length ", header_len, " exceeds the ", size - 8,
                                " bytes after the length field (truncated or corrupt file)"));
  }
  file->data_start_ = 8 + header_len;
  absl::string_view text(reinterpret_cast<const char*>(file->map_ + 8), header_len);
  auto header = ParseSafetensorsHeader(text, size - file->data_start_, path);
  if (!header.ok()) return header.status();
  file->header_ = *std::move(header);
  for (size_t i = 0; i < file->header_.tensors.size(); ++i) {
    file->index_[file->header_.tensors[i].name] = i;
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(const_cast<uint8_t*>(map_), map_size_);
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

absl::StatusOr<TensorView> SafetensorsFile::Get(absl::string_view name) const {
  const TensorInfo* info = Find(name);
  if (info == nullptr) {
    return absl::NotFoundError(absl::StrCat(path_, ": no tensor named \"", name, "\""));
  }
  return TensorView{info, map_ + data_start_ + info->offset};
}

void SafetensorsWriter::SetMetadata(std::string key, std::string value) {
  metadata_[std::move(key)] = std::move(value);
}

absl::Status SafetensorsWriter::Add(std::string name, DType dtype, std::vector<int64_t> shape,
                                    const void* data, size_t nbytes) {
  if (name.empty() || name == "__metadata__") {
    return absl::InvalidArgumentError(absl::StrCat("invalid tensor name \"", name, "\""));
  }
  for (const Entry& e : tensors_) {
    if (e.info.name == name) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\" added twice"));
    }
  }
  TensorInfo info;
  info.name = std::move(name);
  info.dtype = dtype;
  info.shape = std::move(shape);
  for (int64_t d : info.shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor \"", info.name, "\": negative dimension"));
    }
  }
  const uint64_t expected = static_cast<uint64_t>(info.numel()) * DTypeSize(dtype);
  if (expected != nbytes) {
    return absl::InvalidArgumentError(absl::StrCat("tensor \"", info.name, "\": ", nbytes,
                                                   " bytes given but dtype and shape need ",
                                                   expected));
  }
  info.offset = data_bytes_;
  info.nbytes = nbytes;
  data_bytes_ += nbytes;
  tensors_.push_back(Entry{std::move(info), std::string(static_cast<const char*>(data), nbytes)});
  return absl::OkStatus();
}

std::vector<std::string> SafetensorsWriter::names() const {
  std::vector<std::string> out;
  for (const Entry& e : tensors_) out.push_back(e.info.name);
  return out;
}

namespace {

// The 8-byte length, the JSON header (tensors in data order) and padding to 8 bytes.
std::string SerializeSafetensorsHeader(const std::vector<TensorInfo>& tensors,
                                       const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps tensors in data order, which makes headers easy to read and diff.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  for (const TensorInfo& t : tensors) {
    header[t.name] = {{"dtype", DTypeName(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {t.offset, t.offset + t.nbytes}}};
  }
  std::string text = header.dump();
  // Pad with spaces so the data region starts 8-byte aligned.
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t len = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  return out + text;
}

}  // namespace

std::string SafetensorsWriter::SerializeHeader() const {
  std::vector<TensorInfo> infos;
  for (const Entry& e : tensors_) infos.push_back(e.info);
  return SerializeSafetensorsHeader(infos, metadata_);
}

absl::Status WriteSafetensorsStreaming(
    const std::string& path, std::vector<TensorInfo> tensors,
    const std::map<std::string, std::string>& metadata,
    const std::function<
        absl::Status(size_t, const std::function<absl::Status(absl::string_view)>&)>& produce) {
  uint64_t offset = 0;
  for (TensorInfo& t : tensors) {
    t.offset = offset;
    offset += t.nbytes;
  }
  FILE* out = std::fopen(path.c_str(), "wb");
  if (out == nullptr) return ErrnoError("cannot create", path);
  absl::Status status;
  auto write = [&](absl::string_view bytes) {
    if (std::fwrite(bytes.data(), 1, bytes.size(), out) != bytes.size())
      return ErrnoError("cannot write", path);
    return absl::OkStatus();
  };
  status = write(SerializeSafetensorsHeader(tensors, metadata));
  for (size_t i = 0; i < tensors.size() && status.ok(); ++i) {
    uint64_t written = 0;
    status = produce(i, [&](absl::string_view bytes) {
      written += bytes.size();
      return write(bytes);
    });
    if (status.ok() && written != tensors[i].nbytes) {
      status =
          absl::InternalError(absl::StrCat(path, ": tensor \"", tensors[i].name, "\" produced ",
                                           written, " bytes, its header says ", tensors[i].nbytes));
    }
  }
  if (std::fclose(out) != 0 && status.ok()) status = ErrnoError("cannot write", path);
  if (!status.ok()) ::unlink(path.c_str());
  return status;
}

absl::Status SafetensorsWriter::WriteFile(const std::string& path) const {
  const std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("cannot create", tmp);
  auto write_all = [&](const std::string& bytes) -> bool {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      done += static_cast<size_t>(n);
    }
    return true;
  };
  bool ok = write_all(SerializeHeader());
  for (const Entry& e : tensors_) ok = ok && write_all(e.bytes);
  ok = ok && ::fsync(fd) == 0;
  if (!ok) {
    auto status = ErrnoError("cannot write", tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return status;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto status = ErrnoError("cannot rename into", path);
    ::unlink(tmp.c_str());
    return status;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> CheckpointReader::Open(const std::string& dir) {
  auto reader = std::unique_ptr<CheckpointReader>(new CheckpointReader());
  reader->dir_ = dir;
  const fs::path index_path = fs::path(dir) / kIndexName;
  const fs::path single_path = fs::path(dir) / kSingleName;

  std::error_code ec;
  if (!fs::exists(index_path, ec)) {
    if (!fs::exists(single_path, ec)) {
      return absl::NotFoundError(
          absl::StrCat(dir, ": neither ", kSingleName, " nor ", kIndexName, " is present"));
    }
    auto file = SafetensorsFile::Open(single_path.string());
    if (!file.ok()) return file.status();
    for (const TensorInfo& t : (*file)->tensors()) reader->where_[t.name] = 0;
    reader->files_.push_back(*std::move(file));
    return reader;
  }

  const std::string src = index_path.string();
  auto index_text = ReadFileToString(src);  // regular files only, bounded
  if (!index_text.ok()) return index_text.status();
  json index = json::parse(*index_text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object())
    return Invalid(src, "", "not a valid JSON object");
  auto map_it = index.find("weight_map");
  if (map_it == index.end() || !map_it->is_object()) {
    return Invalid(src, "", "missing object field \"weight_map\"");
  }
  std::map<std::string, size_t> shard_slot;
  for (auto it = map_it->begin(); it != map_it->end(); ++it) {
    if (!it->is_string()) return Invalid(src, it.key(), "weight_map value is not a file name");
    const std::string shard = it->get<std::string>();
    // Shards live beside the index; anything else could read outside the model directory.
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..") {
      return Invalid(src, it.key(),
                     absl::StrCat("shard name \"", shard, "\" is not a plain file name"));
    }
    auto [slot, inserted] = shard_slot.emplace(shard, reader->files_.size());
    if (inserted) {
      const std::string shard_path = (fs::path(dir) / shard).string();
      auto file = SafetensorsFile::Open(shard_path);
      if (!file.ok()) {
        return absl::Status(file.status().code(),
                            absl::StrCat(src, ": shard \"", shard, "\" (holding tensor \"",
                                         it.key(), "\"): ", file.status().message()));
      }
      reader->files_.push_back(*std::move(file));
    }
    const SafetensorsFile& file = *reader->files_[slot->second];
    if (file.Find(it.key()) == nullptr) {
      return Invalid(src, it.key(),
                     absl::StrCat("listed in shard \"", shard, "\", which lacks it"));
    }
    reader->where_[it.key()] = slot->second;
  }
  return reader;
}

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> out;
  for (const auto& [name, slot] : where_) out.push_back(name);
  return out;
}

absl::StatusOr<TensorView> CheckpointReader::Get(absl::string_view name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    return absl::NotFoundError(absl::StrCat(dir_, ": checkpoint has no tensor \"", name, "\""));
  }
  return files_[it->second]->Get(name);
}

std::string CheckpointReader::FileOf(absl::string_view name) const {
  auto it = where_.find(name);
  return it == where_.end() ? "" : files_[it->second]->path();
}

absl::Status WriteCheckpoint(const std::string& dir, const SafetensorsWriter& all,
                             uint64_t max_shard_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  if (max_shard_bytes == 0 || all.data_bytes() <= max_shard_bytes) {
    fs::remove(fs::path(dir) / kIndexName, ec);
    return all.WriteFile((fs::path(dir) / kSingleName).string());
  }
  // Greedy packing in order; a tensor larger than the limit gets a shard of its own.
  std::vector<SafetensorsWriter> shards(1);
  for (const auto& e : all.tensors_) {
    if (shards.back().size() > 0 && shards.back().data_bytes() + e.info.nbytes > max_shard_bytes) {
      shards.emplace_back();
    }
    auto status =
        shards.back().Add(e.info.name, e.info.dtype, e.info.shape, e.bytes.data(), e.bytes.size());
    if (!status.ok()) return status;
  }
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    for (const auto& [k, v] : all.metadata_) shards[i].SetMetadata(k, v);
    const std::string name =
        absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
    auto status = shards[i].WriteFile((fs::path(dir) / name).string());
    if (!status.ok()) return status;
    for (const std::string& t : shards[i].names()) weight_map[t] = name;
  }
  json index = {{"metadata", {{"total_size", all.data_bytes()}}}, {"weight_map", weight_map}};
  // The index is written last and atomically: it is what makes the shards a checkpoint.
  const fs::path index_path = fs::path(dir) / kIndexName;
  const std::string tmp = index_path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << index.dump(2) << "\n";
    if (!out.good()) return absl::UnavailableError(absl::StrCat("cannot write ", tmp));
  }
  fs::rename(tmp, index_path, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot rename ", tmp, ": ", ec.message()));
  fs::remove(fs::path(dir) / kSingleName, ec);
  return absl::OkStatus();
}

}  // namespace squeeze
