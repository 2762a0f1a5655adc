// The one ArtifactStore: manifests over content-addressed blobs, on whichever ObjectBackend a
// URI's scheme names.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/file_util.h"
#include "common/base/sha256.h"
#include "common/base/version.h"
#include "common/store/artifact_store.h"
#include "common/store/object_backend.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr char kManifest[] = "manifest.json";
constexpr char kSchema[] = "squeeze.artifact.v1";

std::string TrimSlashes(std::string uri) {
  while (!uri.empty() && uri.back() == '/' && !absl::EndsWith(uri, "://")) uri.pop_back();
  return uri;
}

std::string MediaType(const std::string& name) {
  if (absl::EndsWith(name, ".json")) return "application/json";
  if (absl::StrContains(name, ".safetensors")) return "application/vnd.safetensors";
  if (absl::EndsWith(name, ".html")) return "text/html";
  if (absl::EndsWith(name, ".model")) return "application/vnd.sentencepiece";
  return "application/octet-stream";
}

bool IsS3(absl::string_view uri) { return uri.substr(0, 5) == "s3://"; }

struct Manifest {
  json files;
  std::string blob_root;
};

class ContentAddressedStore : public ArtifactStore {
 public:
  ContentAddressedStore(std::string root, const StoreOptions& options)
      : root_(TrimSlashes(std::move(root))),
        file_(NewFileObjectBackend(options.sync_file_writes)) {}

