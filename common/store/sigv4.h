// AWS Signature Version 4 for S3 requests (header authorization).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace squeeze {

struct AwsCredentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  // optional
};

struct SigV4Request {
  std::string method;                                      // "GET"
  std::string path;                                        // "/bucket/key", not yet encoded
  std::vector<std::pair<std::string, std::string>> query;  // not yet encoded
  std::map<std::string, std::string> headers;              // lowercase names; host included
  std::string payload_sha256;                              // hex, or "UNSIGNED-PAYLOAD"
};

// RFC 3986 encoding as SigV4 wants it: unreserved characters stay, everything else %XX;
// '/' stays when `keep_slash` (paths), is encoded otherwise (query values).
std::string UriEncode(absl::string_view s, bool keep_slash);

// The canonical request and string to sign, exposed for tests.
std::string CanonicalRequest(const SigV4Request& request);
std::string StringToSign(const SigV4Request& request, const std::string& amz_date,
                         const std::string& region, const std::string& service);

// The Authorization header value. `request.headers` must already hold x-amz-date (= amz_date,
// "YYYYMMDDTHHMMSSZ") and x-amz-content-sha256 (and x-amz-security-token with a session token).
std::string SignV4(const SigV4Request& request, const AwsCredentials& credentials,
                   const std::string& amz_date, const std::string& region,
                   const std::string& service);

}  // namespace squeeze
