#include "services/worker/task_runner.h"

#include <chrono>
#include <thread>

#include "services/worker/runners.h"

namespace squeeze::worker {

TaskContext::TaskContext(v1::TaskLease lease, ArtifactStore* store, std::string scratch_dir,
                         at::Device device, int64_t step_delay_ms)
    : lease_(std::move(lease)),
      spec_(nlohmann::json::parse(lease_.spec_json(), nullptr, false)),
      store_(store),
      scratch_dir_(std::move(scratch_dir)),
      device_(device),
      step_delay_ms_(step_delay_ms) {
  if (spec_.is_discarded()) spec_ = nlohmann::json::object();
}

ArtifactProvenance TaskContext::provenance() const {
  ArtifactProvenance p;
  p.job_id = lease_.job_id();
  p.stage = lease_.kind();
  p.stage_spec = lease_.spec_json();
  p.sources = {lease_.inputs().begin(), lease_.inputs().end()};
  return p;
}

TaskContext::Snapshot TaskContext::snapshot() {
  std::lock_guard<std::mutex> lock(mu_);
  Snapshot s;
  s.completed = progress_.completed();
  s.total = progress_.total();
  auto it = metrics_.find("tokens_per_second");
  if (it != metrics_.end()) s.tokens_per_second = it->second;
  return s;
}

void TaskContext::SetProgress(int64_t completed, int64_t total, const std::string& unit) {
  std::lock_guard<std::mutex> lock(mu_);
  progress_.set_completed(completed);
  progress_.set_total(total);
  progress_.set_unit(unit);
}

void TaskContext::Log(std::string line) {
  std::lock_guard<std::mutex> lock(mu_);
  log_.push_back(std::move(line));
}

void TaskContext::SetMetric(const std::string& name, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  metrics_[name] = value;
}

absl::Status TaskContext::CheckStep() {
  if (step_delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(step_delay_ms_));
  if (cancel_) return absl::CancelledError("cancelled by the coordinator");
  return absl::OkStatus();
}

void TaskContext::FillHeartbeat(v1::HeartbeatRequest& request) {
  std::lock_guard<std::mutex> lock(mu_);
  *request.mutable_progress() = progress_;
  for (const auto& [k, v] : metrics_) (*request.mutable_metrics())[k] = v;
  for (std::string& line : log_) request.add_log(std::move(line));
  log_.clear();
}

std::map<std::string, std::unique_ptr<TaskRunner>> MakeRunners() {
  std::map<std::string, std::unique_ptr<TaskRunner>> runners;
  runners["calibrate"] = std::make_unique<CalibrateRunner>();
  runners["distill"] = std::make_unique<DistillRunner>();
  runners["evaluate"] = std::make_unique<EvaluateRunner>();
  runners["prune"] = std::make_unique<PruneRunner>();
  runners["quantize"] = std::make_unique<QuantizeRunner>();
  return runners;
}

}  // namespace squeeze::worker
