#include "services/worker/task_runner.h"

#include <chrono>
#include <thread>

#include <google/protobuf/util/json_util.h>

namespace squeeze::worker {

TaskContext::TaskContext(v1::TaskLease lease, ArtifactStore* store, std::string scratch_dir,
                         at::Device device, int64_t step_delay_ms)
    : lease_(std::move(lease)),
      store_(store),
      scratch_dir_(std::move(scratch_dir)),
      device_(device),
      step_delay_ms_(step_delay_ms) {}

ArtifactProvenance TaskContext::provenance() const {
  ArtifactProvenance p;
  p.job_id = lease_.job_id();
  p.stage = lease_.kind();
  // The options as readable JSON in the manifest (every field, defaults included).
  google::protobuf::util::JsonPrintOptions print;
  print.always_print_primitive_fields = true;
  print.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(lease_.stage(), &p.stage_spec, print);
  p.sources = {lease_.inputs().begin(), lease_.inputs().end()};
  return p;
}

absl::Status TaskContext::CheckStep() {
  report_.AddStep();
  if (step_delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(step_delay_ms_));
  if (cancel_) return absl::CancelledError("cancelled by the coordinator");
  return absl::OkStatus();
}

}  // namespace squeeze::worker
