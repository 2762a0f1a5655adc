// The s3:// backend: files of an artifact are stored once, under their SHA-256
// (ROOT/blobs/sha256/ab/<digest>), uploads of an existing digest are skipped, and the artifact is
// its manifest (URI/manifest.json: name -> digest, size), written last: a crash before it leaves
// only unreferenced blobs. Reads verify every blob's digest.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/file_util.h"
#include "common/base/sha256.h"
#include "common/store/artifact_store.h"
#include "common/store/s3_client.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr char kManifest[] = "manifest.json";

struct S3Location {
  std::string bucket, key;
};

absl::StatusOr<S3Location> ParseS3Uri(absl::string_view uri) {
  if (uri.substr(0, 5) != "s3://")
    return absl::InvalidArgumentError(absl::StrCat("\"", uri, "\": not an s3:// URI"));
  const absl::string_view rest = uri.substr(5);
  const size_t slash = rest.find('/');
  S3Location loc;
  loc.bucket = std::string(rest.substr(0, slash));
  loc.key = slash == absl::string_view::npos ? "" : std::string(rest.substr(slash + 1));
  while (!loc.key.empty() && loc.key.back() == '/') loc.key.pop_back();
  if (loc.bucket.empty())
    return absl::InvalidArgumentError(absl::StrCat("\"", uri, "\": no bucket"));
  return loc;
}

std::string Join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "/" + name;
}

// A read-only memory map of a file, so that large files upload without being read into memory.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path) {
    auto m = std::unique_ptr<MappedFile>(new MappedFile());
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
    struct stat st;
    ::fstat(fd, &st);
    m->size_ = static_cast<size_t>(st.st_size);
    if (m->size_ > 0) {
      void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        return absl::UnavailableError(absl::StrCat(path, ": cannot mmap"));
      }
      m->data_ = static_cast<const char*>(p);
    }
    ::close(fd);
    return m;
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<char*>(data_), size_);
  }
  absl::string_view view() const { return absl::string_view(data_ ? data_ : "", size_); }

 private:
  MappedFile() = default;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

class S3ArtifactStore : public ArtifactStore {
 public:
  S3ArtifactStore(S3Options options, S3Location root)
      : client_(std::move(options)), root_(std::move(root)) {}

  absl::Status PutDirectory(const std::string& local_dir, const std::string& uri) override {
    auto target = ParseS3Uri(uri);
    if (!target.ok()) return target.status();
    json files = json::array();
    std::error_code ec;
    std::vector<fs::path> paths;
    for (const auto& e : fs::directory_iterator(local_dir, ec)) {
      if (e.is_regular_file() && e.path().filename().string()[0] != '.') paths.push_back(e.path());
    }
    if (ec) return absl::NotFoundError(absl::StrCat(local_dir, ": ", ec.message()));
    std::sort(paths.begin(), paths.end());
    for (const fs::path& p : paths) {
      auto file = MappedFile::Open(p.string());
      if (!file.ok()) return file.status();
      const std::string digest = Sha256Hex((*file)->view());
      const std::string blob = BlobKey(digest);
      // Content addressing: a blob that is already there is not uploaded again.
      if (!client_.HeadObject(root_.bucket, blob).ok()) {
        const absl::Status put =
            (*file)->view().size() > static_cast<size_t>(kMultipartThreshold)
                ? client_.PutObjectMultipart(root_.bucket, blob, (*file)->view())
                : client_.PutObject(root_.bucket, blob, (*file)->view());
        if (!put.ok()) return put;
      }
      files.push_back({{"name", p.filename().string()},
                       {"digest", "sha256:" + digest},
                       {"size", (*file)->view().size()},
                       {"media_type", MediaType(p.filename().string())}});
    }
    // The manifest is the commit point.
    json manifest = {
        {"files", files},
        {"blob_root", absl::StrCat("s3://", root_.bucket, "/", Join(root_.key, "blobs/sha256"))}};
    return client_.PutObject(target->bucket, Join(target->key, kManifest), manifest.dump(2) + "\n");
  }

