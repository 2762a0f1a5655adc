// s3:// objects through S3Client. Blobs are hashed from a memory map of the local file (never
// read whole into memory), checked with HEAD, and uploaded in parallel parts above 64 MiB;
// downloads are streamed in ranged chunks, so memory stays bounded whatever the object's size.

#include <cstdlib>
#include <ctime>

#include "absl/strings/str_cat.h"
#include "common/base/mapped_file.h"
#include "common/base/parallel_for.h"
#include "common/store/object_backend.h"
#include "common/store/s3_client.h"

namespace squeeze {
namespace {

constexpr int64_t kMultipartThreshold = 64ll << 20;
constexpr int64_t kGetChunk = 16ll << 20;

struct S3Location {
  std::string bucket, key;
};

absl::StatusOr<S3Location> ParseS3Uri(absl::string_view uri) {
  if (uri.substr(0, 5) != "s3://")
    return absl::InvalidArgumentError(absl::StrCat("\"", uri, "\": not an s3:// URI"));
  const absl::string_view rest = uri.substr(5);
  const size_t slash = rest.find('/');
  S3Location loc;
  loc.bucket = std::string(rest.substr(0, slash));
  loc.key = slash == absl::string_view::npos ? "" : std::string(rest.substr(slash + 1));
  if (loc.bucket.empty())
    return absl::InvalidArgumentError(absl::StrCat("\"", uri, "\": no bucket"));
  return loc;
}

int64_t AgeSeconds(const std::string& iso8601) {
  std::tm tm{};
  if (strptime(iso8601.c_str(), "%Y-%m-%dT%H:%M:%S", &tm) == nullptr) return 0;
  return static_cast<int64_t>(std::time(nullptr) - timegm(&tm));
}

class S3ObjectBackend : public ObjectBackend {
 public:
  explicit S3ObjectBackend(S3Options options) : client_(std::move(options)) {}

  absl::Status Put(const std::string& uri, absl::string_view bytes) override {
    auto loc = ParseS3Uri(uri);
    if (!loc.ok()) return loc.status();
    return client_.PutObject(loc->bucket, loc->key, bytes);
  }

  absl::StatusOr<BlobDigest> PutBlob(const std::string& blob_root,
                                     const std::string& path) override {
    auto file = MappedFile::Open(path);  // uploaded from the page cache, never read into memory
    if (!file.ok()) return file.status();
    const BlobDigest digest = DigestBytes((*file)->view(), TransferThreads());
    auto name = BlobName(digest.text);
    if (!name.ok()) return name.status();
    auto loc = ParseS3Uri(BlobUri(blob_root, *name));
    if (!loc.ok()) return loc.status();
    // Content addressing: a blob that is already there is not uploaded again.
    if (client_.HeadObject(loc->bucket, loc->key).ok()) return digest;
    const absl::Status put =
        (*file)->view().size() > static_cast<size_t>(kMultipartThreshold)
            ? client_.PutObjectMultipart(loc->bucket, loc->key, (*file)->view())
            : client_.PutObject(loc->bucket, loc->key, (*file)->view());
    if (!put.ok()) return put;
    return digest;
  }

  absl::StatusOr<std::string> Get(const std::string& uri, int64_t offset, int64_t length) override {
    auto loc = ParseS3Uri(uri);
    if (!loc.ok()) return loc.status();
    return client_.GetObject(loc->bucket, loc->key, offset, length);
  }

  absl::Status GetTo(const std::string& uri,
                     const std::function<absl::Status(absl::string_view)>& sink) override {
    auto loc = ParseS3Uri(uri);
    if (!loc.ok()) return loc.status();
    auto head = client_.HeadObject(loc->bucket, loc->key);
    if (!head.ok()) return head.status();
    // Ranged chunks: each is retried on its own, and only one is in memory at a time.
    for (int64_t offset = 0; offset < head->size; offset += kGetChunk) {
      auto chunk = client_.GetObject(loc->bucket, loc->key, offset,
                                     std::min(kGetChunk, head->size - offset));
      if (!chunk.ok()) return chunk.status();
      if (auto s = sink(*chunk); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<ObjectInfo> Head(const std::string& uri) override {
    auto loc = ParseS3Uri(uri);
    if (!loc.ok()) return loc.status();
    auto head = client_.HeadObject(loc->bucket, loc->key);
    if (!head.ok()) return head.status();
    return ObjectInfo{uri, head->size, 0};
  }

  absl::StatusOr<std::vector<ObjectInfo>> List(const std::string& prefix_uri) override {
    auto loc = ParseS3Uri(prefix_uri);
    if (!loc.ok()) return loc.status();
    auto objects = client_.List(loc->bucket, loc->key);
    if (!objects.ok()) return objects.status();
    std::vector<ObjectInfo> out;
    for (const S3ObjectInfo& o : *objects) {
      out.push_back(
          {absl::StrCat("s3://", loc->bucket, "/", o.key), o.size, AgeSeconds(o.last_modified)});
    }
    return out;
  }

  absl::StatusOr<std::vector<PartialUpload>> ListStaleUploads(const std::string& prefix_uri,
                                                              int64_t grace_seconds) override {
    auto loc = ParseS3Uri(prefix_uri);
    if (!loc.ok()) return loc.status();
    auto uploads = client_.ListMultipartUploads(loc->bucket, loc->key);
    if (!uploads.ok()) return uploads.status();
    std::vector<PartialUpload> stale;
    for (const S3MultipartUpload& u : *uploads) {
      if (AgeSeconds(u.initiated) < grace_seconds) continue;
      stale.push_back({absl::StrCat("s3://", loc->bucket, "/", u.key), u.upload_id});
    }
    return stale;
  }

  absl::Status AbortUpload(const PartialUpload& upload) override {
    auto loc = ParseS3Uri(upload.uri);
    if (!loc.ok()) return loc.status();
    return client_.AbortMultipartUpload(loc->bucket, loc->key, upload.upload_id);
  }

  absl::Status Delete(const std::string& uri) override {
    auto loc = ParseS3Uri(uri);
    if (!loc.ok()) return loc.status();
    return client_.DeleteObject(loc->bucket, loc->key);
  }

 private:
  S3Client client_;
};

bool EnvFlag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::string(v) != "0" && std::string(v) != "false";
}

}  // namespace

absl::StatusOr<std::unique_ptr<ObjectBackend>> NewS3ObjectBackend() {
  S3Options o;
  const char* region = std::getenv("AWS_REGION");
  if (region == nullptr) region = std::getenv("AWS_DEFAULT_REGION");
  if (region != nullptr && *region) o.region = region;
  const char* endpoint = std::getenv("SQUEEZE_S3_ENDPOINT");
  o.endpoint =
      endpoint && *endpoint ? endpoint : absl::StrCat("https://s3.", o.region, ".amazonaws.com");
  o.path_style = EnvFlag("SQUEEZE_S3_PATH_STYLE", endpoint != nullptr);
  o.verify_tls = EnvFlag("SQUEEZE_S3_VERIFY_TLS", true);
  const char* file = std::getenv("SQUEEZE_S3_CREDENTIALS_FILE");
  auto credentials = CredentialsFromEnvironment(file ? file : "");
  if (!credentials.ok()) return credentials.status();
  o.credentials = *credentials;
  return std::unique_ptr<ObjectBackend>(new S3ObjectBackend(std::move(o)));
}

}  // namespace squeeze
