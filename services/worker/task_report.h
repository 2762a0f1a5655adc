// What a running task has reported: progress, metrics, log lines not yet sent, step boundaries
// passed and the device memory it holds. The task's process fills one through its TaskContext;
// the worker keeps a mirror of it, fed from the task process's updates, for heartbeats, metrics
// and the stall watchdog.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>
#include "absl/synchronization/mutex.h"

#include "absl/base/thread_annotations.h"
#include "squeeze/v1/task_process.pb.h"
#include "squeeze/v1/worker.pb.h"

namespace squeeze::worker {

class TaskReport {
 public:
  // `phase` says, for people, what is being counted when a task counts in phases.
  void SetProgress(int64_t completed, int64_t total, v1::ProgressUnit unit,
                   const std::string& phase);
  void Log(std::string line);
  void SetMetric(const std::string& name, double value);
  void AddStep();
  void SetDeviceMemory(double bytes);

  struct Snapshot {
    int64_t completed = 0, total = 0;
    int64_t steps = 0;
    double device_memory_bytes = 0.0;
  };
  Snapshot snapshot() const;

  // The task process's side: everything, and the log lines since the last call.
  v1::TaskProcessUpdate TakeUpdate();
  // The worker's side: applies an update from the task process. True when it shows progress (a
  // step boundary, a changed progress count or a log line), which is what the watchdog watches.
  bool Apply(const v1::TaskProcessUpdate& update);

  // For the heartbeat: the latest progress and metrics, and the log lines not yet sent.
  void FillHeartbeat(v1::HeartbeatRequest& request);

 private:
  mutable absl::Mutex mu_;
  v1::Progress progress_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, double> metrics_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> log_ ABSL_GUARDED_BY(mu_);
  int64_t steps_ ABSL_GUARDED_BY(mu_) = 0;
  double device_memory_bytes_ ABSL_GUARDED_BY(mu_) = 0.0;
};

}  // namespace squeeze::worker
