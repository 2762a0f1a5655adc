#include "common/store/s3_client.h"

#include <curl/curl.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/sha256.h"

namespace squeeze {
namespace {

// The text of the first <tag>...</tag> at or after `from`; "" when absent. S3's XML is simple and
// flat enough for this.
std::string XmlValue(const std::string& xml, const std::string& tag, size_t from = 0,
                     size_t* end = nullptr) {
  const std::string open = "<" + tag + ">", close = "</" + tag + ">";
  const size_t a = xml.find(open, from);
  if (a == std::string::npos) return "";
  const size_t b = xml.find(close, a);
  if (b == std::string::npos) return "";
  if (end) *end = b + close.size();
  return xml.substr(a + open.size(), b - a - open.size());
}

std::string AmzDate() {
  std::time_t now = std::time(nullptr);
  std::tm tm;
  gmtime_r(&now, &tm);
  char buf[20];
  std::strftime(buf, sizeof(buf), "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

size_t CollectBody(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

size_t CollectHeader(char* data, size_t size, size_t n, void* out) {
  std::string line(data, size * n);
  const size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(c));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
      value.pop_back();
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    (*static_cast<std::map<std::string, std::string>*>(out))[name] = value;
  }
  return size * n;
}

struct ReadState {
  absl::string_view data;
  size_t pos = 0;
};

size_t ReadBody(char* buffer, size_t size, size_t n, void* state) {
  auto* s = static_cast<ReadState*>(state);
  const size_t take = std::min(size * n, s->data.size() - s->pos);
  std::memcpy(buffer, s->data.data() + s->pos, take);
  s->pos += take;
  return take;
}

std::once_flag curl_init;

}  // namespace

ListObjectsPage ParseListObjectsPage(const std::string& xml) {
  ListObjectsPage page;
  size_t pos = 0;
  while (true) {
    size_t end = 0;
    const size_t open = xml.find("<Contents>", pos);
    if (open == std::string::npos) break;
    const std::string contents = XmlValue(xml, "Contents", open, &end);
    if (end <= pos) break;  // no closing tag: the rest is not an entry
    pos = end;
    int64_t size = 0;
    if (!absl::SimpleAtoi(XmlValue(contents, "Size"), &size) || size < 0) size = 0;
    page.objects.push_back({XmlValue(contents, "Key"), size, XmlValue(contents, "ETag"),
                            XmlValue(contents, "LastModified")});
  }
  page.truncated = XmlValue(xml, "IsTruncated") == "true";
  page.next_token = XmlValue(xml, "NextContinuationToken");
  return page;
}

absl::StatusOr<AwsCredentials> CredentialsFromEnvironment(const std::string& file) {
  AwsCredentials c;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) return absl::NotFoundError(absl::StrCat("credentials file ", file, ": cannot open"));
    std::string line;
    while (std::getline(in, line)) {
      const size_t eq = line.find('=');
      if (eq == std::string::npos) continue;
      const std::string k = line.substr(0, eq), v = line.substr(eq + 1);
      if (k == "AWS_ACCESS_KEY_ID") c.access_key_id = v;
      if (k == "AWS_SECRET_ACCESS_KEY") c.secret_access_key = v;
      if (k == "AWS_SESSION_TOKEN") c.session_token = v;
    }
  } else {
    if (const char* v = std::getenv("AWS_ACCESS_KEY_ID")) c.access_key_id = v;
    if (const char* v = std::getenv("AWS_SECRET_ACCESS_KEY")) c.secret_access_key = v;
    if (const char* v = std::getenv("AWS_SESSION_TOKEN")) c.session_token = v;
  }
  if (c.access_key_id.empty() || c.secret_access_key.empty()) {
    return absl::FailedPreconditionError(
        file.empty() ? "S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set"
                     : absl::StrCat("S3 credentials: ", file,
                                    " lacks AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY"));
  }
  return c;
}

