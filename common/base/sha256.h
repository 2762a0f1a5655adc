// SHA-256 (FIPS 180-4), streaming. Used for content digests of models and data (cache keys,
// provenance, content-addressed blobs).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace squeeze {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(absl::string_view data);
  // The 32-byte digest; the object must not be updated afterwards.
  std::string RawDigest();
  // Lowercase hex of the digest; the object must not be updated afterwards.
  std::string HexDigest();

 private:
  evp_md_ctx_st* ctx_;
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
