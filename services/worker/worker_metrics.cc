#include "services/worker/worker_metrics.h"

#include "common/metrics/gauge_family.h"

#ifdef SQUEEZE_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace squeeze::worker {
namespace {}  // namespace

WorkerMetrics::WorkerMetrics(prometheus::Registry& registry, std::string device)
    : device_(std::move(device)),
      tasks_(prometheus::BuildCounter()
                 .Name("squeeze_worker_tasks_total")
                 .Help("Task attempts this worker finished, by stage kind and result.")
                 .Register(registry)) {}

void WorkerMetrics::SetCurrent(TaskContext* context) {
  std::lock_guard<std::mutex> lock(mu_);
  current_ = context;
}

void WorkerMetrics::TaskFinished(const std::string& kind, const std::string& result) {
  tasks_.Add({{"kind", kind}, {"result", result}}).Increment();
}

std::vector<prometheus::MetricFamily> WorkerMetrics::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  std::lock_guard<std::mutex> lock(mu_);
  out.push_back(OneGauge("squeeze_worker_busy", "1 while this worker runs a task.",
                         current_ != nullptr ? 1.0 : 0.0));
  if (current_ != nullptr) {
    const TaskContext::Snapshot s = current_->snapshot();
    const std::string kind = current_->lease().kind();
    out.push_back(OneGauge("squeeze_worker_task_progress_ratio",
                           "Progress (completed / total) of the running task, by stage kind.",
                           s.total > 0 ? static_cast<double>(s.completed) / s.total : 0.0,
                           {{"kind", kind}}));
    out.push_back(OneGauge("squeeze_worker_tokens_per_second",
                           "Tokens per second of the running task, by stage kind.",
                           s.tokens_per_second, {{"kind", kind}}));
  }
  double device_bytes = 0;
#ifdef SQUEEZE_HAS_CUDA
  if (device_.rfind("cuda", 0) == 0) {
    const int index = device_.size() > 5 ? std::stoi(device_.substr(5)) : 0;
    device_bytes = static_cast<double>(
        c10::cuda::CUDACachingAllocator::getDeviceStats(index).allocated_bytes[0].current);
  }
#endif
  out.push_back(OneGauge("squeeze_worker_device_memory_bytes",
                         "Device (GPU) memory held by this worker's tensors; 0 on CPU.",
                         device_bytes, {{"device", device_}}));
  return out;
}

}  // namespace squeeze::worker
