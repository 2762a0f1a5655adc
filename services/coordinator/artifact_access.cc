#include "services/coordinator/artifact_access.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/store/blob_digest.h"

namespace squeeze::coordinator {
namespace {

bool IsSingleObject(const v1::Artifact& artifact) { return artifact.kind() == "report"; }

std::string ObjectName(const std::string& uri) { return uri.substr(uri.rfind('/') + 1); }

bool SendBytes(const std::string& bytes,
               const std::function<bool(const v1::DownloadArtifactResponse&)>& send) {
  v1::DownloadArtifactResponse piece;
  for (size_t at = 0; at < bytes.size(); at += kDownloadPieceBytes) {
    piece.set_data(bytes.substr(at, kDownloadPieceBytes));
    if (!send(piece)) return false;
  }
  return true;
}

// A single object's one file, described from its bytes.
v1::ArtifactFile SingleObjectFile(const v1::Artifact& artifact, const std::string& bytes) {
  v1::ArtifactFile f;
  f.set_name(ObjectName(artifact.uri()));
  f.set_size_bytes(static_cast<int64_t>(bytes.size()));
  f.set_digest(DigestBytes(bytes, 1).text);
  return f;
}

}  // namespace

absl::Status DescribeArtifact(ArtifactStore& store, v1::Artifact& artifact) {
  artifact.clear_files();
  if (IsSingleObject(artifact)) {
    auto text = store.ReadFile(artifact.uri());
    if (!text.ok()) return text.status();
    *artifact.add_files() = SingleObjectFile(artifact, *text);
    artifact.set_size_bytes(artifact.files(0).size_bytes());
    return absl::OkStatus();
  }
  auto files = store.Files(artifact.uri());
  if (!files.ok()) return files.status();
  int64_t total = 0;
  for (const StoredFile& stored : *files) {
    v1::ArtifactFile* f = artifact.add_files();
    f->set_name(stored.name);
    f->set_size_bytes(stored.size);
    f->set_digest(stored.digest);
    total += stored.size;
  }
  artifact.set_size_bytes(total);
  return absl::OkStatus();
}

absl::Status StreamArtifact(ArtifactStore& store, const v1::Artifact& artifact,
                            const std::string& file,
                            const std::function<bool(const v1::DownloadArtifactResponse&)>& send) {
  if (IsSingleObject(artifact)) {
    // Read once: the header's digest is that of the bytes sent.
    auto text = store.ReadFile(artifact.uri());
    if (!text.ok()) return text.status();
    v1::DownloadArtifactResponse header;
    *header.mutable_file() = SingleObjectFile(artifact, *text);
    if (!file.empty() && file != header.file().name())
      return absl::NotFoundError(absl::StrCat("file: artifact ", artifact.uri(), " has no file \"",
                                              file, "\" (it has ", header.file().name(), ")"));
    if (!send(header) || !SendBytes(*text, send))
      return absl::CancelledError("the client went away");
    return absl::OkStatus();
  }
  v1::Artifact described = artifact;
  if (auto s = DescribeArtifact(store, described); !s.ok()) return s;
  bool found = file.empty();
  for (const v1::ArtifactFile& f : described.files()) {
    if (!file.empty() && f.name() != file) continue;
    found = true;
    v1::DownloadArtifactResponse header;
    *header.mutable_file() = f;
    if (!send(header)) return absl::CancelledError("the client went away");
    // Whole digest chunks: the store verifies each chunk a range covers, so a read of exactly
    // one chunk reads no byte twice.
    for (int64_t offset = 0; offset < f.size_bytes(); offset += kDigestChunkBytes) {
      const int64_t length = std::min(kDigestChunkBytes, f.size_bytes() - offset);
      int64_t size = 0;
      auto bytes = store.ReadArtifactRange(artifact.uri(), f.name(), offset, length, &size);
      if (!bytes.ok()) return bytes.status();
      if (static_cast<int64_t>(bytes->size()) != length)
        return absl::DataLossError(absl::StrCat(artifact.uri(), " file \"", f.name(), "\": read ",
                                                bytes->size(), " bytes at ", offset, ", expected ",
                                                length));
      if (!SendBytes(*bytes, send)) return absl::CancelledError("the client went away");
    }
  }
  if (!found) {
    std::string names;
    for (const v1::ArtifactFile& f : described.files())
      absl::StrAppend(&names, names.empty() ? "" : ", ", f.name());
    return absl::NotFoundError(absl::StrCat("file: artifact ", artifact.uri(), " has no file \"",
                                            file, "\" (it has ", names, ")"));
  }
  return absl::OkStatus();
}

}  // namespace squeeze::coordinator
