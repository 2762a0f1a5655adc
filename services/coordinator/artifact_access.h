// What the job API tells and serves of a job's artifacts: their files and sizes for
// ListArtifacts, and their verified bytes for DownloadArtifact. Clients need no access to the
// store (its bucket credentials stay with the service).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "common/store/artifact_store.h"
#include "squeeze/v1/jobs.pb.h"

namespace squeeze::coordinator {

// The largest piece of a file one DownloadArtifactResponse carries: well under gRPC's default
// 4 MiB message limit, so any client reads the stream with default settings.
inline constexpr int64_t kDownloadPieceBytes = int64_t{1} << 20;

// Fills `artifact`'s files (name, size, digest) and total size from its manifest; a report, a
// single object, is one file named after the object.
absl::Status DescribeArtifact(ArtifactStore& store, v1::Artifact& artifact);

// Sends `file` of `artifact` (every file when empty, in manifest order): a header, then its
// bytes in pieces of at most kDownloadPieceBytes. Bytes are read in the store's 16 MiB digest
// chunks and verified before they are sent. `send` returns false when the client has gone,
// which ends the stream with CANCELLED.
absl::Status StreamArtifact(ArtifactStore& store, const v1::Artifact& artifact,
                            const std::string& file,
                            const std::function<bool(const v1::DownloadArtifactResponse&)>& send);

}  // namespace squeeze::coordinator
