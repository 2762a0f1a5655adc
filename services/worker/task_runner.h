// What a worker runs for one task: a TaskRunner per task kind, given a TaskContext that carries the
// lease, the store, progress reporting and cancellation. Runners check TaskContext::CheckStep() at
// every step boundary (a batch, a layer): that is where cancellation is honoured.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/store/artifact_store.h"
#include "services/worker/task_report.h"
#include "squeeze/v1/worker.pb.h"

namespace squeeze::worker {

class TaskContext {
 public:
  TaskContext(v1::TaskLease lease, ArtifactStore* store, std::string scratch_dir, at::Device device,
              int64_t step_delay_ms);

  const v1::TaskLease& lease() const { return lease_; }
  // The stage's options, as the recipe parser filled them.
  const v1::StageOptions& stage() const { return lease_.stage(); }
  // The job's data files and store root.
  const v1::JobData& data() const { return lease_.data(); }
  // The job's first evaluation, when this task compares against one.
  bool has_baseline() const { return lease_.has_baseline(); }
  const v1::EvaluateResult& baseline() const { return lease_.baseline(); }
  ArtifactStore& store() { return *store_; }
  // Where this task's outputs come from: job, stage, its options and its inputs.
  ArtifactProvenance provenance() const;
  const std::string& scratch_dir() const { return scratch_dir_; }
  at::Device device() const { return device_; }

  void SetProgress(int64_t completed, int64_t total, v1::ProgressUnit unit,
                   const std::string& phase = "") {
    report_.SetProgress(completed, total, unit, phase);
  }
  // A layer-by-layer pass's progress: its unit is layers, and a pass other than the main one
  // ("sensitivity") is the phase.
  void SetLayerProgress(int64_t completed, int64_t total, const std::string& pass) {
    report_.SetProgress(completed, total, v1::PROGRESS_UNIT_LAYERS, pass == "layers" ? "" : pass);
  }
  void Log(std::string line) { report_.Log(std::move(line)); }
  void SetMetric(const std::string& name, double value) { report_.SetMetric(name, value); }
  // Cancelled when the coordinator asked to stop; also where the fault-injection delay applies.
  // Every call is a step boundary, which the worker's stall watchdog counts as progress.
  absl::Status CheckStep();
  void RequestCancel() { cancel_ = true; }
  bool cancelled() const { return cancel_; }

  // What the task has reported, for the worker's heartbeats and metrics.
  TaskReport& report() { return report_; }

 private:
  v1::TaskLease lease_;
  ArtifactStore* store_;
  std::string scratch_dir_;
  at::Device device_;
  int64_t step_delay_ms_;
  std::atomic<bool> cancel_{false};
  TaskReport report_;
};

struct TaskOutput {
  std::map<std::string, std::string> outputs;  // artifact name -> store URI
  v1::StageResult result;                      // the runner's message in the oneof
};

class TaskRunner {
 public:
  virtual ~TaskRunner() = default;
  virtual absl::StatusOr<TaskOutput> Run(TaskContext& context) = 0;
};

// The runners this build has, by task kind ("evaluate", "quantize"). Each task runs in a process
// of its own (task_process.h), so a runner may block or crash without taking the worker along.
std::map<std::string, std::unique_ptr<TaskRunner>> MakeRunners();

}  // namespace squeeze::worker
