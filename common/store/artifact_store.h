// Where tensors, checkpoints and reports live between tasks. gRPC carries only the URIs.
//
// An artifact (a model directory, a calibration cache, a checkpoint) is a manifest,
// URI/manifest.json, that lists its files by SHA-256 digest, size and media type, with its
// provenance. The files are blobs stored once under ROOT/blobs/sha256/ab/<digest>, in any backend
// (`file://` is the embedded default, `s3://` the cluster one). The manifest is written last: it is
// the commit point, and a crash before it leaves only unreferenced blobs, which garbage collection
// removes. Every blob is verified against its digest when read.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace squeeze {

// Where an artifact came from, recorded in its manifest.
struct ArtifactProvenance {
  std::string job_id;
  std::string stage;       // the task kind: "quantize", "calibrate", "upload", ...
  std::string stage_spec;  // the stage's options from the recipe (JSON)
  std::map<std::string, std::string> sources;  // input name -> URI (their digests are added)
};

struct PutOptions {
  // Keep the artifact's blobs inside it (URI/.blobs/) instead of the store's shared pool, so that
  // deleting the artifact frees them at once and replacing it frees the blobs it no longer
  // names. For task checkpoints: private to one task, replaced often, deleted when done.
  bool private_blobs = false;
};
inline PutOptions CheckpointPutOptions() {
  PutOptions o;
  o.private_blobs = true;
  return o;
}

// One file of an artifact as its manifest lists it.
struct StoredFile {
  std::string name;
  std::string digest;  // "sha256:<hex>" or "sha256-c16m:<hex>" (see blob_digest.h)
  int64_t size = 0;
  std::vector<std::string> chunks;  // the chunks' digests of a chunked one, for range reads
};

class ArtifactStore {
 public:
  virtual ~ArtifactStore() = default;

  // Artifacts built a file at a time (a model written layer by layer as it is compressed): each
  // file is stored as soon as it is finished, and the artifact is committed when all are.
  // Stores the file at `local_path` where the blobs of an artifact at `uri` go and returns its
  // manifest entry under `name`. With `consume` the caller gives the file away: the file
  // backend moves it into the store instead of copying it, and the path is gone afterwards.
  // Until a manifest names it, the blob is garbage once older than collection's grace period.
  virtual absl::StatusOr<StoredFile> PutFileBlob(const std::string& uri, const std::string& name,
                                                 const std::string& local_path, bool consume) = 0;
  // Commits the artifact at `uri` with files stored by PutFileBlob for the same `uri`.
  virtual absl::Status PutManifest(const std::string& uri, const std::vector<StoredFile>& files,
                                   const ArtifactProvenance& provenance) = 0;
  // The files an artifact's manifest lists.
  virtual absl::StatusOr<std::vector<StoredFile>> Files(const std::string& uri) = 0;

  // Stores the regular files of `local_dir` (names starting with '.' skipped) as the artifact at
  // `uri`. The artifact appears whole or not at all; an existing one is replaced. Blobs go to
  // the store's shared pool when `uri` lies under the store's root; an artifact elsewhere keeps
  // its blobs inside itself, so that no garbage collection of the root can take them.
  virtual absl::Status PutDirectory(const std::string& local_dir, const std::string& uri,
                                    const ArtifactProvenance& provenance,
                                    const PutOptions& options) = 0;
  absl::Status PutDirectory(const std::string& local_dir, const std::string& uri,
                            const ArtifactProvenance& provenance) {
    return PutDirectory(local_dir, uri, provenance, PutOptions{});
  }
  absl::Status PutDirectory(const std::string& local_dir, const std::string& uri) {
    return PutDirectory(local_dir, uri, ArtifactProvenance{}, PutOptions{});
  }
  // A local directory holding the artifact's files, each verified against its digest: placed
  // into `scratch` (hard links on the file backend, streamed downloads otherwise). A plain
  // directory given by path (a user's model) is returned as it is.
  virtual absl::StatusOr<std::string> LocalDirectory(const std::string& uri,
                                                     const std::string& scratch) = 0;
  // One file of an artifact, verified, placed at `local_path`: what a task reads when it needs
  // part of a large artifact (the windows of a calibration cache, not its Hessians).
  virtual absl::Status FetchFile(const std::string& uri, const std::string& name,
                                 const std::string& local_path) = 0;
  // True when a complete artifact (or, for inputs given by users, a directory) is at `uri`.
  virtual absl::StatusOr<bool> Exists(const std::string& uri) = 0;
  // Small single-file objects (reports), written atomically.
  virtual absl::Status PutFile(const std::string& uri, absl::string_view contents) = 0;
  virtual absl::StatusOr<std::string> ReadFile(const std::string& uri) = 0;
  virtual absl::Status Delete(const std::string& uri) = 0;
  // Bytes [offset, offset + length) of file `name` of the directory artifact at `uri`
  // (length < 0: to the end), without fetching the rest: how a safetensors header or one tensor
  // is read from a large model. Also returns the file's full size.
  virtual absl::StatusOr<std::string> ReadArtifactRange(const std::string& uri,
                                                        const std::string& name, int64_t offset,
                                                        int64_t length, int64_t* file_size) = 0;

  struct GcReport {
    int64_t blobs_kept = 0;
    int64_t blobs_deleted = 0;
    int64_t bytes_deleted = 0;
    int64_t uploads_aborted = 0;  // multipart uploads abandoned by clients that died
    // Set when the server cannot list multipart uploads (some S3-compatible servers answer 501):
    // blobs were still collected, but no abandoned upload could be found or aborted.
    std::string uploads_not_listed;
  };
  // Deletes blobs under the store's root that no manifest references and that are older than
  // `grace_seconds` (a younger one may belong to an upload whose manifest is not written yet),
  // and abandoned partial uploads of the same age. Everything is listed and every manifest read
  // before anything is deleted: a listing that fails, or a manifest that cannot be read or
  // parsed, fails the collection with nothing deleted.
  virtual absl::StatusOr<GcReport> CollectGarbage(int64_t grace_seconds) = 0;
};

// Opens the store rooted at `root_uri`: "file:///dir" (the embedded default) or
// "s3://bucket/prefix" (endpoint, region, addressing and TLS from SQUEEZE_S3_ENDPOINT, AWS_REGION,
// SQUEEZE_S3_PATH_STYLE, SQUEEZE_S3_VERIFY_TLS; credentials from the AWS_* variables or
// SQUEEZE_S3_CREDENTIALS_FILE). Either store reads and writes URIs of both schemes: a model given
// by path, an artifact in a bucket. With "file://" and no path, blobs of new artifacts are kept
// inside the artifact's own directory.
struct StoreOptions {
  // file:// writes are fsynced before they count as stored (blobs before their manifest), so a
  // power loss cannot leave a manifest naming lost bytes. Off only for scratch stores and
  // benchmarks.
  bool sync_file_writes = true;
};
absl::StatusOr<std::unique_ptr<ArtifactStore>> OpenArtifactStore(absl::string_view root_uri,
                                                                 const StoreOptions& options = {});

// "file:///a/b" -> "/a/b"; plain paths pass through.
std::string FilePathOfUri(absl::string_view uri);

}  // namespace squeeze