S3Client::S3Client(S3Options options) : options_(std::move(options)) {
  std::call_once(curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  while (!options_.endpoint.empty() && options_.endpoint.back() == '/')
    options_.endpoint.pop_back();
}

absl::StatusOr<S3Client::Response> S3Client::RequestOnce(
    const std::string& method, const std::string& bucket, const std::string& key,
    const std::vector<std::pair<std::string, std::string>>& query, absl::string_view body,
    const std::map<std::string, std::string>& extra) {
  // Addressing: path style puts the bucket in the path; virtual host style in the host name.
  const size_t scheme_end = options_.endpoint.find("://");
  if (scheme_end == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("S3 endpoint \"", options_.endpoint, "\": expected http(s)://host[:port]"));
  }
  const std::string scheme = options_.endpoint.substr(0, scheme_end);
  std::string host = options_.endpoint.substr(scheme_end + 3);
  std::string path;
  if (options_.path_style) {
    path = bucket.empty() ? "/" : "/" + bucket + (key.empty() ? "" : "/" + key);
  } else {
    if (!bucket.empty()) host = bucket + "." + host;
    path = "/" + key;
  }
  SigV4Request sig;
  sig.method = method;
  sig.path = path;
  sig.query = query;
  sig.payload_sha256 = Sha256Hex(body);
  sig.headers = extra;
  sig.headers["host"] = host;
  // curl would label a POST body as a form, which servers then try to parse as one.
  if (method == "POST") sig.headers["content-type"] = "application/xml";
  const std::string date = AmzDate();
  sig.headers["x-amz-date"] = date;
  sig.headers["x-amz-content-sha256"] = sig.payload_sha256;
  if (!options_.credentials.session_token.empty())
    sig.headers["x-amz-security-token"] = options_.credentials.session_token;
  const std::string authorization = SignV4(sig, options_.credentials, date, options_.region, "s3");

  std::string url = absl::StrCat(scheme, "://", host, UriEncode(path, true));
  if (!query.empty()) {
    std::vector<std::string> parts;
    for (const auto& [k, v] : query)
      parts.push_back(absl::StrCat(UriEncode(k, false), "=", UriEncode(v, false)));
    absl::StrAppend(&url, "?", absl::StrJoin(parts, "&"));
  }
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  struct curl_slist* headers = nullptr;
  for (const auto& [k, v] : sig.headers) {
    if (k == "host") continue;  // curl sends it from the URL
    headers = curl_slist_append(headers, absl::StrCat(k, ": ", v).c_str());
  }
  headers = curl_slist_append(headers, absl::StrCat("Authorization: ", authorization).c_str());
  headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip
  Response response;
  ReadState upload{body, 0};
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, CollectBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, CollectHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &response.headers);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.timeout_ms));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, options_.verify_tls ? 1L : 0L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, options_.verify_tls ? 2L : 0L);
  if (method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (method == "PUT") {
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, ReadBody);
    curl_easy_setopt(curl, CURLOPT_READDATA, &upload);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(body.size()));
  } else if (method == "POST") {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  } else if (method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  }
  const CURLcode rc = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK) {
    return absl::UnavailableError(absl::StrCat(method, " ", url, ": ", curl_easy_strerror(rc)));
  }
  return response;
}

