// The end of a job: its report (report.json, and report.html rendered from it) written to the
// store, and the checkpoints of a job that will not resume deleted. The I/O here runs outside the
// scheduler's lock; the scheduler records the outcome.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/store/artifact_store.h"
#include "squeeze/v1/state.pb.h"

namespace squeeze::coordinator {

// report.json of a job whose stages all finished: each stage's kind, attempts and typed result
// (or the JSON result of a record written before results were typed), and the final model.
std::string BuildJobReport(const v1::JobRecord& r);

// The checkpoints a job's tasks left behind.
std::vector<std::string> CheckpointUris(const v1::JobRecord& r);

class JobFinalizer {
 public:
  JobFinalizer(ArtifactStore* artifacts, std::string store_root)
      : artifacts_(artifacts), store_root_(std::move(store_root)) {}

  // Writes `report` (from BuildJobReport) and its HTML page under the job's folder; returns the
  // two artifacts to record.
  absl::StatusOr<std::vector<v1::Artifact>> WriteReport(const std::string& job_id,
                                                        const std::string& report) const;
  // Deletes every one of `uris`; a missing one is already deleted. Idempotent.
  absl::Status DeleteCheckpoints(const std::vector<std::string>& uris) const;

 private:
  ArtifactStore* const artifacts_;
  const std::string store_root_;
};

}  // namespace squeeze::coordinator
