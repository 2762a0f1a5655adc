#include "services/coordinator/lease_table.h"

#include <google/protobuf/util/json_util.h>

namespace squeeze::coordinator {

WorkerInfo& LeaseTable::Register(const std::string& worker_id,
                                 const v1::RegisterWorkerRequest& request, const JobTable& jobs,
                                 int64_t now_ms) {
  WorkerInfo& w = workers_[worker_id];
  w.registration = request;
  w.gpus = 0;
  for (const v1::Device& d : request.devices()) w.gpus += d.name().rfind("cuda", 0) == 0 ? 1 : 0;
  w.capabilities = {request.capabilities().begin(), request.capabilities().end()};
  w.last_seen_ms = now_ms;
  for (const auto& [job_id, r] : jobs.jobs()) {
    for (const v1::TaskRecord& t : r->tasks()) {
      if (t.task().state() != v1::TASK_RUNNING) continue;
      for (const std::string& lw : t.lease_workers()) {
        if (lw == worker_id) w.current_task = t.task().id();
      }
    }
  }
  return w;
}

WorkerInfo* LeaseTable::Find(const std::string& worker_id) {
  auto it = workers_.find(worker_id);
  return it == workers_.end() ? nullptr : &it->second;
}

bool LeaseTable::CanRun(const WorkerInfo& w, const v1::TaskRecord& t) const {
  return w.current_task.empty() && w.gpus >= t.gpus() && w.capabilities.count(t.task().kind());
}

std::optional<std::vector<std::string>> LeaseTable::PickGang(const std::string& worker_id,
                                                             const v1::TaskRecord& t) const {
  if (!CanRun(workers_.at(worker_id), t)) return std::nullopt;
  std::vector<std::string> ranks = {worker_id};
  for (const auto& [id, w] : workers_) {
    if (static_cast<int>(ranks.size()) >= t.world_size()) break;
    if (id != worker_id && w.waiting && !w.assigned && CanRun(w, t)) ranks.push_back(id);
  }
  if (static_cast<int>(ranks.size()) < t.world_size()) return std::nullopt;
  return ranks;
}

bool LeaseTable::WithinTenantLimit(const std::string& tenant, const v1::TaskRecord& t,
                                   JobTable& jobs) const {
  if (tenant_gpu_limit_ <= 0 || t.gpus() <= 0) return true;
  int used = 0;
  for (const v1::JobRecord* r : jobs.ActiveInOrder()) {
    if (r->job().tenant() != tenant) continue;
    for (const v1::TaskRecord& other : r->tasks()) {
      if (other.task().state() == v1::TASK_RUNNING) used += other.gpus() * other.world_size();
    }
  }
  return used + t.gpus() * t.world_size() <= tenant_gpu_limit_;
}

void LeaseTable::Hold(const v1::TaskRecord& t, const std::vector<std::string>& ranks,
                      std::vector<v1::TaskLease> later_ranks, int64_t now_ms) {
  for (size_t rank = 0; rank < ranks.size(); ++rank) {
    WorkerInfo& w = workers_.at(ranks[rank]);
    w.current_task = t.task().id();
    if (rank > 0) w.assigned = std::move(later_ranks.at(rank - 1));
  }
  running_.insert(t.task().id());
  attempt_started_ms_[t.task().id()] = now_ms;
}

void LeaseTable::Release(const v1::TaskRecord& t) {
  for (const std::string& id : t.lease_workers()) {
    auto it = workers_.find(id);
    if (it != workers_.end() && it->second.current_task == t.task().id()) {
      it->second.current_task.clear();
      it->second.assigned.reset();
    }
  }
  running_.erase(t.task().id());
}

double LeaseTable::EndAttempt(const std::string& task_id, int64_t now_ms) {
  auto it = attempt_started_ms_.find(task_id);
  if (it == attempt_started_ms_.end()) return 0.0;
  const double seconds = (now_ms - it->second) / 1000.0;
  attempt_started_ms_.erase(it);
  return seconds;
}

std::vector<JobTable::TaskRef> LeaseTable::Expired(JobTable& jobs, int64_t now_ms) {
  std::vector<JobTable::TaskRef> out;
  for (auto it = running_.begin(); it != running_.end();) {
    auto ref = jobs.FindTask(*it);
    if (!ref || ref->task->task().state() != v1::TASK_RUNNING) {
      it = running_.erase(it);
      continue;
    }
    if (ref->task->lease_deadline_unix_ms() <= now_ms) out.push_back(*ref);
    ++it;
  }
  return out;
}

v1::TaskLease BuildTaskLease(const v1::JobRecord& r, const v1::TaskRecord& t, int rank,
                             const std::string& rendezvous_address) {
  v1::TaskLease lease;
  lease.set_job_id(r.job().id());
  lease.set_task_id(t.task().id());
  lease.set_attempt(t.task().attempts());
  lease.set_kind(t.task().kind());
  *lease.mutable_stage() = t.stage();
  *lease.mutable_data() = t.data();
  // Later stages compare against the job's first evaluation: hand them its result.
  if (t.baseline_task() >= 0) {
    const v1::TaskRecord& base = r.tasks(t.baseline_task());
    if (base.task().result().has_evaluate()) {
      *lease.mutable_baseline() = base.task().result().evaluate();
    } else if (!base.result_json().empty()) {
      // Finished before results were typed: its JSON has the same field names.
      google::protobuf::util::JsonParseOptions lenient;
      lenient.ignore_unknown_fields = true;
      if (!google::protobuf::util::JsonStringToMessage(base.result_json(), lease.mutable_baseline(),
                                                       lenient)
               .ok())
        lease.clear_baseline();
    }
  }
  for (const auto& [k, v] : t.inputs()) (*lease.mutable_inputs())[k] = v;
  lease.set_output_uri(t.output_uri());
  lease.set_checkpoint_uri(t.checkpoint_uri());
  lease.set_rank(rank);
  lease.set_world_size(t.world_size());
  if (t.world_size() > 1) lease.set_rendezvous_address(rendezvous_address);
  lease.set_lease_deadline_unix_ms(t.lease_deadline_unix_ms());
  lease.set_timeout_ms(t.timeout_ms());
  return lease;
}

}  // namespace squeeze::coordinator
