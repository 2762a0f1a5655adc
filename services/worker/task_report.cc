#include "services/worker/task_report.h"

namespace squeeze::worker {

void TaskReport::SetProgress(int64_t completed, int64_t total, v1::ProgressUnit unit,
                             const std::string& phase) {
  absl::MutexLock lock(&mu_);
  progress_.set_completed(completed);
  progress_.set_total(total);
  progress_.set_unit(unit);
  progress_.set_phase(phase);
}

void TaskReport::Log(std::string line) {
  absl::MutexLock lock(&mu_);
  log_.push_back(std::move(line));
}

void TaskReport::SetMetric(const std::string& name, double value) {
  absl::MutexLock lock(&mu_);
  metrics_[name] = value;
}

void TaskReport::AddStep() {
  absl::MutexLock lock(&mu_);
  ++steps_;
}

void TaskReport::SetDeviceMemory(double bytes) {
  absl::MutexLock lock(&mu_);
  device_memory_bytes_ = bytes;
}

TaskReport::Snapshot TaskReport::snapshot() const {
  absl::MutexLock lock(&mu_);
  Snapshot s;
  s.completed = progress_.completed();
  s.total = progress_.total();
  s.steps = steps_;
  s.device_memory_bytes = device_memory_bytes_;
  return s;
}

v1::TaskProcessUpdate TaskReport::TakeUpdate() {
  absl::MutexLock lock(&mu_);
  v1::TaskProcessUpdate update;
  *update.mutable_progress() = progress_;
  for (const auto& [k, v] : metrics_) (*update.mutable_metrics())[k] = v;
  for (std::string& line : log_) update.add_log(std::move(line));
  log_.clear();
  update.set_steps(steps_);
  update.set_device_memory_bytes(device_memory_bytes_);
  return update;
}

bool TaskReport::Apply(const v1::TaskProcessUpdate& update) {
  absl::MutexLock lock(&mu_);
  const bool progressed = update.steps() != steps_ ||
                          update.progress().completed() != progress_.completed() ||
                          update.log_size() > 0;
  progress_ = update.progress();
  for (const auto& [k, v] : update.metrics()) metrics_[k] = v;
  for (const std::string& line : update.log()) log_.push_back(line);
  steps_ = update.steps();
  device_memory_bytes_ = update.device_memory_bytes();
  return progressed;
}

void TaskReport::FillHeartbeat(v1::HeartbeatRequest& request) {
  absl::MutexLock lock(&mu_);
  *request.mutable_progress() = progress_;
  for (const auto& [k, v] : metrics_) (*request.mutable_metrics())[k] = v;
  if (device_memory_bytes_ > 0)
    (*request.mutable_metrics())["device_memory_bytes"] = device_memory_bytes_;
  for (std::string& line : log_) request.add_log(std::move(line));
  log_.clear();
}

}  // namespace squeeze::worker
