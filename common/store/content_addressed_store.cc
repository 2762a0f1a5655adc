// The one ArtifactStore: manifests over content-addressed blobs, on whichever ObjectBackend a
// URI's scheme names.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include "absl/synchronization/mutex.h"

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/file_util.h"
#include "common/base/parallel_for.h"
#include "common/base/sha256.h"
#include "common/base/version.h"
#include "common/store/artifact_store.h"
#include "common/store/blob_digest.h"
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

// A failed local write: a full disk is final (ResourceExhausted), anything else may pass.
absl::Status WriteError(const std::string& path) {
  const int e = errno;
  const std::string message = absl::StrCat("cannot write ", path, ": ", std::strerror(e));
  if (e == ENOSPC || e == EDQUOT)
    return absl::ResourceExhaustedError(absl::StrCat(message, " (the local disk is full)"));
  return absl::UnavailableError(message);
}

struct Manifest {
  json files;
  std::string blob_root;
};

// One file entry of a manifest; DataLoss naming the manifest when the entry is malformed (a
// manifest is read from storage, so it is untrusted input).
absl::StatusOr<StoredFile> FileEntry(const json& f, const std::string& manifest_uri) {
  auto malformed = [&] {
    return absl::DataLossError(
        absl::StrCat(manifest_uri, ": malformed file entry ", f.dump().substr(0, 200)));
  };
  if (!f.is_object() || !f.contains("name") || !f["name"].is_string() || !f.contains("digest") ||
      !f["digest"].is_string() || (f.contains("size") && !f["size"].is_number_integer()))
    return malformed();
  StoredFile out{f["name"].get<std::string>(),
                 f["digest"].get<std::string>(),
                 f.contains("size") ? f["size"].get<int64_t>() : 0,
                 {}};
  if (f.contains("chunks")) {
    if (!f["chunks"].is_array()) return malformed();
    for (const json& c : f["chunks"]) {
      if (!c.is_string()) return malformed();
      out.chunks.push_back(c.get<std::string>());
    }
  }
  return out;
}

class ContentAddressedStore : public ArtifactStore {
 public:
  ContentAddressedStore(std::string root, const StoreOptions& options)
      : root_(TrimSlashes(std::move(root))),
        file_(NewFileObjectBackend(options.sync_file_writes)) {}

  absl::Status PutDirectory(const std::string& local_dir, const std::string& uri,
                            const ArtifactProvenance& provenance,
                            const PutOptions& options) override {
    const std::string target = TrimSlashes(uri);
    std::error_code ec;
    std::vector<fs::path> paths;
    for (const auto& e : fs::directory_iterator(local_dir, ec)) {
      if (e.is_regular_file() && e.path().filename().string()[0] != '.') paths.push_back(e.path());
    }
    if (ec) return absl::NotFoundError(absl::StrCat(local_dir, ": ", ec.message()));
    std::sort(paths.begin(), paths.end());
    const std::string blob_root =
        options.private_blobs ? PrivateBlobRoot(target) : BlobRootFor(target);
    // Files hash and copy in parallel: one SHA-256 stream runs at about 2 GB/s a core, below
    // what a copy moves, so a model's shards each take a core.
    if (auto s = For(blob_root); !s.ok()) return s.status();
    std::vector<absl::StatusOr<StoredFile>> stored(paths.size(), absl::UnknownError("not stored"));
    ParallelFor(paths.size(), TransferThreads(), [&](size_t i) {
      stored[i] =
          StoreBlob(target, blob_root, paths[i].filename().string(), paths[i].string(), false);
    });
    std::vector<StoredFile> files;
    for (auto& f : stored) {
      if (!f.ok()) return f.status();
      files.push_back(*std::move(f));
    }
    return CommitManifest(target, blob_root, files, provenance);
  }

  absl::StatusOr<StoredFile> PutFileBlob(const std::string& uri, const std::string& name,
                                         const std::string& local_path, bool consume) override {
    const std::string target = TrimSlashes(uri);
    return StoreBlob(target, BlobRootFor(target), name, local_path, consume);
  }

