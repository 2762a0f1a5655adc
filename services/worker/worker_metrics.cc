#include "services/worker/worker_metrics.h"

#include "common/metrics/gauge_family.h"

namespace squeeze::worker {
WorkerMetrics::WorkerMetrics(prometheus::Registry& registry, std::string device)
    : device_(std::move(device)),
      tasks_(prometheus::BuildCounter()
                 .Name("squeeze_worker_tasks_total")
                 .Help("Task attempts this worker finished, by stage kind and result.")
                 .Register(registry)),
      tokens_(prometheus::BuildCounter()
                  .Name("squeeze_worker_tokens_total")
                  .Help("Tokens this worker's tasks processed, by stage kind; rate() of it is "
                        "the throughput.")
                  .Register(registry)),
      store_(registry) {}

void WorkerMetrics::SetCurrent(const TaskReport* report, const std::string& kind) {
  absl::MutexLock lock(&mu_);
  current_ = report;
  current_kind_ = kind;
  last_counters_.clear();  // a new task process counts from zero
  last_tokens_ = 0.0;
}

void WorkerMetrics::AddTaskCounters(const v1::TaskProcessUpdate& update) {
  absl::MutexLock lock(&mu_);
  for (const v1::CounterSample& sample : update.counters()) {
    prometheus::Family<prometheus::Counter>* family = store_.ByName(sample.name());
    auto op = sample.labels().find("operation");
    if (family == nullptr || op == sample.labels().end()) continue;
    double& last = last_counters_[{sample.name(), op->second}];
    if (sample.value() > last)
      family->Add({{"operation", op->second}}).Increment(sample.value() - last);
    last = sample.value();
  }
  auto tokens = update.metrics().find("tokens");
  if (tokens != update.metrics().end() && tokens->second > last_tokens_) {
    tokens_.Add({{"kind", current_kind_}}).Increment(tokens->second - last_tokens_);
    last_tokens_ = tokens->second;
  }
}

void WorkerMetrics::TaskFinished(const std::string& kind, const std::string& result) {
  tasks_.Add({{"kind", kind}, {"result", result}}).Increment();
}

std::vector<prometheus::MetricFamily> WorkerMetrics::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  absl::MutexLock lock(&mu_);
  out.push_back(OneGauge("squeeze_worker_busy", "1 while this worker runs a task.",
                         current_ != nullptr ? 1.0 : 0.0));
  double device_bytes = 0;
  if (current_ != nullptr) {
    const TaskReport::Snapshot s = current_->snapshot();
    out.push_back(OneGauge("squeeze_worker_task_progress_ratio",
                           "Progress (completed / total) of the running task, by stage kind.",
                           s.total > 0 ? static_cast<double>(s.completed) / s.total : 0.0,
                           {{"kind", current_kind_}}));
    device_bytes = s.device_memory_bytes;
  }
  out.push_back(
      OneGauge("squeeze_worker_device_memory_bytes",
               "Device (GPU) memory held by the running task's tensors; 0 on CPU or idle.",
               device_bytes, {{"device", device_}}));
  return out;
}

}  // namespace squeeze::worker
