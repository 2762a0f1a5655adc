#include "common/store/sigv4.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/sha256.h"

namespace squeeze {

std::string UriEncode(absl::string_view s, bool keep_slash) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string CanonicalRequest(const SigV4Request& r) {
  std::vector<std::pair<std::string, std::string>> query;
  for (const auto& [k, v] : r.query) query.emplace_back(UriEncode(k, false), UriEncode(v, false));
  std::sort(query.begin(), query.end());
  std::vector<std::string> query_parts, header_lines, names;
  for (const auto& [k, v] : query) query_parts.push_back(absl::StrCat(k, "=", v));
  for (const auto& [k, v] : r.headers) {  // std::map: sorted by lowercase name
    // Values are trimmed and inner runs of spaces collapsed.
    std::string value;
    bool space = false;
    for (char c : v) {
      if (c == ' ') {
        space = !value.empty();
        continue;
      }
      if (space) value.push_back(' ');
      space = false;
      value.push_back(c);
    }
    header_lines.push_back(absl::StrCat(k, ":", value));
    names.push_back(k);
  }
  return absl::StrCat(r.method, "\n", UriEncode(r.path.empty() ? "/" : r.path, true), "\n",
                      absl::StrJoin(query_parts, "&"), "\n", absl::StrJoin(header_lines, "\n"),
                      "\n\n", absl::StrJoin(names, ";"), "\n", r.payload_sha256);
}

std::string StringToSign(const SigV4Request& r, const std::string& amz_date,
                         const std::string& region, const std::string& service) {
  const std::string scope =
      absl::StrCat(amz_date.substr(0, 8), "/", region, "/", service, "/aws4_request");
  return absl::StrCat("AWS4-HMAC-SHA256\n", amz_date, "\n", scope, "\n",
                      Sha256Hex(CanonicalRequest(r)));
}

std::string SignV4(const SigV4Request& r, const AwsCredentials& c, const std::string& amz_date,
                   const std::string& region, const std::string& service) {
  const std::string date = amz_date.substr(0, 8);
  const std::string k_date = HmacSha256("AWS4" + c.secret_access_key, date);
  const std::string k_region = HmacSha256(k_date, region);
  const std::string k_service = HmacSha256(k_region, service);
  const std::string k_signing = HmacSha256(k_service, "aws4_request");
  const std::string signature =
      HexEncode(HmacSha256(k_signing, StringToSign(r, amz_date, region, service)));
  std::vector<std::string> names;
  for (const auto& [k, v] : r.headers) names.push_back(k);
  return absl::StrCat("AWS4-HMAC-SHA256 Credential=", c.access_key_id, "/", date, "/", region, "/",
                      service, "/aws4_request,SignedHeaders=", absl::StrJoin(names, ";"),
                      ",Signature=", signature);
}

}  // namespace squeeze
