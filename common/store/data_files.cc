#include "common/store/data_files.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/base/file_util.h"
#include "common/base/parallel_for.h"
#include "common/base/sha256.h"
#include "common/store/blob_digest.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

bool IsLocalFile(const std::string& uri) {
  if (absl::StartsWith(uri, "s3://")) return false;
  struct stat st;
  return ::stat(FilePathOfUri(uri).c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// "ARTIFACT/name" -> {ARTIFACT, name}.
absl::StatusOr<std::pair<std::string, std::string>> SplitArtifactFile(const std::string& uri,
                                                                      const std::string& field) {
  const size_t slash = uri.rfind('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == uri.size())
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": \"", uri, "\" is neither a local file nor ARTIFACT/FILE"));
  return std::make_pair(uri.substr(0, slash), uri.substr(slash + 1));
}

// InvalidArgument naming `field` for URIs of schemes the store does not read.
absl::Status CheckScheme(const std::string& uri, const std::string& field) {
  if (uri.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  if (uri.find("://") == std::string::npos || absl::StartsWith(uri, "file://") ||
      absl::StartsWith(uri, "s3://"))
    return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": \"", uri, "\": expected a local path, a file:// URI or an s3:// URI"));
}

}  // namespace

absl::StatusOr<std::string> UploadDataFile(ArtifactStore& store, const std::string& store_root,
                                           const std::string& path, const std::string& field) {
  if (!IsLocalFile(path))
    return absl::NotFoundError(absl::StrCat(field, ": \"", path, "\" is not a readable file"));
  auto digest = DigestFile(FilePathOfUri(path), TransferThreads());
  if (!digest.ok())
    return absl::Status(digest.status().code(),
                        absl::StrCat(field, ": ", digest.status().message()));
  const std::string name = fs::path(FilePathOfUri(path)).filename().string();
  // "sha256:<hex>" -> data/sha256-<hex>: one artifact per content, shared by every job using it.
  std::string root = store_root;
  while (!root.empty() && root.back() == '/') root.pop_back();
  const std::string artifact =
      absl::StrCat(root, "/data/", absl::StrReplaceAll(digest->text, {{":", "-"}}));
  const std::string uri = absl::StrCat(artifact, "/", name);
  // Already uploaded (by an earlier job) with this very name: nothing to move.
  if (auto files = store.Files(artifact); files.ok()) {
    for (const StoredFile& f : *files) {
      if (f.name == name && f.digest == digest->text) return uri;
    }
  }
  auto stored = store.PutFileBlob(artifact, name, FilePathOfUri(path), /*consume=*/false);
  if (!stored.ok())
    return absl::Status(stored.status().code(),
                        absl::StrCat(field, ": uploading ", path, ": ", stored.status().message()));
  if (stored->digest != digest->text)
    return absl::DataLossError(absl::StrCat(field, ": ", path, " changed while it was uploaded"));
  ArtifactProvenance provenance;
  provenance.stage = "upload";
  if (auto s = store.PutManifest(artifact, {*stored}, provenance); !s.ok())
    return absl::Status(s.code(), absl::StrCat(field, ": uploading ", path, ": ", s.message()));
  return uri;
}

absl::StatusOr<std::string> UploadModelDirectory(ArtifactStore& store,
                                                 const std::string& store_root,
                                                 const std::string& path,
                                                 const std::string& field) {
  const std::string dir = FilePathOfUri(path);
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return absl::NotFoundError(absl::StrCat(field, ": \"", path, "\" is not a directory"));
  // What PutDirectory stores: the regular files not starting with '.'.
  std::vector<std::string> entries;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file(ec) || name.empty() || name[0] == '.') continue;
    const auto mtime = e.last_write_time(ec).time_since_epoch().count();
    entries.push_back(absl::StrCat(name, "\n", e.file_size(ec), "\n", mtime, "\n"));
  }
  if (ec)
    return absl::UnavailableError(absl::StrCat(field, ": cannot list ", path, ": ", ec.message()));
  std::sort(entries.begin(), entries.end());
  std::string root = store_root;
  while (!root.empty() && root.back() == '/') root.pop_back();
  const std::string uri = absl::StrCat(root, "/models/", fs::path(dir).filename().string(), "-",
                                       Sha256Hex(absl::StrJoin(entries, "")).substr(0, 16));
  if (auto exists = store.Exists(uri); exists.ok() && *exists) return uri;
  ArtifactProvenance provenance;
  provenance.stage = "upload";
  provenance.sources["directory"] = "file://" + fs::absolute(dir).lexically_normal().string();
  if (auto s = store.PutDirectory(dir, uri, provenance); !s.ok())
    return absl::Status(s.code(), absl::StrCat(field, ": uploading ", path, ": ", s.message()));
  return uri;
}

absl::StatusOr<std::string> PlaceDataFile(ArtifactStore& store, const std::string& uri,
                                          const std::string& scratch_dir,
                                          const std::string& field) {
  if (auto s = CheckScheme(uri, field); !s.ok()) return s;
  if (IsLocalFile(uri)) return FilePathOfUri(uri);
  auto parts = SplitArtifactFile(uri, field);
  if (!parts.ok()) return parts.status();
  const auto& [artifact, name] = *parts;
  // One directory per data URI, so files of the same name from different artifacts never meet.
  const fs::path dir = fs::path(scratch_dir) / "data" / Sha256Hex(uri);
  std::error_code ec;
  fs::create_directories(dir, ec);
  const std::string local = (dir / name).string();
  if (auto s = store.FetchFile(artifact, name, local); !s.ok())
    return absl::Status(s.code(), absl::StrCat(field, ": ", s.message()));
  return local;
}

absl::Status CheckDataFile(ArtifactStore& store, const std::string& uri, const std::string& field) {
  if (auto s = CheckScheme(uri, field); !s.ok()) return s;
  if (IsLocalFile(uri)) return absl::OkStatus();
  const bool local = !absl::StartsWith(uri, "s3://");
  auto parts = SplitArtifactFile(uri, field);
  if (parts.ok()) {
    auto files = store.Files(parts->first);
    if (files.ok()) {
      for (const StoredFile& f : *files) {
        if (f.name == parts->second) return absl::OkStatus();
      }
      return absl::NotFoundError(absl::StrCat(field, ": the artifact ", parts->first,
                                              " has no file \"", parts->second, "\""));
    }
    if (!local)
      return absl::Status(files.status().code(),
                          absl::StrCat(field, ": ", files.status().message()));
  }
  if (local) {
    // Not a file of an artifact: say what is wrong with it as a local file (missing, a
    // directory, a FIFO that would block a worker).
    absl::Status s = CheckRegularFile(FilePathOfUri(uri));
    if (s.ok()) return s;
    return absl::Status(s.code(), absl::StrCat(field, ": ", s.message()));
  }
  return parts.status();
}

}  // namespace squeeze