  absl::Status PutManifest(const std::string& uri, const std::vector<StoredFile>& files,
                           const ArtifactProvenance& provenance) override {
    const std::string target = TrimSlashes(uri);
    return CommitManifest(target, BlobRootFor(target), files, provenance);
  }

  absl::StatusOr<std::vector<StoredFile>> Files(const std::string& uri) override {
    auto manifest = ReadManifest(uri);
    if (!manifest.ok()) return manifest.status();
    std::vector<StoredFile> out;
    for (const json& f : manifest->files) {
      auto entry = FileEntry(f, ManifestUri(uri));
      if (!entry.ok()) return entry.status();
      out.push_back(*std::move(entry));
    }
    return out;
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
    const std::vector<json> files(manifest->files.begin(), manifest->files.end());
    std::set<std::string> names;
    for (const json& f : files) {
      const std::string name = f.is_object() ? f.value("name", "") : "";
      if (!names.insert(name).second)
        return absl::DataLossError(absl::StrCat(ManifestUri(uri), ": names \"", name, "\" twice"));
    }
    std::vector<absl::Status> placed(files.size());
    ParallelFor(files.size(), TransferThreads(), [&](size_t i) {
      placed[i] = PlaceFile(uri, *manifest, **blobs, files[i],
                            (fs::path(scratch) / files[i].value("name", "")).string());
    });
    for (const absl::Status& st : placed) {
      if (!st.ok()) return st;
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
    if (!self.ok() && !absl::IsNotFound(self)) return self;
    // Its reference under the root, if it had one: from now on its blobs may be collected.
    if (HasRoot() && IsS3(root_) == IsS3(target) && !IsUnderRoot(target)) {
      auto ref = (*backend)->Delete(ManifestUri(ReferenceUri(target)));
      if (!ref.ok() && !absl::IsNotFound(ref)) return ref;
      (*backend)->Delete(ReferenceUri(target)).IgnoreError();
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> ReadArtifactRange(const std::string& uri, const std::string& name,
                                                int64_t offset, int64_t length,
                                                int64_t* file_size) override {
    auto manifest = ReadManifest(uri);
    if (manifest.ok()) {
      auto blobs = For(manifest->blob_root);
      if (!blobs.ok()) return blobs.status();
      for (const json& f : manifest->files) {
        auto entry = FileEntry(f, ManifestUri(uri));
        if (!entry.ok()) return entry.status();
        if (entry->name != name) continue;
        auto blob = BlobName(entry->digest);
        if (!blob.ok())
          return absl::DataLossError(absl::StrCat(ManifestUri(uri), ": ", blob.status().message()));
        if (file_size) *file_size = entry->size;
        return ReadVerifiedRange(**blobs, BlobUri(manifest->blob_root, *blob), uri, name,
                                 entry->digest, entry->size, entry->chunks, offset, length);
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
    // Phase 1: every listing and every manifest, before anything is deleted. Whatever fails here
    // fails the collection with the store untouched.
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
        if (!text.ok()) {
          if (absl::IsNotFound(text.status())) continue;  // deleted since the listing
          return absl::Status(text.status().code(),
                              absl::StrCat("garbage collection stopped before deleting anything: ",
                                           text.status().message()));
        }
        const json manifest = json::parse(*text, nullptr, false);
        if (manifest.is_discarded() || !manifest.contains("files") ||
            !manifest["files"].is_array()) {
          // Its blobs cannot be told apart from garbage; deleting them could lose the artifact.
          return absl::DataLossError(
              absl::StrCat(o.uri,
                           ": not a readable manifest; garbage collection stopped before deleting "
                           "anything (repair or delete this artifact first)"));
        }
        for (const json& f : manifest["files"]) {
          auto blob = BlobName(f.is_object() ? f.value("digest", "") : "");
          if (blob.ok()) referenced.insert(*blob);
        }
      }
    }
    GcReport report;
    std::vector<PartialUpload> stale;
    auto uploads = (*backend)->ListStaleUploads(blob_root + "/", grace_seconds);
    if (uploads.ok()) {
      stale = *std::move(uploads);
    } else if (absl::IsUnimplemented(uploads.status())) {
      report.uploads_not_listed = std::string(uploads.status().message());
    } else {
      return absl::Status(uploads.status().code(),
                          absl::StrCat("garbage collection stopped before deleting anything: ",
                                       uploads.status().message()));
    }
    // Phase 2: deletions.
    for (const ObjectInfo* b : blobs) {
      const bool partial = b->uri.rfind(partial_prefix, 0) == 0;
      const std::string blob = b->uri.substr(b->uri.rfind('/') + 1);
      if ((!partial && referenced.count(blob)) || b->age_seconds < grace_seconds) {
        ++report.blobs_kept;
        continue;
      }
      if (auto s = (*backend)->Delete(b->uri); !s.ok() && !absl::IsNotFound(s)) return s;
      ++report.blobs_deleted;
      report.bytes_deleted += b->size;
    }
    for (const PartialUpload& u : stale) {
      if (auto s = (*backend)->AbortUpload(u); !s.ok() && !absl::IsNotFound(s)) return s;
      ++report.uploads_aborted;
    }
    return report;
  }

 private:
  absl::StatusOr<StoredFile> StoreBlob(const std::string& target, const std::string& blob_root,
                                       const std::string& name, const std::string& path,
                                       bool consume) {
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.')
      return absl::InvalidArgumentError(absl::StrCat("\"", name, "\": not a file name"));
    auto blobs = For(blob_root);
    if (!blobs.ok()) return blobs.status();
    std::error_code ec;
    const int64_t size = static_cast<int64_t>(fs::file_size(path, ec));
    if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));
    auto digest =
        consume ? (*blobs)->MoveBlob(blob_root, path) : (*blobs)->PutBlob(blob_root, path);
    if (!digest.ok()) {
      return absl::Status(digest.status().code(), absl::StrCat("storing ", path, " in ", target,
                                                               ": ", digest.status().message()));
    }
    return StoredFile{name, digest->text, size, digest->chunks};
  }

  // Writes the manifest of `target` (and its reference under the root, when it needs one),
  // then frees the private blobs of the artifact it replaces that it no longer names.
  absl::Status CommitManifest(const std::string& target, const std::string& blob_root,
                              const std::vector<StoredFile>& stored,
                              const ArtifactProvenance& provenance) {
    auto backend = For(target);
    if (!backend.ok()) return backend.status();
    auto blobs = For(blob_root);
    if (!blobs.ok()) return blobs.status();
    // The blobs of the artifact this one replaces, freed below when nothing else names them.
    std::set<std::string> superseded;
    if (auto old = ReadManifest(target); old.ok() && old->blob_root == PrivateBlobRoot(target)) {
      for (const json& f : old->files) {
        if (auto blob = BlobName(f.value("digest", "")); blob.ok()) superseded.insert(*blob);
      }
    }
    json files = json::array();
    for (const StoredFile& f : stored) {
      json entry = {{"name", f.name},
                    {"digest", f.digest},
                    {"size", f.size},
                    {"media_type", MediaType(f.name)}};
      if (!f.chunks.empty()) entry["chunks"] = f.chunks;
      files.push_back(std::move(entry));
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
    const bool referenced = NeedsReference(target, blob_root);
    if (referenced) {
      const json reference = {
          {"schema", "squeeze.reference.v1"}, {"artifact", target}, {"files", files}};
      if (auto s = (*backend)->Put(ManifestUri(ReferenceUri(target)), reference.dump(2) + "\n");
          !s.ok())
        return s;
    }
    // The commit point: until this object exists, the artifact does not.
    if (auto s = (*backend)->Put(ManifestUri(target), manifest.dump(2) + "\n"); !s.ok()) {
      if (referenced) (*backend)->Delete(ManifestUri(ReferenceUri(target))).IgnoreError();
      return s;
    }
    // Private blobs belong to this artifact alone: those the new manifest no longer names go now.
    for (const StoredFile& f : stored) {
      if (auto blob = BlobName(f.digest); blob.ok()) superseded.erase(*blob);
    }
    for (const std::string& blob : superseded) {
      (*blobs)->Delete(BlobUri(PrivateBlobRoot(target), blob)).IgnoreError();  // GC-able anyway
    }
    return absl::OkStatus();
  }

  static std::string ManifestUri(const std::string& uri) {
    return absl::StrCat(TrimSlashes(uri), "/", kManifest);
  }

  // The store's blob pool when `uri` is in the root's backend; otherwise (or with no root) one
  // inside the artifact, so that it stays self-contained.
  std::string BlobRootFor(const std::string& uri) const {
    if (HasRoot() && IsS3(root_) == IsS3(uri)) return root_ + "/blobs/sha256";
    return PrivateBlobRoot(uri);
  }
  // Garbage collection reads only the manifests under the root. An artifact outside the root
  // whose blobs are in the root's pool is recorded under the root too, by a copy of its file list
  // at ROOT/refs/<sha256 of its URI>/manifest.json, written before its manifest and deleted with
  // it; without it, collection would take its blobs.
  std::string ReferenceUri(const std::string& target) const {
    return absl::StrCat(root_, "/refs/", Sha256Hex(target));
  }
  bool NeedsReference(const std::string& target, const std::string& blob_root) const {
    return HasRoot() && blob_root == root_ + "/blobs/sha256" && !IsUnderRoot(target);
  }
  static std::string PrivateBlobRoot(const std::string& uri) { return uri + "/.blobs/sha256"; }
  bool IsUnderRoot(const std::string& uri) const {
    if (IsS3(root_)) return absl::StartsWith(uri, root_ + "/");
    if (IsS3(uri)) return false;
    // file:// URIs and plain paths name the same files; compare paths, normalized.
    std::error_code ec;
    const fs::path root = fs::absolute(FilePathOfUri(root_), ec).lexically_normal();
    const fs::path path = fs::absolute(FilePathOfUri(uri), ec).lexically_normal();
    auto r = root.begin(), p = path.begin();
    for (; r != root.end() && p != path.end() && *r == *p; ++r, ++p) {
    }
    const bool root_consumed = r == root.end() || (r->empty() && std::next(r) == root.end());
    return root_consumed && p != path.end();
  }
  // Opened on a real root, not the bare "file://" of a client that only reads.
  bool HasRoot() const { return IsS3(root_) || !FilePathOfUri(root_).empty(); }

  // Places the file of manifest entry `f` at `local`, verified against its digest; nothing is
  // left at `local` on failure.
  absl::Status PlaceFile(const std::string& uri, const Manifest& manifest, ObjectBackend& blobs,
                         const json& f, const std::string& local) {
    const std::string name = f.value("name", "");
    const std::string digest = f.value("digest", "");
    auto blob_name = BlobName(digest);
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.' || !blob_name.ok()) {
      return absl::DataLossError(
          absl::StrCat(ManifestUri(uri), ": malformed file entry ", f.dump()));
    }
    const std::string blob = BlobUri(manifest.blob_root, *blob_name);
    auto fetched = Fetch(blobs, blob, local, digest);
    if (!fetched.ok()) {
      ::unlink(local.c_str());
      const bool missing = fetched.status().code() == absl::StatusCode::kNotFound;
      return absl::Status(missing ? absl::StatusCode::kDataLoss : fetched.status().code(),
                          absl::StrCat(uri, ": file \"", name, "\" (blob ", digest, ")",
                                       missing ? " is missing from the store: " : ": ",
                                       fetched.status().message()));
    }
    // Never hand out bytes that are not what the manifest promised.
    if (*fetched != digest) {
      ::unlink(local.c_str());
      return absl::DataLossError(absl::StrCat(uri, ": blob ", blob, " for \"", name,
                                              "\" does not match its digest (corrupted in the "
                                              "store; it hashes to ",
                                              *fetched, ")"));
    }
    return absl::OkStatus();
  }

  // Places blob `blob` at `local` and returns the digest of what was placed, by the scheme of
  // `expected`. The placed file itself is hashed (chunks on every core), so what is checked is
  // what the reader will see.
  absl::StatusOr<std::string> Fetch(ObjectBackend& backend, const std::string& blob,
                                    const std::string& local, const std::string& expected) {
    absl::Status linked = backend.Link(blob, local);
    if (!linked.ok()) {
      if (linked.code() != absl::StatusCode::kUnimplemented) return linked;
      const std::string partial = local + ".partial";
      FILE* out = std::fopen(partial.c_str(), "wb");
      if (out == nullptr) return absl::UnavailableError(absl::StrCat("cannot create ", partial));
      absl::Status streamed = backend.GetTo(blob, [&](absl::string_view chunk) {
        if (std::fwrite(chunk.data(), 1, chunk.size(), out) != chunk.size())
          return WriteError(partial);
        return absl::OkStatus();
      });
      if (std::fclose(out) != 0 && streamed.ok()) streamed = WriteError(partial);
      if (streamed.ok() && std::rename(partial.c_str(), local.c_str()) != 0)
        streamed = absl::UnavailableError(absl::StrCat("cannot rename ", partial));
      if (!streamed.ok()) {
        ::unlink(partial.c_str());
        return streamed;
      }
    }
    return DigestFileLike(local, expected, TransferThreads());
  }

  // Bytes [offset, offset + length) of the blob of manifest entry (`digest`, `size`, `chunks`),
  // verified: a file of one chunk is read whole and checked, a chunked one reads and checks the
  // chunks the range covers. Only a large file named by a plain digest (a manifest written
  // before chunked digests) is read unverified; its readers validate what they read.
  absl::StatusOr<std::string> ReadVerifiedRange(ObjectBackend& blobs, const std::string& blob,
                                                const std::string& uri, const std::string& name,
                                                const std::string& digest, int64_t size,
                                                const std::vector<std::string>& chunks,
                                                int64_t offset, int64_t length) {
    if (offset < 0 || offset > size)
      return absl::OutOfRangeError(
          absl::StrCat(uri, ": offset ", offset, " is past the size ", size, " of \"", name, "\""));
    const int64_t end = length < 0 ? size : std::min(size, offset + length);
    if (end <= offset) return std::string();  // nothing to read (a 0-byte tensor at the end)
    const bool plain_whole = size <= kDigestChunkBytes && absl::StartsWith(digest, "sha256:");
    const bool chunked = ChunksMatch(digest, size, chunks);
    if (!plain_whole && !chunked) return blobs.Get(blob, offset, end - offset);
    const int64_t first = plain_whole ? 0 : offset / kDigestChunkBytes;
    const int64_t last = plain_whole ? 0 : std::max(first, (end - 1) / kDigestChunkBytes);
    const int64_t start = first * kDigestChunkBytes;
    const int64_t stop = std::min(size, (last + 1) * kDigestChunkBytes);
    auto bytes = blobs.Get(blob, start, stop == size ? -1 : stop - start);
    if (!bytes.ok()) return bytes.status();
    const absl::string_view view(*bytes);
    bool good = true;
    if (plain_whole) {
      good = static_cast<int64_t>(view.size()) == size &&
             absl::StrCat("sha256:", Sha256Hex(view)) == digest;
    } else {
      for (int64_t c = first; c <= last && good; ++c) {
        const absl::string_view piece =
            view.substr((c - first) * kDigestChunkBytes, kDigestChunkBytes);
        good = Sha256Hex(piece) == chunks[c] &&
               (c + 1 < static_cast<int64_t>(chunks.size()) ||
                static_cast<int64_t>(piece.size()) == size - c * kDigestChunkBytes);
      }
    }
    if (!good)
      return absl::DataLossError(absl::StrCat(uri, ": blob ", blob, " for \"", name,
                                              "\" does not match its digest (corrupted in the "
                                              "store) in bytes ",
                                              start, "..", start + view.size()));
    return std::string(view.substr(offset - start, end - offset));
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
    // Every entry well formed before any is used: readers below take its fields as typed.
    for (const json& f : manifest["files"]) {
      if (auto entry = FileEntry(f, ManifestUri(uri)); !entry.ok()) return entry.status();
    }
    return Manifest{manifest["files"], manifest["blob_root"].get<std::string>()};
  }

  // The backend of `uri`'s scheme; S3 is opened on first use, so that a file:// store can still
  // read a model a recipe names in a bucket.
  absl::StatusOr<ObjectBackend*> For(const std::string& uri) {
    if (IsS3(uri)) {
      absl::MutexLock lock(&mu_);
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
  absl::Mutex mu_;
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
