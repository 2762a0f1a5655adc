// The client side of the JobService for squeezectl: calls, and the live rendering of WatchJob.
#pragma once

#include <grpcpp/grpcpp.h>

#include <iosfwd>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "squeeze/v1/jobs.grpc.pb.h"

namespace squeeze::cli {

class JobClient {
 public:
  // A plaintext channel without credentials (the embedded coordinator).
  explicit JobClient(const std::string& address);
  explicit JobClient(std::shared_ptr<grpc::Channel> channel);
  v1::JobService::Stub& stub() { return *stub_; }

  // Follows the job's events until it finishes, rendering them on `out` (a live progress bar per
  // stage when `tty`, plain lines otherwise; JSON lines when `json`). Returns the final job.
  absl::StatusOr<v1::Job> Watch(const std::string& job_id, std::ostream& out, bool tty, bool json);

 private:
  std::unique_ptr<v1::JobService::Stub> stub_;
};

absl::Status FromGrpc(const class grpc::Status& status);
std::string JobStateName(v1::JobState state);
// A one-screen summary of a job: state, stages, error.
std::string DescribeJob(const v1::Job& job);
// The report (report.json) rendered as a table.
std::string DescribeReport(const std::string& report_json);

// Submits the recipe file; errors name the file. `created` is false for a repeated request id.
// With `data_store` (the coordinator's store root), the recipe's local data files are uploaded
// there first and the recipe names their copies.
absl::StatusOr<v1::Job> SubmitRecipe(JobClient& client, const std::string& recipe_path,
                                     const std::string& request_id, const std::string& tenant,
                                     int priority, bool* created,
                                     const std::string& data_store = "");
// Copies the job's final model (into DIR/model) and report.json (into DIR).
absl::Status CopyJobOutputs(const v1::Job& job, JobClient& client, const std::string& dir);
// The exit code for a finished job (0 only for SUCCEEDED), printing why otherwise.
int FinishWithJob(const absl::StatusOr<v1::Job>& job, bool json);

}  // namespace squeeze::cli