  absl::StatusOr<std::string> LocalDirectory(const std::string& uri,
                                             const std::string& scratch) override {
    auto manifest = ReadManifest(uri);
    if (!manifest.ok()) return manifest.status();
    RemoveTree(scratch).IgnoreError();
    fs::create_directories(scratch);
    for (const json& f : manifest->files) {
      const std::string name = f.value("name", "");
      const std::string digest = f.value("digest", "").substr(7);
      if (name.empty() || name.find('/') != std::string::npos || digest.size() != 64) {
        return absl::DataLossError(absl::StrCat(uri, "/", kManifest, ": malformed entry"));
      }
      auto bytes = client_.GetObject(manifest->blobs.bucket, manifest->BlobKey(digest));
      if (!bytes.ok()) {
        return absl::Status(bytes.status().code(),
                            absl::StrCat(uri, ": file \"", name, "\" (blob sha256:", digest,
                                         "): ", bytes.status().message()));
      }
      // Never hand out bytes that are not what the manifest promised.
      if (Sha256Hex(*bytes) != digest) {
        return absl::DataLossError(
            absl::StrCat(uri, ": blob sha256:", digest, " for \"", name,
                         "\" does not match its digest (corrupted in the store)"));
      }
      std::ofstream out(fs::path(scratch) / name, std::ios::binary);
      out.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
      if (!out.good())
        return absl::UnavailableError(absl::StrCat("cannot write ", scratch, "/", name));
    }
    return scratch;
  }

  absl::StatusOr<bool> Exists(const std::string& uri) override {
    auto target = ParseS3Uri(uri);
    if (!target.ok()) return target.status();
    if (client_.HeadObject(target->bucket, Join(target->key, kManifest)).ok()) return true;
    auto head = client_.HeadObject(target->bucket, target->key);
    if (head.ok()) return true;
    if (head.status().code() == absl::StatusCode::kNotFound) return false;
    return head.status();
  }

  absl::Status PutFile(const std::string& uri, absl::string_view contents) override {
    auto target = ParseS3Uri(uri);
    if (!target.ok()) return target.status();
    return client_.PutObject(target->bucket, target->key, contents);
  }

  absl::StatusOr<std::string> ReadFile(const std::string& uri) override {
    auto target = ParseS3Uri(uri);
    if (!target.ok()) return target.status();
    return client_.GetObject(target->bucket, target->key);
  }

  absl::StatusOr<std::string> ReadArtifactRange(const std::string& uri, const std::string& name,
                                                int64_t offset, int64_t length,
                                                int64_t* file_size) override {
    auto manifest = ReadManifest(uri);
    if (!manifest.ok()) return manifest.status();
    for (const json& f : manifest->files) {
      if (f.value("name", "") != name) continue;
      const std::string digest = f.value("digest", "").substr(7);
      if (file_size) *file_size = f.value("size", int64_t{0});
      // A range cannot be checked against the whole file's digest; readers of ranges validate
      // what they read (a safetensors header is validated against the file size).
      return client_.GetObject(manifest->blobs.bucket, manifest->BlobKey(digest), offset, length);
    }
    return absl::NotFoundError(absl::StrCat(uri, ": the artifact has no file \"", name, "\""));
  }

  absl::StatusOr<GcReport> CollectGarbage(int64_t grace_seconds) override {
    auto objects = client_.List(root_.bucket, root_.key);
    if (!objects.ok()) return objects.status();
    const std::string blob_prefix = Join(root_.key, "blobs/sha256/");
    std::set<std::string> referenced;
    std::vector<const S3ObjectInfo*> blobs;
    for (const S3ObjectInfo& o : *objects) {
      if (o.key.rfind(blob_prefix, 0) == 0) {
        blobs.push_back(&o);
      } else if (absl::EndsWith(o.key, kManifest)) {
        auto text = client_.GetObject(root_.bucket, o.key);
        if (!text.ok()) return text.status();
        const json manifest = json::parse(*text, nullptr, false);
        if (manifest.is_discarded() || !manifest.contains("files")) continue;
        for (const json& f : manifest["files"]) referenced.insert(f.value("digest", "").substr(7));
      }
    }
    const std::time_t now = std::time(nullptr);
    GcReport report;
    for (const S3ObjectInfo* b : blobs) {
      const std::string digest = b->key.substr(b->key.rfind('/') + 1);
      std::tm tm{};
      const bool dated = strptime(b->last_modified.c_str(), "%Y-%m-%dT%H:%M:%S", &tm) != nullptr;
      const int64_t age = dated ? static_cast<int64_t>(now - timegm(&tm)) : 0;
      if (referenced.count(digest) || age < grace_seconds) {
        ++report.blobs_kept;
        continue;
      }
      if (auto s = client_.DeleteObject(root_.bucket, b->key); !s.ok()) return s;
      ++report.blobs_deleted;
      report.bytes_deleted += b->size;
    }
    return report;
  }

