// The coordinator's core: jobs planned as tasks, leased to workers, retried, cancelled. It runs the
// planner's task graph with no branch on stage kind and keeps its state in three parts behind one
// mutex: the JobTable (records, events, durable commits), the LeaseTable (workers, gangs, expiry,
// tenant limits) and the JobFinalizer (reports, checkpoint release). Every state change passes the
// transition table (state_transitions.h) and is committed to the StateStore before the call
// returns, so a coordinator killed at any point restarts (Recover) with nothing lost and nothing
// acknowledged twice. gRPC handlers are thin wrappers over these methods.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/recipe/recipe.h"
#include "common/store/artifact_store.h"
#include "services/coordinator/job_finalizer.h"
#include "services/coordinator/job_table.h"
#include "services/coordinator/lease_table.h"
#include "services/coordinator/state_store.h"
#include "squeeze/v1/jobs.pb.h"
#include "squeeze/v1/worker.pb.h"

namespace squeeze::coordinator {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() = 0;  // unix milliseconds
};
Clock* SystemClock();

struct SchedulerOptions {
  int64_t lease_timeout_ms = 15000;
  int64_t heartbeat_interval_ms = 1000;
  int64_t retry_backoff_base_ms = 1000;  // doubled per attempt
  int64_t retry_backoff_max_ms = 60000;
  int tenant_gpu_limit = 0;          // GPUs one tenant may hold at once; 0: no limit
  std::string store_root;            // e.g. file:///var/lib/squeeze/store
  int64_t max_page_bytes = 8 << 20;  // ListJobs pages stay under this (half the message limit)
};

// Told what the scheduler does, for metrics. Called with the scheduler's lock held: it must be
// cheap and must not call back into the scheduler.
class SchedulerObserver {
 public:
  virtual ~SchedulerObserver() = default;
  virtual void OnJobSubmitted() = 0;
  virtual void OnJobStarted(double queue_wait_seconds) = 0;
  virtual void OnJobFinished(v1::JobState state, double seconds) = 0;
  // An attempt of a task ended: "succeeded", "failed", "retried" or "cancelled".
  virtual void OnAttemptFinished(const std::string& kind, const std::string& result,
                                 double seconds) = 0;
  virtual void OnLeaseExpired() = 0;
  // A running stage reported `tokens` more tokens processed (its heartbeats' "tokens" counter).
  virtual void OnTokens(const std::string& kind, double tokens) = 0;
};

class JobScheduler {
 public:
  JobScheduler(StateStore* state, ArtifactStore* artifacts, Clock* clock, SchedulerOptions options);

  // Loads every job from the state store. Leases in flight get a fresh deadline so that their
  // workers can heartbeat again (or expire normally if they are gone).
  absl::Status Recover();

  // Jobs.
  absl::StatusOr<v1::SubmitJobResponse> Submit(const v1::SubmitJobRequest& request,
                                               const Recipe& recipe);
  absl::StatusOr<v1::Job> Get(const std::string& job_id);
  absl::StatusOr<v1::ListJobsResponse> List(const v1::ListJobsRequest& request);
  absl::StatusOr<v1::Job> Cancel(const std::string& job_id);
  absl::StatusOr<v1::ListArtifactsResponse> Artifacts(const std::string& job_id);
  // Events of `job_id` after `after_sequence`, waiting up to `wait_ms` for one. `done` is set once
  // the job is finished and every event has been returned.
  absl::StatusOr<std::vector<v1::JobEvent>> Events(const std::string& job_id,
                                                   int64_t after_sequence, int64_t wait_ms,
                                                   bool* done);

