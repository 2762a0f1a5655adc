#include "common/store/blob_digest.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/mapped_file.h"
#include "common/base/parallel_for.h"
#include "common/base/sha256.h"

namespace squeeze {
namespace {

constexpr absl::string_view kPlain = "sha256:";
constexpr absl::string_view kChunked = "sha256-c16m:";
// Separates chunked roots from the digest of any plain file.
constexpr absl::string_view kDomainTag = "squeeze.blob.sha256-c16m.v1";

std::string Uint64Bytes(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

// The root over raw chunk digests; `raw` are 32-byte digests in order.
std::string ChunkedRoot(int64_t size, const std::vector<std::string>& raw) {
  Sha256 root;
  root.Update(kDomainTag);
  root.Update(Uint64Bytes(static_cast<uint64_t>(size)));
  for (const std::string& r : raw) root.Update(r);
  return root.HexDigest();
}

bool IsHex64(absl::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string Unhex(absl::string_view hex) {
  std::string out(hex.size() / 2, '\0');
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = static_cast<char>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  return out;
}

}  // namespace

BlobDigest DigestBytes(absl::string_view bytes, size_t threads) {
  BlobDigest d;
  const int64_t size = static_cast<int64_t>(bytes.size());
  if (size <= kDigestChunkBytes) {
    d.text = absl::StrCat(kPlain, Sha256Hex(bytes));
    return d;
  }
  const size_t n = static_cast<size_t>((size + kDigestChunkBytes - 1) / kDigestChunkBytes);
  std::vector<std::string> raw(n);
  ParallelFor(n, threads, [&](size_t i) {
    raw[i] = Sha256Raw(bytes.substr(i * kDigestChunkBytes, kDigestChunkBytes));
  });
  d.chunks.reserve(n);
  for (const std::string& r : raw) d.chunks.push_back(HexEncode(r));
  d.text = absl::StrCat(kChunked, ChunkedRoot(size, raw));
  return d;
}

absl::StatusOr<BlobDigest> DigestFile(const std::string& path, size_t threads) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  return DigestBytes((*file)->view(), threads);
}

absl::StatusOr<std::string> DigestFileLike(const std::string& path, absl::string_view expected,
                                           size_t threads) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  if (absl::StartsWith(expected, kPlain)) return absl::StrCat(kPlain, Sha256Hex((*file)->view()));
  return DigestBytes((*file)->view(), threads).text;
}

absl::StatusOr<std::string> BlobName(absl::string_view text) {
  if (absl::StartsWith(text, kPlain) && IsHex64(text.substr(kPlain.size())))
    return std::string(text.substr(kPlain.size()));
  if (absl::StartsWith(text, kChunked) && IsHex64(text.substr(kChunked.size())))
    return absl::StrCat(text.substr(kChunked.size()), ".c16m");
  return absl::InvalidArgumentError(absl::StrCat(
      "\"", text, "\": not a blob digest (expected sha256:<64 hex> or sha256-c16m:<64 hex>)"));
}

bool ChunksMatch(absl::string_view text, int64_t size, const std::vector<std::string>& chunks) {
  if (!absl::StartsWith(text, kChunked) || size <= kDigestChunkBytes) return false;
  if (chunks.size() != static_cast<size_t>((size + kDigestChunkBytes - 1) / kDigestChunkBytes))
    return false;
  std::vector<std::string> raw;
  raw.reserve(chunks.size());
  for (const std::string& c : chunks) {
    if (!IsHex64(c)) return false;
    raw.push_back(Unhex(c));
  }
  return ChunkedRoot(size, raw) == text.substr(kChunked.size());
}

}  // namespace squeeze
