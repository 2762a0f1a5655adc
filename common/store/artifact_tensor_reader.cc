#include "common/store/artifact_tensor_reader.h"

#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace squeeze {

using json = nlohmann::json;

absl::StatusOr<std::unique_ptr<ArtifactTensorReader>> ArtifactTensorReader::Open(
    ArtifactStore& store, const std::string& uri) {
  std::unique_ptr<ArtifactTensorReader> reader(new ArtifactTensorReader(store, uri));
  std::vector<std::string> shards = {"model.safetensors"};
  auto index = store.ReadArtifactRange(uri, "model.safetensors.index.json", 0, -1, nullptr);
  if (index.ok()) {
    reader->bytes_read_ += static_cast<int64_t>(index->size());
    const json j = json::parse(*index, nullptr, false);
    if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(uri, "/model.safetensors.index.json: expected an object \"weight_map\""));
    }
    std::set<std::string> unique;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it->is_string() || it->get<std::string>().find('/') != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat(uri, "/model.safetensors.index.json: weight_map[\"", it.key(),
                         "\"]: expected a shard "
                         "file name"));
      }
      unique.insert(it->get<std::string>());
    }
    shards.clear();
    for (const std::string& shard : unique) shards.push_back(shard);
  } else if (!absl::IsNotFound(index.status())) {
    return index.status();
  }
  for (const std::string& shard : shards) {
    if (auto s = reader->ReadShardHeader(shard); !s.ok()) return s;
  }
  return reader;
}

absl::Status ArtifactTensorReader::ReadShardHeader(const std::string& shard) {
  const std::string where = absl::StrCat(uri_, "/", shard);
  int64_t size = 0;
  auto head = store_.ReadArtifactRange(uri_, shard, 0, 8, &size);
  if (!head.ok()) return head.status();
  bytes_read_ += static_cast<int64_t>(head->size());
  if (head->size() != 8) return absl::InvalidArgumentError(absl::StrCat(where, ": too short"));
  uint64_t len = 0;
  for (int i = 7; i >= 0; --i) len = (len << 8) | static_cast<uint8_t>((*head)[i]);
  if (len > static_cast<uint64_t>(size) - 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": header length ", len, " exceeds the file (truncated or corrupt)"));
  }
  auto header = store_.ReadArtifactRange(uri_, shard, 8, static_cast<int64_t>(len), nullptr);
  if (!header.ok()) return header.status();
  bytes_read_ += static_cast<int64_t>(header->size());
  auto parsed = ParseSafetensorsHeader(*header, static_cast<uint64_t>(size) - 8 - len, where);
  if (!parsed.ok()) return parsed.status();
  for (TensorInfo& t : parsed->tensors) {
    if (tensors_.count(t.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": tensor \"", t.name, "\" is also in ", tensors_[t.name].shard));
    }
    const std::string name = t.name;
    tensors_[name] = Entry{shard, std::move(t), 8 + len};
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ArtifactTensorReader::Read(const std::string& name) {
  auto it = tensors_.find(name);
  if (it == tensors_.end())
    return absl::NotFoundError(absl::StrCat(uri_, ": no tensor \"", name, "\""));
  const Entry& e = it->second;
  auto bytes =
      store_.ReadArtifactRange(uri_, e.shard, static_cast<int64_t>(e.data_start + e.info.offset),
                               static_cast<int64_t>(e.info.nbytes), nullptr);
  if (!bytes.ok()) return bytes.status();
  bytes_read_ += static_cast<int64_t>(bytes->size());
  if (bytes->size() != e.info.nbytes) {
    return absl::DataLossError(absl::StrCat(uri_, "/", e.shard, ": tensor \"", name, "\": got ",
                                            bytes->size(), " bytes, expected ", e.info.nbytes));
  }
  return bytes;
}

absl::StatusOr<int> ArtifactTensorReader::WriteSubset(const std::vector<std::string>& prefixes,
                                                      const std::string& path) {
  SafetensorsWriter writer;
  for (const auto& [name, entry] : tensors_) {
    bool wanted = false;
    for (const std::string& p : prefixes) wanted = wanted || absl::StartsWith(name, p);
    if (!wanted) continue;
    auto bytes = Read(name);
    if (!bytes.ok()) return bytes.status();
    if (auto s = writer.Add(name, entry.info.dtype, entry.info.shape, bytes->data(), bytes->size());
        !s.ok())
      return s;
  }
  if (auto s = writer.WriteFile(path); !s.ok()) return s;
  return static_cast<int>(writer.size());
}

}  // namespace squeeze
