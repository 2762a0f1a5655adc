// A worker's Prometheus metrics: tasks finished by kind and result and tokens processed by kind
// (counted), and, read at scrape time, whether it is busy, the running task's progress and the
// device memory it holds. Its tasks run in processes of their own: their store counters are added
// here as they report them.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/registry.h>

#include <map>
#include <string>
#include <utility>
#include "absl/synchronization/mutex.h"

#include "absl/base/thread_annotations.h"
#include "common/metrics/store_metrics.h"
#include "services/worker/task_report.h"

namespace squeeze::worker {

class WorkerMetrics : public prometheus::Collectable {
 public:
  WorkerMetrics(prometheus::Registry& registry, std::string device);

  // The report of the task now running, of that kind (nullptr when idle); it must stay alive
  // until cleared.
  void SetCurrent(const TaskReport* report, const std::string& kind);
  void TaskFinished(const std::string& kind, const std::string& result);
  // Adds what the running task's store counters grew by since its last update.
  void AddTaskCounters(const v1::TaskProcessUpdate& update);

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::string device_;
  prometheus::Family<prometheus::Counter>& tasks_;
  prometheus::Family<prometheus::Counter>& tokens_;
  StoreCounterFamilies store_;
  mutable absl::Mutex mu_;
  const TaskReport* current_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::string current_kind_ ABSL_GUARDED_BY(mu_);
  // The running task's counters as last reported, by (metric, operation).
  std::map<std::pair<std::string, std::string>, double> last_counters_ ABSL_GUARDED_BY(mu_);
  double last_tokens_ ABSL_GUARDED_BY(mu_) = 0.0;  // its "tokens" metric as last reported
};

}  // namespace squeeze::worker
