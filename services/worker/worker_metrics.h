// A worker's Prometheus metrics: tasks finished by kind and result (counted), and, read at scrape
// time, whether it is busy, the running task's progress and tokens/s (by kind) and the device
// memory it holds.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

#include <mutex>
#include <string>

#include "absl/base/thread_annotations.h"
#include "services/worker/task_runner.h"

namespace squeeze::worker {

class WorkerMetrics : public prometheus::Collectable {
 public:
  WorkerMetrics(prometheus::Registry& registry, std::string device);

  // The task now running (nullptr when idle); it must stay alive until cleared.
  void SetCurrent(TaskContext* context);
  void TaskFinished(const std::string& kind, const std::string& result);

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::string device_;
  prometheus::Family<prometheus::Counter>& tasks_;
  mutable std::mutex mu_;
  TaskContext* current_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace squeeze::worker