  absl::Status PutDirectory(const std::string& local_dir, const std::string& uri,
                            const ArtifactProvenance& provenance) override {
    auto backend = For(uri);
    if (!backend.ok()) return backend.status();
    const std::string target = TrimSlashes(uri);
    std::error_code ec;
    std::vector<fs::path> paths;
    for (const auto& e : fs::directory_iterator(local_dir, ec)) {
      if (e.is_regular_file() && e.path().filename().string()[0] != '.') paths.push_back(e.path());
    }
    if (ec) return absl::NotFoundError(absl::StrCat(local_dir, ": ", ec.message()));
    std::sort(paths.begin(), paths.end());
    // Blobs go to the store's root in the artifact's own backend.
    std::string blob_root = BlobRootFor(target);
    auto blobs = For(blob_root);
    if (!blobs.ok()) return blobs.status();
    json files = json::array();
    for (const fs::path& p : paths) {
      auto digest = (*blobs)->PutBlob(blob_root, p.string());
      if (!digest.ok()) {
        return absl::Status(
            digest.status().code(),
            absl::StrCat("storing ", p.string(), " in ", uri, ": ", digest.status().message()));
      }
      files.push_back({{"name", p.filename().string()},
                       {"digest", "sha256:" + *digest},
                       {"size", static_cast<int64_t>(fs::file_size(p))},
                       {"media_type", MediaType(p.filename().string())}});
    }
    json sources = json::array();
    for (const auto& [name, source] : provenance.sources) {
      json entry = {{"name", name}, {"uri", source}};
      // A source that is itself an artifact is pinned by its manifest's digest.
      if (auto text = ReadManifestText(source); text.ok()) {
        entry["digest"] = "sha256:" + Sha256Hex(*text);
      }
      sources.push_back(std::move(entry));
    }
    json origin = {{"code_version", CodeVersion()},
                   {"created_unix_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count()},
                   {"sources", sources}};
    if (!provenance.job_id.empty()) origin["job_id"] = provenance.job_id;
    if (!provenance.stage.empty()) origin["stage"] = provenance.stage;
    if (!provenance.stage_spec.empty()) {
      json spec = json::parse(provenance.stage_spec, nullptr, false);
      origin["stage_spec"] = spec.is_discarded() ? json(provenance.stage_spec) : spec;
    }
    const json manifest = {
        {"schema", kSchema}, {"files", files}, {"blob_root", blob_root}, {"provenance", origin}};
    // The commit point: until this object exists, the artifact does not.
    return (*backend)->Put(ManifestUri(target), manifest.dump(2) + "\n");
  }

  absl::StatusOr<std::string> LocalDirectory(const std::string& uri,
                                             const std::string& scratch) override {
    auto manifest = ReadManifest(uri);
    if (!manifest.ok()) {
      // A plain directory given by path (a user's model) is read in place.
      if (manifest.status().code() == absl::StatusCode::kNotFound && !IsS3(uri) &&
          fs::is_directory(FilePathOfUri(uri))) {
        return FilePathOfUri(uri);
      }
      return manifest.status();
    }
    if (scratch.empty())
      return absl::InvalidArgumentError(absl::StrCat(uri, ": no scratch directory to read into"));
    auto blobs = For(manifest->blob_root);
    if (!blobs.ok()) return blobs.status();
    RemoveTree(scratch).IgnoreError();
    std::error_code ec;
    fs::create_directories(scratch, ec);
    if (ec)
      return absl::UnavailableError(absl::StrCat("cannot create ", scratch, ": ", ec.message()));
    for (const json& f : manifest->files) {
      if (auto st = PlaceFile(uri, *manifest, **blobs, f,
                              (fs::path(scratch) / f.value("name", "")).string());
          !st.ok())
        return st;
    }
    return scratch;
  }

  absl::Status FetchFile(const std::string& uri, const std::string& name,
                         const std::string& local_path) override {
    auto manifest = ReadManifest(uri);
    if (!manifest.ok()) return manifest.status();
    auto blobs = For(manifest->blob_root);
    if (!blobs.ok()) return blobs.status();
    for (const json& f : manifest->files) {
      if (f.value("name", "") == name) return PlaceFile(uri, *manifest, **blobs, f, local_path);
    }
    return absl::NotFoundError(absl::StrCat(uri, ": the artifact has no file \"", name, "\""));
  }

  absl::StatusOr<bool> Exists(const std::string& uri) override {
    auto backend = For(uri);
    if (!backend.ok()) return backend.status();
    auto manifest = (*backend)->Head(ManifestUri(uri));
    if (manifest.ok()) return true;
    if (manifest.status().code() != absl::StatusCode::kNotFound) return manifest.status();
    if (!IsS3(uri)) {
      const fs::path p = FilePathOfUri(uri);
      std::error_code ec;
      return (fs::is_directory(p, ec) && !fs::is_empty(p, ec)) || fs::is_regular_file(p, ec);
    }
    auto object = (*backend)->Head(uri);
    if (object.ok()) return true;
    if (object.status().code() == absl::StatusCode::kNotFound) return false;
    return object.status();
  }

  absl::Status PutFile(const std::string& uri, absl::string_view contents) override {
    auto backend = For(uri);
    return backend.ok() ? (*backend)->Put(uri, contents) : backend.status();
  }

  absl::StatusOr<std::string> ReadFile(const std::string& uri) override {
    auto backend = For(uri);
    if (!backend.ok()) return backend.status();
    auto bytes = (*backend)->Get(uri, 0, -1);
    if (!bytes.ok() && bytes.status().code() == absl::StatusCode::kNotFound)
      return absl::NotFoundError(absl::StrCat(uri, ": no such object"));
    return bytes;
  }

  absl::Status Delete(const std::string& uri) override {
    auto backend = For(uri);
    if (!backend.ok()) return backend.status();
    // The manifest first: from then on the artifact is gone, whatever else remains. Its blobs
    // stay until garbage collection (other artifacts may share them).
    const std::string target = TrimSlashes(uri);
    absl::Status gone = (*backend)->Delete(ManifestUri(target));
    if (!gone.ok() && !absl::IsNotFound(gone)) return gone;
    auto objects = (*backend)->List(target + "/");
    if (!objects.ok()) return objects.status();
    for (const ObjectInfo& o : *objects) {
      if (auto s = (*backend)->Delete(o.uri); !s.ok() && !absl::IsNotFound(s)) return s;
    }
    auto self = (*backend)->Delete(target);
    return absl::IsNotFound(self) ? absl::OkStatus() : self;
  }

  absl::StatusOr<std::string> ReadArtifactRange(const std::string& uri, const std::string& name,
                                                int64_t offset, int64_t length,
                                                int64_t* file_size) override {
    auto manifest = ReadManifest(uri);
    if (manifest.ok()) {
      auto blobs = For(manifest->blob_root);
      if (!blobs.ok()) return blobs.status();
      for (const json& f : manifest->files) {
        if (f.value("name", "") != name) continue;
        const std::string digest = f.value("digest", "");
        if (digest.size() != 71)
          return absl::DataLossError(absl::StrCat(ManifestUri(uri), ": malformed digest"));
        if (file_size) *file_size = f.value("size", int64_t{0});
        // A range cannot be checked against the whole file's digest; readers of ranges validate
        // what they read (a safetensors header is validated against the file size).
        return (*blobs)->Get(BlobUri(manifest->blob_root, digest.substr(7)), offset, length);
      }
      return absl::NotFoundError(absl::StrCat(uri, ": the artifact has no file \"", name, "\""));
    }
    if (manifest.status().code() != absl::StatusCode::kNotFound) return manifest.status();
    // A plain directory of objects (a model given by path).
    auto backend = For(uri);
    if (!backend.ok()) return backend.status();
    const std::string object = absl::StrCat(TrimSlashes(uri), "/", name);
    if (file_size) {
      auto head = (*backend)->Head(object);
      if (!head.ok()) return head.status();
      *file_size = head->size;
    }
    return (*backend)->Get(object, offset, length);
  }

  absl::StatusOr<GcReport> CollectGarbage(int64_t grace_seconds) override {
    if (!HasRoot()) return absl::FailedPreconditionError("garbage collection needs a store root");
    auto backend = For(root_);
    if (!backend.ok()) return backend.status();
    auto objects = (*backend)->List(root_ + "/");
    if (!objects.ok()) return objects.status();
    const std::string blob_root = root_ + "/blobs/sha256";
    const std::string partial_prefix = blob_root + "/tmp/";
    std::set<std::string> referenced;
    std::vector<const ObjectInfo*> blobs;
    for (const ObjectInfo& o : *objects) {
      if (o.uri.rfind(blob_root + "/", 0) == 0) {
        blobs.push_back(&o);
      } else if (absl::EndsWith(o.uri, std::string("/") + kManifest)) {
        auto text = (*backend)->Get(o.uri, 0, -1);
        if (!text.ok()) return text.status();
        const json manifest = json::parse(*text, nullptr, false);
        if (manifest.is_discarded() || !manifest.contains("files")) continue;
        for (const json& f : manifest["files"]) {
          const std::string digest = f.value("digest", "");
          if (digest.size() == 71) referenced.insert(digest.substr(7));
        }
      }
    }
    GcReport report;
    for (const ObjectInfo* b : blobs) {
      const bool partial = b->uri.rfind(partial_prefix, 0) == 0;
      const std::string digest = b->uri.substr(b->uri.rfind('/') + 1);
      if ((!partial && referenced.count(digest)) || b->age_seconds < grace_seconds) {
        ++report.blobs_kept;
        continue;
      }
      if (auto s = (*backend)->Delete(b->uri); !s.ok() && !absl::IsNotFound(s)) return s;
      ++report.blobs_deleted;
      report.bytes_deleted += b->size;
    }
    auto aborted = (*backend)->AbortStaleUploads(blob_root + "/", grace_seconds);
    if (!aborted.ok()) return aborted.status();
    report.uploads_aborted = *aborted;
    return report;
  }

 private:
  static std::string ManifestUri(const std::string& uri) {
    return absl::StrCat(TrimSlashes(uri), "/", kManifest);
  }

  // The store's blob directory when `uri` is in the same backend as the root; otherwise (or with
  // no root) one inside the artifact, so that it stays self-contained.
  std::string BlobRootFor(const std::string& uri) const {
    if (HasRoot() && IsS3(root_) == IsS3(uri)) return root_ + "/blobs/sha256";
    return uri + "/.blobs/sha256";
  }
  // Opened on a real root, not the bare "file://" of a client that only reads.
  bool HasRoot() const { return IsS3(root_) || !FilePathOfUri(root_).empty(); }

  // Places the file of manifest entry `f` at `local`, verified against its digest; nothing is
  // left at `local` on failure.
  absl::Status PlaceFile(const std::string& uri, const Manifest& manifest, ObjectBackend& blobs,
                         const json& f, const std::string& local) {
    const std::string name = f.value("name", "");
    const std::string digest = f.value("digest", "");
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.' ||
        digest.size() != 71 || digest.substr(0, 7) != "sha256:") {
      return absl::DataLossError(
          absl::StrCat(ManifestUri(uri), ": malformed file entry ", f.dump()));
    }
    const std::string hex = digest.substr(7);
    const std::string blob = BlobUri(manifest.blob_root, hex);
    auto fetched = Fetch(blobs, blob, local);
    if (!fetched.ok()) {
      ::unlink(local.c_str());
      const bool missing = fetched.status().code() == absl::StatusCode::kNotFound;
      return absl::Status(missing ? absl::StatusCode::kDataLoss : fetched.status().code(),
                          absl::StrCat(uri, ": file \"", name, "\" (blob ", digest, ")",
                                       missing ? " is missing from the store: " : ": ",
                                       fetched.status().message()));
    }
    // Never hand out bytes that are not what the manifest promised.
    if (*fetched != hex) {
      ::unlink(local.c_str());
      return absl::DataLossError(absl::StrCat(
          uri, ": blob ", blob, " for \"", name,
          "\" does not match its digest (corrupted in the store; it hashes to sha256:", *fetched,
          ")"));
    }
    return absl::OkStatus();
  }

