// The primitives one storage system provides to the content-addressed artifact store: named
// objects that are written whole, read by range, listed and deleted. `file://` (a directory
// tree) and `s3://` (a bucket) implement it; manifests, digests, verification and garbage
// collection are written once, above it, in ContentAddressedStore.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/store/blob_digest.h"

namespace squeeze {

struct ObjectInfo {
  std::string uri;
  int64_t size = 0;
  int64_t age_seconds = 0;  // since it was last written
};

// A multipart upload that was started and never completed.
struct PartialUpload {
  std::string uri;
  std::string upload_id;
};

class ObjectBackend {
 public:
  virtual ~ObjectBackend() = default;

  // Writes a small object whole and atomically: readers see the old bytes or the new ones.
  virtual absl::Status Put(const std::string& uri, absl::string_view bytes) = 0;
  // Stores the file at `path` as the blob `blob_root`/ab/<name> (BlobName of its digest, see
  // blob_digest.h) and returns its digest. The file is hashed from the page cache (never held
  // whole in memory); a blob that is already there is not written again. A blob appears under its
  // name only once complete.
  virtual absl::StatusOr<BlobDigest> PutBlob(const std::string& blob_root,
                                             const std::string& path) = 0;
  // PutBlob for a file the caller gives away: a backend that can take the file itself (the file
  // backend renames it into place) does so instead of copying; once stored, `path` is gone.
  virtual absl::StatusOr<BlobDigest> MoveBlob(const std::string& blob_root,
                                              const std::string& path) {
    auto digest = PutBlob(blob_root, path);
    if (digest.ok()) std::remove(path.c_str());  // its local space is free at once
    return digest;
  }
  // Bytes [offset, offset + length) of an object (length < 0: to the end). NotFound if absent.
  virtual absl::StatusOr<std::string> Get(const std::string& uri, int64_t offset = 0,
                                          int64_t length = -1) = 0;
  // Streams the whole object to `sink` in bounded chunks.
  virtual absl::Status GetTo(const std::string& uri,
                             const std::function<absl::Status(absl::string_view)>& sink) = 0;
  // NotFound when absent.
  virtual absl::StatusOr<ObjectInfo> Head(const std::string& uri) = 0;
  // Every object whose URI starts with `prefix_uri`.
  virtual absl::StatusOr<std::vector<ObjectInfo>> List(const std::string& prefix_uri) = 0;
  virtual absl::Status Delete(const std::string& uri) = 0;
  // Multipart uploads under `prefix_uri` started more than `grace_seconds` ago (left by clients
  // that died mid-upload). Backends without them return none; a server that cannot list them
  // answers Unimplemented.
  virtual absl::StatusOr<std::vector<PartialUpload>> ListStaleUploads(const std::string& prefix_uri,
                                                                      int64_t grace_seconds) {
    return std::vector<PartialUpload>{};
  }
  virtual absl::Status AbortUpload(const PartialUpload& upload) {
    return absl::UnimplementedError("no multipart uploads in this backend");
  }
  // Makes `local_path` a read-only copy of the object without moving bytes (the file backend
  // hard-links it, copying only across filesystems). Unimplemented where that is not possible;
  // the caller then streams the object with GetTo.
  virtual absl::Status Link(const std::string& uri, const std::string& local_path) {
    return absl::UnimplementedError("no local link for this backend");
  }
};

// `sync`: fsync objects (and their directory) before a write returns.
std::unique_ptr<ObjectBackend> NewFileObjectBackend(bool sync = true);
// Endpoint, region, addressing and TLS from SQUEEZE_S3_ENDPOINT, AWS_REGION, SQUEEZE_S3_PATH_STYLE,
// SQUEEZE_S3_VERIFY_TLS; credentials from the AWS_* variables or SQUEEZE_S3_CREDENTIALS_FILE.
absl::StatusOr<std::unique_ptr<ObjectBackend>> NewS3ObjectBackend();

// The blob named `name` (BlobName of its digest) under `blob_root`: ROOT/ab/<name>.
std::string BlobUri(const std::string& blob_root, const std::string& name);

}  // namespace squeeze
