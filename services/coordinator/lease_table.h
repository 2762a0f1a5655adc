// Workers and the tasks they hold: registration, gang selection (a task of world size N goes to N
// waiting workers at once or not at all), lease deadlines and their expiry, attempt timing, and the
// per-tenant GPU limit. Not locked itself: the scheduler owns one behind its mutex.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "services/coordinator/job_table.h"
#include "squeeze/v1/state.pb.h"
#include "squeeze/v1/worker.pb.h"

namespace squeeze::coordinator {

struct WorkerInfo {
  v1::RegisterWorkerRequest registration;
  int gpus = 0;
  std::set<std::string> capabilities;
  std::string current_task;               // task id while leased
  bool waiting = false;                   // inside a Lease long poll now
  std::optional<v1::TaskLease> assigned;  // a gang rank handed over while it waits
  int64_t last_seen_ms = 0;
  // The current attempt's "tokens" counter at its last heartbeat: metrics count what it grew by.
  double tokens_reported = 0.0;
};

class LeaseTable {
 public:
  explicit LeaseTable(int tenant_gpu_limit) : tenant_gpu_limit_(tenant_gpu_limit) {}

  // Adds or refreshes a worker. A worker that re-registers after a coordinator restart may still
  // run a task recorded in `jobs`: it keeps it.
  WorkerInfo& Register(const std::string& worker_id, const v1::RegisterWorkerRequest& request,
                       const JobTable& jobs, int64_t now_ms);
  WorkerInfo* Find(const std::string& worker_id);
  const std::map<std::string, WorkerInfo>& workers() const { return workers_; }

  // The workers that would run `t` now, `worker_id` as rank 0 and the others among those waiting
  // for work; nullopt when `worker_id` cannot run it or the gang is not complete.
  std::optional<std::vector<std::string>> PickGang(const std::string& worker_id,
                                                   const v1::TaskRecord& t) const;
  // False when leasing `t` would take `tenant` over its GPU limit.
  bool WithinTenantLimit(const std::string& tenant, const v1::TaskRecord& t, JobTable& jobs) const;

  // Records that `ranks` now run `t` (leased at `now_ms`); ranks after the first get their lease
  // handed over through `assigned`.
  void Hold(const v1::TaskRecord& t, const std::vector<std::string>& ranks,
            std::vector<v1::TaskLease> later_ranks, int64_t now_ms);
  // A task that was running when the coordinator restarted: its lease may expire.
  void Adopt(const std::string& task_id) { running_.insert(task_id); }
  // Frees the workers of `t`.
  void Release(const v1::TaskRecord& t);
  // Seconds since `t`'s current attempt was leased (0 when unknown); forgets the attempt.
  double EndAttempt(const std::string& task_id, int64_t now_ms);
  // Running tasks whose lease deadline is before `now_ms`. Tasks that stopped running are
  // forgotten.
  std::vector<JobTable::TaskRef> Expired(JobTable& jobs, int64_t now_ms);

 private:
  bool CanRun(const WorkerInfo& w, const v1::TaskRecord& t) const;

  const int tenant_gpu_limit_;
  std::map<std::string, WorkerInfo> workers_;
  std::set<std::string> running_;                      // task ids leased now: what may expire
  std::map<std::string, int64_t> attempt_started_ms_;  // by task id
};

// The lease a worker gets for rank `rank` of `t`, with the job's baseline evaluation when the
// stage compares against one.
v1::TaskLease BuildTaskLease(const v1::JobRecord& r, const v1::TaskRecord& t, int rank,
                             const std::string& rendezvous_address);

}  // namespace squeeze::coordinator