absl::StatusOr<S3Client::Response> S3Client::Request(
    const std::string& method, const std::string& bucket, const std::string& key,
    std::vector<std::pair<std::string, std::string>> query, absl::string_view body,
    std::map<std::string, std::string> headers) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  const std::string what = absl::StrCat("s3://", bucket, key.empty() ? "" : "/", key);
  absl::Status last;
  for (int attempt = 0; attempt < options_.max_attempts; ++attempt) {
    if (attempt > 0) {
      // Exponential backoff with full jitter.
      const int64_t cap = options_.backoff_ms << std::min(attempt - 1, 10);
      std::this_thread::sleep_for(
          std::chrono::milliseconds(std::uniform_int_distribution<int64_t>(cap / 2, cap)(rng)));
    }
    auto r = RequestOnce(method, bucket, key, query, body, headers);
    if (!r.ok()) {
      if (r.status().code() != absl::StatusCode::kUnavailable) return r.status();
      last = r.status();  // transport: connection refused or reset, timeout
      continue;
    }
    if (r->status >= 200 && r->status < 300) return r;
    const std::string code = XmlValue(r->body, "Code"), message = XmlValue(r->body, "Message");
    const std::string detail =
        absl::StrCat(what, ": ", method, " returned HTTP ", r->status,
                     code.empty() ? "" : " " + code, message.empty() ? "" : ": " + message);
    // 501: the server does not implement this request at all; asking again cannot help.
    if (r->status == 501) return absl::UnimplementedError(detail);
    if (r->status >= 500 || r->status == 429) {
      last = absl::UnavailableError(detail);
      continue;
    }
    switch (r->status) {
      case 404:
        return absl::NotFoundError(detail);
      case 403:
        return absl::PermissionDeniedError(detail);
      case 401:
        return absl::UnauthenticatedError(detail);
      case 409:
        return absl::AlreadyExistsError(detail);
      default:
        return absl::InvalidArgumentError(detail);
    }
  }
  return absl::UnavailableError(
      absl::StrCat(last.message(), " (after ", options_.max_attempts, " attempts)"));
}

absl::Status S3Client::CreateBucket(const std::string& bucket) {
  auto r = Request("PUT", bucket, "", {}, "");
  return r.ok() || r.status().code() == absl::StatusCode::kAlreadyExists ? absl::OkStatus()
                                                                         : r.status();
}

absl::Status S3Client::PutObject(const std::string& bucket, const std::string& key,
                                 absl::string_view data) {
  return Request("PUT", bucket, key, {}, data).status();
}

absl::StatusOr<std::string> S3Client::GetObject(const std::string& bucket, const std::string& key,
                                                int64_t offset, int64_t length) {
  std::map<std::string, std::string> headers;
  if (offset > 0 || length >= 0) {
    headers["range"] = length >= 0 ? absl::StrCat("bytes=", offset, "-", offset + length - 1)
                                   : absl::StrCat("bytes=", offset, "-");
  }
  auto r = Request("GET", bucket, key, {}, "", headers);
  if (!r.ok()) return r.status();
  return std::move(r->body);
}

absl::StatusOr<S3ObjectInfo> S3Client::HeadObject(const std::string& bucket,
                                                  const std::string& key) {
  auto r = Request("HEAD", bucket, key, {}, "");
  if (!r.ok()) return r.status();
  S3ObjectInfo info;
  info.key = key;
  info.size = std::atoll(r->headers["content-length"].c_str());
  info.etag = r->headers["etag"];
  return info;
}

absl::StatusOr<std::vector<S3ObjectInfo>> S3Client::List(const std::string& bucket,
                                                         const std::string& prefix, int page_size) {
  std::vector<S3ObjectInfo> out;
  std::string token;
  while (true) {
    std::vector<std::pair<std::string, std::string>> query = {
        {"list-type", "2"}, {"prefix", prefix}, {"max-keys", std::to_string(page_size)}};
    if (!token.empty()) query.emplace_back("continuation-token", token);
    auto r = Request("GET", bucket, "", query, "");
    if (!r.ok()) return r.status();
    ListObjectsPage page = ParseListObjectsPage(r->body);
    out.insert(out.end(), page.objects.begin(), page.objects.end());
    if (!page.truncated) break;
    token = page.next_token;
    if (token.empty())
      return absl::DataLossError(
          absl::StrCat("s3://", bucket, ": truncated listing without a token"));
  }
  return out;
}

absl::Status S3Client::DeleteObject(const std::string& bucket, const std::string& key) {
  return Request("DELETE", bucket, key, {}, "").status();
}

