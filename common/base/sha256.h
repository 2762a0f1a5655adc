// SHA-256 (FIPS 180-4), streaming. Used for content digests of models and data (cache keys,
// provenance); no external crypto library is needed for that.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace squeeze {

class Sha256 {
 public:
  Sha256();
  void Update(absl::string_view data);
  // The 32-byte digest; the object must not be updated afterwards.
  std::string RawDigest();
  // Lowercase hex of the digest; the object must not be updated afterwards.
  std::string HexDigest();

 private:
  void Block(const uint8_t* block);
  std::array<uint32_t, 8> h_;
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t length_ = 0;
};

std::string Sha256Hex(absl::string_view data);
// The raw 32-byte digest.
std::string Sha256Raw(absl::string_view data);
// HMAC-SHA256 (RFC 2104), raw 32 bytes.
std::string HmacSha256(absl::string_view key, absl::string_view data);
std::string HexEncode(absl::string_view bytes);
// Streams the file; NotFound naming it when it cannot be opened.
absl::StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace squeeze
