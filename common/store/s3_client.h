// A small S3 client on libcurl: SigV4 header authorization, path-style or virtual-host
// addressing, retries with exponential backoff and jitter on 5xx, 429 and transport errors (never
// on other 4xx), ranged reads, listing with continuation, and multipart upload with a bounded
// number of parts in flight (aborted on failure). Works with AWS S3 and S3-compatible stores.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/store/sigv4.h"

namespace squeeze {

struct S3Options {
  std::string endpoint;  // "http://127.0.0.1:9000", "https://s3.us-east-1.amazonaws.com"
  std::string region = "us-east-1";
  bool path_style = true;  // endpoint/bucket/key rather than bucket.endpoint/key
  bool verify_tls = true;
  AwsCredentials credentials;
  int max_attempts = 5;
  int64_t backoff_ms = 100;  // doubled per retry, with jitter
  int64_t part_size = 64ll << 20;
  int parallel_parts = 4;
  int64_t timeout_ms = 300000;
};

// Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, or from a file
// of KEY=VALUE lines with those names (a mounted Kubernetes secret). Never logged.
absl::StatusOr<AwsCredentials> CredentialsFromEnvironment(const std::string& file = "");

struct S3ObjectInfo {
  std::string key;
  int64_t size = 0;
  std::string etag;
  std::string last_modified;  // ISO 8601, from listings
};

// A multipart upload that was created and neither completed nor aborted.
struct S3MultipartUpload {
  std::string key;
  std::string upload_id;
  std::string initiated;  // ISO 8601
};

// One page of a ListObjectsV2 response, parsed (exposed for the parser's fuzz test). A size that
// is not a non-negative number reads as 0.
struct ListObjectsPage {
  std::vector<S3ObjectInfo> objects;
  bool truncated = false;
  std::string next_token;
};
ListObjectsPage ParseListObjectsPage(const std::string& xml);

class S3Client {
 public:
  explicit S3Client(S3Options options);

  absl::Status CreateBucket(const std::string& bucket);
  absl::Status PutObject(const std::string& bucket, const std::string& key, absl::string_view data);
  // Bytes [offset, offset + length) (length < 0: to the end).
  absl::StatusOr<std::string> GetObject(const std::string& bucket, const std::string& key,
                                        int64_t offset = 0, int64_t length = -1);
  absl::StatusOr<S3ObjectInfo> HeadObject(const std::string& bucket, const std::string& key);
  // Every object under `prefix`, following continuation tokens.
  absl::StatusOr<std::vector<S3ObjectInfo>> List(const std::string& bucket,
                                                 const std::string& prefix, int page_size = 1000);
  absl::Status DeleteObject(const std::string& bucket, const std::string& key);
  // Multipart upload in parts of options.part_size, options.parallel_parts at a time.
  absl::Status PutObjectMultipart(const std::string& bucket, const std::string& key,
                                  absl::string_view data);
  // Uploads in progress (or abandoned by a client that died) under `prefix`.
  absl::StatusOr<std::vector<S3MultipartUpload>> ListMultipartUploads(const std::string& bucket,
                                                                      const std::string& prefix);
  absl::Status AbortMultipartUpload(const std::string& bucket, const std::string& key,
                                    const std::string& upload_id);

 private:
  struct Response {
    long status = 0;
    std::string body;
    std::map<std::string, std::string> headers;  // lowercase names
  };
  absl::StatusOr<Response> Request(const std::string& method, const std::string& bucket,
                                   const std::string& key,
                                   std::vector<std::pair<std::string, std::string>> query,
                                   absl::string_view body,
                                   std::map<std::string, std::string> headers = {});
  absl::StatusOr<Response> RequestOnce(
      const std::string& method, const std::string& bucket, const std::string& key,
      const std::vector<std::pair<std::string, std::string>>& query, absl::string_view body,
      const std::map<std::string, std::string>& headers);

  S3Options options_;
};

}  // namespace squeeze