  absl::Status Delete(const std::string& uri) override {
    auto target = ParseS3Uri(uri);
    if (!target.ok()) return target.status();
    // The artifact's objects (its manifest, or a tree of them); blobs stay until garbage
    // collection.
    auto objects = client_.List(target->bucket, target->key);
    if (!objects.ok()) return objects.status();
    for (const S3ObjectInfo& o : *objects) {
      if (o.key != target->key && o.key.rfind(target->key + "/", 0) != 0) continue;
      if (auto s = client_.DeleteObject(target->bucket, o.key); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  static constexpr int64_t kMultipartThreshold = 64ll << 20;

  struct Manifest {
    json files;
    S3Location blobs;  // where the blobs are: the manifest says, so any store reads any artifact
    std::string BlobKey(const std::string& digest) const {
      return Join(blobs.key, absl::StrCat(digest.substr(0, 2), "/", digest));
    }
  };
  absl::StatusOr<Manifest> ReadManifest(const std::string& uri) {
    auto target = ParseS3Uri(uri);
    if (!target.ok()) return target.status();
    auto text = client_.GetObject(target->bucket, Join(target->key, kManifest));
    if (!text.ok()) return text.status();
    const json manifest = json::parse(*text, nullptr, false);
    if (manifest.is_discarded() || !manifest.contains("files")) {
      return absl::DataLossError(absl::StrCat(uri, "/", kManifest, ": not a manifest"));
    }
    Manifest m{manifest["files"], {root_.bucket, Join(root_.key, "blobs/sha256")}};
    if (manifest.contains("blob_root")) {
      auto where = ParseS3Uri(manifest["blob_root"].get<std::string>());
      if (!where.ok())
        return absl::DataLossError(
            absl::StrCat(uri, "/", kManifest, ": ", where.status().message()));
      m.blobs = *where;
    }
    return m;
  }

  std::string BlobKey(const std::string& digest) const {
    return Join(root_.key, absl::StrCat("blobs/sha256/", digest.substr(0, 2), "/", digest));
  }
  static std::string MediaType(const std::string& name) {
    if (name.size() > 5 && name.substr(name.size() - 5) == ".json") return "application/json";
    if (name.find(".safetensors") != std::string::npos) return "application/vnd.safetensors";
    return "application/octet-stream";
  }

  S3Client client_;
  S3Location root_;
};

bool EnvFlag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::string(v) != "0" && std::string(v) != "false";
}

}  // namespace

absl::StatusOr<std::unique_ptr<ArtifactStore>> OpenS3ArtifactStore(absl::string_view root_uri) {
  auto root = ParseS3Uri(root_uri);
  if (!root.ok()) return root.status();
  S3Options o;
  const char* region = std::getenv("AWS_REGION");
  if (region == nullptr) region = std::getenv("AWS_DEFAULT_REGION");
  if (region != nullptr && *region) o.region = region;
  const char* endpoint = std::getenv("SQUEEZE_S3_ENDPOINT");
  o.endpoint =
      endpoint && *endpoint ? endpoint : absl::StrCat("https://s3.", o.region, ".amazonaws.com");
  o.path_style = EnvFlag("SQUEEZE_S3_PATH_STYLE", endpoint != nullptr);
  o.verify_tls = EnvFlag("SQUEEZE_S3_VERIFY_TLS", true);
  const char* file = std::getenv("SQUEEZE_S3_CREDENTIALS_FILE");
  auto credentials = CredentialsFromEnvironment(file ? file : "");
  if (!credentials.ok()) return credentials.status();
  o.credentials = *credentials;
  return std::unique_ptr<ArtifactStore>(new S3ArtifactStore(std::move(o), *std::move(root)));
}

}  // namespace squeeze
