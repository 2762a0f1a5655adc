// Where tensors, checkpoints and reports live between tasks. gRPC carries only the URIs.
// Backends implement this one interface; `file://` is the embedded default.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace squeeze {

class ArtifactStore {
 public:
  virtual ~ArtifactStore() = default;

  // Copies the regular files of `local_dir` into the artifact at `uri`. The artifact appears whole
  // or not at all: a crash midway leaves no artifact under `uri`. Replaces an existing one.
  virtual absl::Status PutDirectory(const std::string& local_dir, const std::string& uri) = 0;
  // A local directory holding the artifact's files (the file backend returns its own directory;
  // remote backends download into `scratch`).
  virtual absl::StatusOr<std::string> LocalDirectory(const std::string& uri,
                                                     const std::string& scratch) = 0;
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
  };
  // Deletes blobs under the store's root that no manifest references and that are older than
  // `grace_seconds` (a younger one may belong to an upload whose manifest is not written yet).
  virtual absl::StatusOr<GcReport> CollectGarbage(int64_t grace_seconds) { return GcReport{}; }
};

// Opens the store rooted at `root_uri`: "file:///dir" (the embedded default) or
// "s3://bucket/prefix" (endpoint, region, addressing and TLS from SQUEEZE_S3_ENDPOINT, AWS_REGION,
// SQUEEZE_S3_PATH_STYLE, SQUEEZE_S3_VERIFY_TLS; credentials from the AWS_* variables or
// SQUEEZE_S3_CREDENTIALS_FILE). The store reads and writes file:// URIs too (models given by path).
absl::StatusOr<std::unique_ptr<ArtifactStore>> OpenArtifactStore(absl::string_view root_uri);
absl::StatusOr<std::unique_ptr<ArtifactStore>> OpenS3ArtifactStore(absl::string_view root_uri);

// "file:///a/b" -> "/a/b"; plain paths pass through.
std::string FilePathOfUri(absl::string_view uri);

}  // namespace squeeze