  // Workers.
  v1::RegisterWorkerResponse Register(const v1::RegisterWorkerRequest& request);
  // Long poll: a lease, or nullopt after `wait_ms`.
  absl::StatusOr<std::optional<v1::TaskLease>> Lease(const std::string& worker_id, int64_t wait_ms);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& request);
  absl::Status Complete(const v1::CompleteTaskRequest& request);
  absl::Status Fail(const v1::FailTaskRequest& request);

  // Returns tasks whose lease deadline passed to the queue (or fails them); returns how many.
  int ExpireLeases();
  // Deletes the checkpoints of jobs that ended FAILED or CANCELLED (nothing will resume from
  // them), outside the lock; returns how many jobs' checkpoints were released. Called
  // periodically, beside ExpireLeases.
  int ReleaseCheckpoints();
  // Wakes every waiting call (shutdown).
  void Shutdown();

  // Must be set before the scheduler serves calls; not owned.
  void SetObserver(SchedulerObserver* observer) { observer_ = observer; }

  // Counts for tests and metrics.
  struct RunningTask {
    std::string kind;
    double progress = 0.0;  // completed / total, 0 when unknown
  };
  struct Stats {
    int64_t jobs_by_state[6] = {};
    int64_t leased_tasks = 0;
    int64_t queued_tasks = 0;
    int64_t workers = 0;
    int64_t gpus = 0;
    double max_heartbeat_age_seconds = 0.0;  // over workers running a task
    std::vector<RunningTask> running;
  };
  Stats GetStats();
  // State changes the transition table refused (state_transitions.h); always 0 unless a bug.
  int64_t illegal_moves() const;

 private:
  int64_t Now() { return clock_->NowMs(); }
  void PlanOlderRecord(v1::JobRecord& r) const;
  v1::Job PublicView(const v1::JobRecord& r) const;
  // Appends an event to the job's log (and, when durable, to the next commit); wakes watchers.
  void AddEvent(v1::JobRecord& r, v1::JobEvent event, bool durable)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddTaskEvent(v1::JobRecord& r, const v1::TaskRecord& t, const std::string& message,
                    bool durable) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetJobState(v1::JobRecord& r, v1::JobState state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Every state change goes through these two: the table decides, a refusal is counted and
  // logged, and the state stays as it was. True when the move was made.
  bool MoveTaskOrCount(v1::Task& task, v1::TaskState to) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool MoveJobOrCount(v1::Job& job, v1::JobState to) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes task `index` runnable: resolves its inputs from earlier tasks' outputs.
  void MakeRunnable(v1::JobRecord& r, int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Task finished well: starts the next one; true when none is left (finalize the job).
  bool AdvanceJob(v1::JobRecord& r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes the report (unlocking around the I/O) and marks the job SUCCEEDED.
  void FinalizeJob(const std::string& job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the current attempt of `t` unsuccessfully: retry with backoff, fail, or cancel.
  void EndAttempt(v1::JobRecord& r, v1::TaskRecord& t, const std::string& error, int code,
                  bool retryable, bool cancelled) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishJob(v1::JobRecord& r, v1::JobState state, const std::string& error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseWorkers(const v1::TaskRecord& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reports the end of `t`'s current attempt to the observer.
  void NoteAttemptFinished(const v1::TaskRecord& t, const std::string& result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tries to lease a task to `worker_id` (and, for gangs, to other waiting workers).
  std::optional<v1::TaskLease> TryLease(const std::string& worker_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Clock* const clock_;
  const SchedulerOptions options_;
  const JobFinalizer finalizer_;
  SchedulerObserver* observer_ = nullptr;

  mutable absl::Mutex mu_;
  // Lease waiters wait for work (a task became runnable, a worker was freed, a gang rank was
  // assigned); watchers wait for events. Separate, so that progress events do not wake every
  // idle worker.
  absl::CondVar work_cv_;
  absl::CondVar events_cv_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  JobTable jobs_ ABSL_GUARDED_BY(mu_);
  LeaseTable leases_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> finalizing_ ABSL_GUARDED_BY(mu_);              // writing their report now
  std::set<std::string> unreleased_checkpoints_ ABSL_GUARDED_BY(mu_);  // job ids
  int64_t illegal_moves_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace squeeze::coordinator
