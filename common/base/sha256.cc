#include "common/base/sha256.h"

#include <openssl/evp.h>

#include <cstring>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/mapped_file.h"

namespace squeeze {

// OpenSSL's implementation, which uses the CPU's SHA extensions where present: model files are
// hashed on every store write and read, so digest speed is store throughput.
Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }

Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }

void Sha256::Update(absl::string_view data) { EVP_DigestUpdate(ctx_, data.data(), data.size()); }

std::string Sha256::RawDigest() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx_, out, &n);
  return std::string(reinterpret_cast<const char*>(out), n);
}

std::string Sha256::HexDigest() { return HexEncode(RawDigest()); }

std::string Sha256Hex(absl::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.HexDigest();
}

std::string HexEncode(absl::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

std::string Sha256Raw(absl::string_view data) {
  Sha256 h;
  h.Update(data);
  return h.RawDigest();
}

std::string HmacSha256(absl::string_view key, absl::string_view data) {
  std::string k = key.size() > 64 ? Sha256Raw(key) : std::string(key);
  k.resize(64, '\0');
  std::string inner(64, '\0'), outer(64, '\0');
  for (int i = 0; i < 64; ++i) {
    inner[i] = static_cast<char>(k[i] ^ 0x36);
    outer[i] = static_cast<char>(k[i] ^ 0x5c);
  }
  return Sha256Raw(outer + Sha256Raw(inner + std::string(data)));
}

absl::StatusOr<std::string> Sha256File(const std::string& path) {
  auto file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  return Sha256Hex((*file)->view());  // straight from the page cache: no copy into a buffer
}

}  // namespace squeeze