absl::Status S3Client::PutObjectMultipart(const std::string& bucket, const std::string& key,
                                          absl::string_view data) {
  auto created = Request("POST", bucket, key, {{"uploads", ""}}, "");
  if (!created.ok()) return created.status();
  const std::string upload_id = XmlValue(created->body, "UploadId");
  if (upload_id.empty())
    return absl::DataLossError(absl::StrCat("s3://", bucket, "/", key, ": no UploadId"));
  const int64_t part = std::max<int64_t>(1, options_.part_size);
  const int parts = static_cast<int>((static_cast<int64_t>(data.size()) + part - 1) / part);
  std::vector<std::string> etags(std::max(parts, 1));
  std::atomic<int> next{0};
  std::mutex mu;
  absl::Status failure;
  // A bounded number of parts in flight: each worker takes the next part number.
  auto upload = [&] {
    for (int i = next++; i < parts; i = next++) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!failure.ok()) return;
      }
      const absl::string_view chunk =
          data.substr(static_cast<size_t>(i * part), static_cast<size_t>(part));
      auto r = Request("PUT", bucket, key,
                       {{"partNumber", std::to_string(i + 1)}, {"uploadId", upload_id}}, chunk);
      std::lock_guard<std::mutex> lock(mu);
      if (!r.ok()) {
        failure = r.status();
        return;
      }
      etags[i] = r->headers["etag"];
    }
  };
  std::vector<std::thread> workers;
  for (int t = 0; t < std::max(1, std::min(options_.parallel_parts, parts)); ++t)
    workers.emplace_back(upload);
  for (auto& w : workers) w.join();
  if (!failure.ok()) {
    Request("DELETE", bucket, key, {{"uploadId", upload_id}}, "")
        .IgnoreError();  // abort: no orphaned parts
    return failure;
  }
  std::string xml = "<CompleteMultipartUpload>";
  for (int i = 0; i < parts; ++i) {
    absl::StrAppend(&xml, "<Part><PartNumber>", i + 1, "</PartNumber><ETag>", etags[i],
                    "</ETag></Part>");
  }
  xml += "</CompleteMultipartUpload>";
  auto done = Request("POST", bucket, key, {{"uploadId", upload_id}}, xml);
  if (!done.ok()) {
    Request("DELETE", bucket, key, {{"uploadId", upload_id}}, "").IgnoreError();
    return done.status();
  }
  // S3 may answer 200 with an error document for CompleteMultipartUpload.
  if (!XmlValue(done->body, "Code").empty()) {
    return absl::UnavailableError(absl::StrCat("s3://", bucket, "/", key,
                                               ": complete failed: ", XmlValue(done->body, "Code"),
                                               ": ", XmlValue(done->body, "Message")));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<S3MultipartUpload>> S3Client::ListMultipartUploads(
    const std::string& bucket, const std::string& prefix) {
  std::vector<S3MultipartUpload> out;
  std::string key_marker, upload_marker;
  while (true) {
    std::vector<std::pair<std::string, std::string>> query = {{"uploads", ""}, {"prefix", prefix}};
    if (!key_marker.empty()) query.emplace_back("key-marker", key_marker);
    if (!upload_marker.empty()) query.emplace_back("upload-id-marker", upload_marker);
    auto r = Request("GET", bucket, "", query, "");
    if (!r.ok()) return r.status();
    size_t pos = 0;
    while (true) {
      size_t end;
      const std::string upload = XmlValue(r->body, "Upload", pos, &end);
      if (upload.empty()) break;
      pos = end;
      out.push_back(
          {XmlValue(upload, "Key"), XmlValue(upload, "UploadId"), XmlValue(upload, "Initiated")});
    }
    if (XmlValue(r->body, "IsTruncated") != "true") break;
    key_marker = XmlValue(r->body, "NextKeyMarker");
    upload_marker = XmlValue(r->body, "NextUploadIdMarker");
    if (key_marker.empty() && upload_marker.empty()) break;
  }
  return out;
}

absl::Status S3Client::AbortMultipartUpload(const std::string& bucket, const std::string& key,
                                            const std::string& upload_id) {
  return Request("DELETE", bucket, key, {{"uploadId", upload_id}}, "").status();
}

}  // namespace squeeze
