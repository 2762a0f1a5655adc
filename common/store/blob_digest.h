// How the store names a blob by its content.
//
// A file of at most kDigestChunkBytes is named "sha256:<hex>", the SHA-256 of its bytes. A larger
// one is named "sha256-c16m:<hex>": the file is cut into 16 MiB chunks, each chunk is hashed with
// SHA-256, and <hex> is the SHA-256 of a domain tag, the file's size and the chunks' raw digests in
// order. One SHA-256 stream runs at 1.3-2.2 GB/s on one core, slower than a copy; chunks hash on
// every core, so a single huge file stores and verifies as fast as the disk moves it. The chunk
// digests go into the manifest, so a read of a byte range verifies just the chunks it covers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace squeeze {

inline constexpr int64_t kDigestChunkBytes = int64_t{16} << 20;

struct BlobDigest {
  std::string text;                 // "sha256:<hex>" or "sha256-c16m:<hex>", as manifests write it
  std::vector<std::string> chunks;  // hex SHA-256 of each chunk (chunked digests only)

  bool chunked() const { return !chunks.empty(); }
};

// The digest of `bytes`, chunks hashed on up to `threads` threads.
BlobDigest DigestBytes(absl::string_view bytes, size_t threads);
// The digest of the file at `path`, hashed from the page cache. NotFound naming it when absent.
absl::StatusOr<BlobDigest> DigestFile(const std::string& path, size_t threads);

// The digest of the file at `path` by the scheme of `expected` (a digest text): what a reader
// compares with `expected`. A manifest written before chunked digests names large files by plain
// SHA-256, and they still verify.
absl::StatusOr<std::string> DigestFileLike(const std::string& path, absl::string_view expected,
                                           size_t threads);

// The object name of the blob with digest `text` under a blob root: the hex for "sha256:", the hex
// and ".c16m" for chunked digests (a distinct name, so that no file's plain digest can alias
// another file's chunked one). InvalidArgument when `text` is not a digest this store writes.
absl::StatusOr<std::string> BlobName(absl::string_view text);

// Whether `chunks` (hex digests) are the chunks of a blob of `size` bytes named by `text`.
bool ChunksMatch(absl::string_view text, int64_t size, const std::vector<std::string>& chunks);

}  // namespace squeeze
