// The file:// backend: artifacts are directories; each gets a manifest, written last, and the
// directory is renamed into place, which is the commit point.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/base/file_util.h"
#include "common/store/artifact_store.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

constexpr char kManifest[] = ".squeeze-manifest.json";

std::string UniqueSuffix() {
  static std::atomic<uint64_t> counter{0};
  return absl::StrCat(".partial-", ::getpid(), "-", counter++, "-",
                      std::chrono::steady_clock::now().time_since_epoch().count());
}

absl::Status FsError(absl::string_view what, const fs::path& p, const std::error_code& ec) {
  return absl::UnavailableError(absl::StrCat(what, " ", p.string(), ": ", ec.message()));
}

class FileArtifactStore : public ArtifactStore {
 public:
  absl::Status PutDirectory(const std::string& local_dir, const std::string& uri) override {
    const fs::path target = FilePathOfUri(uri);
    const fs::path staging = target.string() + UniqueSuffix();
    std::error_code ec;
    fs::create_directories(staging, ec);
    if (ec) return FsError("cannot create", staging, ec);
    nlohmann::json files = nlohmann::json::array();
    for (const auto& entry : fs::directory_iterator(local_dir, ec)) {
      if (!entry.is_regular_file()) continue;
      const std::string name = entry.path().filename().string();
      if (name == kManifest) continue;
      fs::copy_file(entry.path(), staging / name, fs::copy_options::overwrite_existing, ec);
      if (ec) {
        RemoveTree(staging).IgnoreError();
        return FsError("cannot copy", entry.path(), ec);
      }
      files.push_back({{"name", name}, {"size", entry.file_size()}});
    }
    if (ec) return FsError("cannot list", local_dir, ec);
    {
      std::ofstream out(staging / kManifest);
      out << nlohmann::json{{"files", files}}.dump(2) << "\n";
      if (!out.good())
        return absl::UnavailableError(absl::StrCat("cannot write manifest in ", staging.string()));
    }
    RemoveTree(target).IgnoreError();
    fs::rename(staging, target, ec);
    if (ec) return FsError("cannot commit", target, ec);
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> LocalDirectory(const std::string& uri, const std::string&) override {
    const fs::path p = FilePathOfUri(uri);
    if (!fs::is_directory(p)) return absl::NotFoundError(absl::StrCat(uri, ": no such artifact"));
    return p.string();
  }

  absl::StatusOr<bool> Exists(const std::string& uri) override {
    const fs::path p = FilePathOfUri(uri);
    return fs::exists(p / kManifest) || (fs::is_directory(p) && !fs::is_empty(p)) ||
           fs::is_regular_file(p);
  }

  absl::Status PutFile(const std::string& uri, absl::string_view contents) override {
    const fs::path p = FilePathOfUri(uri);
    std::error_code ec;
    fs::create_directories(p.parent_path(), ec);
    const fs::path tmp = p.string() + UniqueSuffix();
    {
      std::ofstream out(tmp, std::ios::binary);
      out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
      if (!out.good()) return absl::UnavailableError(absl::StrCat("cannot write ", tmp.string()));
    }
    fs::rename(tmp, p, ec);
    if (ec) return FsError("cannot commit", p, ec);
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> ReadFile(const std::string& uri) override {
    std::ifstream in(FilePathOfUri(uri), std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat(uri, ": no such object"));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  absl::Status Delete(const std::string& uri) override { return RemoveTree(FilePathOfUri(uri)); }

  absl::StatusOr<std::string> ReadArtifactRange(const std::string& uri, const std::string& name,
                                                int64_t offset, int64_t length,
                                                int64_t* file_size) override {
    const fs::path p = fs::path(FilePathOfUri(uri)) / name;
    std::ifstream in(p, std::ios::binary);
    if (!in) return absl::NotFoundError(absl::StrCat(p.string(), ": cannot open"));
    in.seekg(0, std::ios::end);
    const int64_t size = in.tellg();
    if (file_size) *file_size = size;
    if (offset > size)
      return absl::OutOfRangeError(absl::StrCat(p.string(), ": offset ", offset, " past the end"));
    const int64_t n = length < 0 ? size - offset : std::min(length, size - offset);
    std::string out(static_cast<size_t>(n), '\0');
    in.seekg(offset);
    in.read(out.data(), n);
    return out;
  }
};

}  // namespace

std::string FilePathOfUri(absl::string_view uri) {
  if (uri.substr(0, 7) == "file://") return std::string(uri.substr(7));
  return std::string(uri);
}

namespace {

// Sends each URI to the backend of its scheme: file:// always, s3:// when the root is in S3.
class RoutingArtifactStore : public ArtifactStore {
 public:
  explicit RoutingArtifactStore(std::unique_ptr<ArtifactStore> s3) : s3_(std::move(s3)) {}
  absl::Status PutDirectory(const std::string& local_dir, const std::string& uri) override {
    auto b = For(uri);
    return b.ok() ? (*b)->PutDirectory(local_dir, uri) : b.status();
  }
  absl::StatusOr<std::string> LocalDirectory(const std::string& uri,
                                             const std::string& scratch) override {
    auto b = For(uri);
    if (!b.ok()) return b.status();
    return (*b)->LocalDirectory(uri, scratch);
  }
  absl::StatusOr<bool> Exists(const std::string& uri) override {
    auto b = For(uri);
    if (!b.ok()) return b.status();
    return (*b)->Exists(uri);
  }
  absl::Status PutFile(const std::string& uri, absl::string_view contents) override {
    auto b = For(uri);
    return b.ok() ? (*b)->PutFile(uri, contents) : b.status();
  }
  absl::StatusOr<std::string> ReadFile(const std::string& uri) override {
    auto b = For(uri);
    if (!b.ok()) return b.status();
    return (*b)->ReadFile(uri);
  }
  absl::Status Delete(const std::string& uri) override {
    auto b = For(uri);
    return b.ok() ? (*b)->Delete(uri) : b.status();
  }
  absl::StatusOr<GcReport> CollectGarbage(int64_t grace_seconds) override {
    // Only the S3 backend stores blobs by digest; file:// artifacts are whole directories.
    return s3_ ? s3_->CollectGarbage(grace_seconds) : GcReport{};
  }
  absl::StatusOr<std::string> ReadArtifactRange(const std::string& uri, const std::string& name,
                                                int64_t offset, int64_t length,
                                                int64_t* file_size) override {
    auto b = For(uri);
    if (!b.ok()) return b.status();
    return (*b)->ReadArtifactRange(uri, name, offset, length, file_size);
  }

 private:
  absl::StatusOr<ArtifactStore*> For(const std::string& uri) {
    if (uri.rfind("s3://", 0) == 0) {
      if (s3_ == nullptr) {
        return absl::FailedPreconditionError(
            absl::StrCat(uri, ": this store has no S3 backend (its root is a file:// URI)"));
      }
      return s3_.get();
    }
    if (uri.rfind("file://", 0) == 0 || uri.find("://") == std::string::npos) return &file_;
    return absl::InvalidArgumentError(
        absl::StrCat("\"", uri, "\": unsupported scheme (expected file:// or s3://)"));
  }

  FileArtifactStore file_;
  std::unique_ptr<ArtifactStore> s3_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ArtifactStore>> OpenArtifactStore(absl::string_view root_uri) {
  std::unique_ptr<ArtifactStore> s3;
  if (root_uri.substr(0, 5) == "s3://") {
    auto opened = OpenS3ArtifactStore(root_uri);
    if (!opened.ok()) return opened.status();
    s3 = *std::move(opened);
  } else if (root_uri.substr(0, 7) != "file://" &&
             root_uri.find("://") != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("store \"", root_uri, "\": unsupported scheme (expected file:// or s3://)"));
  }
  return std::unique_ptr<ArtifactStore>(new RoutingArtifactStore(std::move(s3)));
}

}  // namespace squeeze