  // Places blob `blob` at `local` and returns the hex digest of what was placed.
  absl::StatusOr<std::string> Fetch(ObjectBackend& backend, const std::string& blob,
                                    const std::string& local) {
    Sha256 hash;
    absl::Status linked = backend.Link(blob, local);
    if (linked.ok()) {
      // Hash the linked file itself, so what is checked is what the reader will see.
      auto digest = Sha256File(local);
      if (!digest.ok()) return digest.status();
      return *digest;
    }
    if (linked.code() != absl::StatusCode::kUnimplemented) return linked;
    const std::string partial = local + ".partial";
    FILE* out = std::fopen(partial.c_str(), "wb");
    if (out == nullptr) return absl::UnavailableError(absl::StrCat("cannot create ", partial));
    absl::Status streamed = backend.GetTo(blob, [&](absl::string_view chunk) {
      hash.Update(chunk);
      if (std::fwrite(chunk.data(), 1, chunk.size(), out) != chunk.size())
        return absl::UnavailableError(absl::StrCat("cannot write ", partial));
      return absl::OkStatus();
    });
    if (std::fclose(out) != 0 && streamed.ok())
      streamed = absl::UnavailableError(absl::StrCat("cannot write ", partial));
    if (streamed.ok() && std::rename(partial.c_str(), local.c_str()) != 0)
      streamed = absl::UnavailableError(absl::StrCat("cannot rename ", partial));
    if (!streamed.ok()) {
      ::unlink(partial.c_str());
      return streamed;
    }
    return hash.HexDigest();
  }

  absl::StatusOr<std::string> ReadManifestText(const std::string& uri) {
    auto backend = For(uri);
    if (!backend.ok()) return backend.status();
    return (*backend)->Get(ManifestUri(uri), 0, -1);
  }

  absl::StatusOr<Manifest> ReadManifest(const std::string& uri) {
    auto text = ReadManifestText(uri);
    if (!text.ok()) {
      if (text.status().code() == absl::StatusCode::kNotFound)
        return absl::NotFoundError(absl::StrCat(uri, ": no such artifact (no ", kManifest, ")"));
      return text.status();
    }
    const json manifest = json::parse(*text, nullptr, false);
    if (manifest.is_discarded() || !manifest.contains("files") || !manifest["files"].is_array() ||
        !manifest.contains("blob_root") || !manifest["blob_root"].is_string()) {
      return absl::DataLossError(absl::StrCat(ManifestUri(uri),
                                              ": not a manifest (expected \"files\" and "
                                              "\"blob_root\")"));
    }
    return Manifest{manifest["files"], manifest["blob_root"].get<std::string>()};
  }

  // The backend of `uri`'s scheme; S3 is opened on first use, so that a file:// store can still
  // read a model a recipe names in a bucket.
  absl::StatusOr<ObjectBackend*> For(const std::string& uri) {
    if (IsS3(uri)) {
      std::lock_guard<std::mutex> lock(mu_);
      if (s3_ == nullptr) {
        auto opened = NewS3ObjectBackend();
        if (!opened.ok()) return opened.status();
        s3_ = *std::move(opened);
      }
      return s3_.get();
    }
    if (uri.rfind("file://", 0) == 0 || uri.find("://") == std::string::npos) return file_.get();
    return absl::InvalidArgumentError(
        absl::StrCat("\"", uri, "\": unsupported scheme (expected file:// or s3://)"));
  }

  const std::string root_;
  const std::unique_ptr<ObjectBackend> file_;
  std::mutex mu_;
  std::unique_ptr<ObjectBackend> s3_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<ArtifactStore>> OpenArtifactStore(absl::string_view root_uri,
                                                                 const StoreOptions& options) {
  if (root_uri.substr(0, 5) == "s3://") {
    if (root_uri.size() == 5 || root_uri[5] == '/')
      return absl::InvalidArgumentError(absl::StrCat("store \"", root_uri, "\": no bucket"));
    auto backend = NewS3ObjectBackend();  // fail now, not on first use, on bad credentials
    if (!backend.ok()) return backend.status();
  } else if (root_uri.substr(0, 7) != "file://" &&
             root_uri.find("://") != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("store \"", root_uri, "\": unsupported scheme (expected file:// or s3://)"));
  }
  return std::unique_ptr<ArtifactStore>(new ContentAddressedStore(std::string(root_uri), options));
}

}  // namespace squeeze
