#include "services/coordinator/job_scheduler.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <random>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/base/log.h"
#include "google/protobuf/util/time_util.h"
#include "services/coordinator/job_planner.h"
#include "services/coordinator/state_transitions.h"

namespace squeeze::coordinator {
namespace {

class RealClock : public Clock {
 public:
  int64_t NowMs() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

std::string RandomId(const char* prefix) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  char buf[17];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(rng()));
  return absl::StrCat(prefix, buf);
}

using google::protobuf::util::TimeUtil;

// A running task's live figures from a heartbeat. The ETA is the runner's own when it gives one
// (training knows its step rate), otherwise the rate at which this attempt has moved progress.
v1::TaskMetrics LiveMetrics(const v1::TaskRecord& t, const v1::HeartbeatRequest& request,
                            int64_t now_ms) {
  v1::TaskMetrics m;
  auto metric = [&](const char* name) -> std::optional<double> {
    auto it = request.metrics().find(name);
    if (it == request.metrics().end()) return std::nullopt;
    return it->second;
  };
  m.set_tokens_per_second(metric("tokens_per_second").value_or(0.0));
  if (auto loss = metric("loss")) m.set_loss(*loss);
  m.set_device_memory_bytes(static_cast<int64_t>(metric("device_memory_bytes").value_or(0.0)));
  *m.mutable_update_time() = TimeUtil::MillisecondsToTimestamp(now_ms);
  const int64_t elapsed_ms =
      t.task().has_start_time()
          ? std::max<int64_t>(0, now_ms - TimeUtil::TimestampToMilliseconds(t.task().start_time()))
          : 0;
  *m.mutable_elapsed() = TimeUtil::MillisecondsToDuration(elapsed_ms);
  const v1::Progress& p = request.progress();
  const int64_t moved = p.completed() - t.attempt_start_completed();
  if (auto eta = metric("eta_seconds"); eta && *eta >= 0) {
    *m.mutable_eta() = TimeUtil::MillisecondsToDuration(static_cast<int64_t>(*eta * 1000));
  } else if (moved > 0 && p.total() >= p.completed()) {
    const double per_unit = static_cast<double>(elapsed_ms) / moved;
    *m.mutable_eta() = TimeUtil::MillisecondsToDuration(
        static_cast<int64_t>(per_unit * static_cast<double>(p.total() - p.completed())));
  }
  return m;
}

bool AllTasksSucceeded(const v1::JobRecord& r) {
  for (const v1::TaskRecord& t : r.tasks()) {
    if (t.task().state() != v1::TASK_SUCCEEDED) return false;
  }
  return r.tasks_size() > 0;
}

// ListJobs' page token (AIP-158): opaque to clients, and bound to the filter it was issued for,
// so that a token is never read against another filter's results.
std::string PageToken(int64_t after, const v1::ListJobsRequest& request) {
  return absl::WebSafeBase64Escape(
      absl::StrCat(after, "\n", static_cast<int>(request.state()), "\n", request.tenant()));
}

absl::StatusOr<int64_t> ParsePageToken(const v1::ListJobsRequest& request) {
  if (request.page_token().empty()) return 0;
  std::string text;
  int64_t after = 0;
  if (!absl::WebSafeBase64Unescape(request.page_token(), &text))
    return absl::InvalidArgumentError("page_token: not a token returned by ListJobs");
  const std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits('\n', 2));
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &after))
    return absl::InvalidArgumentError("page_token: not a token returned by ListJobs");
  if (parts[1] != absl::StrCat(static_cast<int>(request.state())) || parts[2] != request.tenant())
    return absl::InvalidArgumentError(
        "page_token: issued for another filter (state, tenant); start again without it");
  return after;
}

absl::Status JobNotFound(const std::string& job_id) {
  return absl::NotFoundError(absl::StrCat("job \"", job_id, "\" not found"));
}

absl::Status TaskNotFound(const std::string& task_id) {
  return absl::NotFoundError(absl::StrCat("task \"", task_id, "\" not found"));
}

}  // namespace

Clock* SystemClock() {
  static RealClock clock;
  return &clock;
}

JobScheduler::JobScheduler(StateStore* state, ArtifactStore* artifacts, Clock* clock,
                           SchedulerOptions options)
    : clock_(clock),
      options_(std::move(options)),
      finalizer_(artifacts, options_.store_root),
      jobs_(state),
      leases_(options_.tenant_gpu_limit) {}

absl::Status JobScheduler::Recover() {
  absl::MutexLock lock(&mu_);
  auto loaded = jobs_.LoadStored();
  if (!loaded.ok()) return loaded.status();
  const int64_t now = Now();
  std::vector<std::string> unfinished;
  for (v1::JobRecord& stored : *loaded) {
    auto record = std::make_unique<v1::JobRecord>(std::move(stored));
    PlanOlderRecord(*record);
    v1::JobRecord& r = jobs_.Insert(std::move(record));
    for (v1::TaskRecord& t : *r.mutable_tasks()) {
      // Leases survive the restart; their workers get a full timeout to heartbeat again.
      if (t.task().state() == v1::TASK_RUNNING) {
        t.set_lease_deadline_unix_ms(now + options_.lease_timeout_ms);
        leases_.Adopt(t.task().id());
      }
    }
    const v1::JobState state = r.job().state();
    if ((state == v1::FAILED || state == v1::CANCELLED) && !r.checkpoints_released()) {
      unreleased_checkpoints_.insert(r.job().id());
    }
    if (!IsFinished(state) && AllTasksSucceeded(r)) unfinished.push_back(r.job().id());
  }
  for (const std::string& id : unfinished) FinalizeJob(id);
  return absl::OkStatus();
}

void JobScheduler::PlanOlderRecord(v1::JobRecord& r) const {
  // Records written before typed stage options (or before the planner bound inputs) have no
  // `stage`: plan the recipe again (the same recipe gives the same plan) and take its options,
  // data and bindings.
  if (r.tasks_size() == 0 || r.tasks(0).has_stage()) return;
  RecipeLimits unlimited;
  unlimited.max_bytes = INT64_MAX;
  unlimited.max_stages = INT64_MAX;
  auto recipe = ParseRecipe(r.job().recipe_yaml(), unlimited);
  if (!recipe.ok()) return;
  const std::vector<v1::TaskRecord> plan = PlanJob(*recipe, r.job().id(), options_.store_root);
  if (static_cast<int>(plan.size()) != r.tasks_size()) return;
  for (int i = 0; i < r.tasks_size(); ++i) {
    v1::TaskRecord& t = *r.mutable_tasks(i);
    *t.mutable_bindings() = plan[i].bindings();
    t.set_baseline_task(plan[i].baseline_task());
    *t.mutable_stage() = plan[i].stage();
    *t.mutable_data() = plan[i].data();
    t.clear_spec_json();
  }
}

v1::Job JobScheduler::PublicView(const v1::JobRecord& r) const {
  v1::Job job = r.job();
  int64_t finished = 0;
  for (const v1::TaskRecord& t : r.tasks()) {
    *job.add_tasks() = t.task();
    finished += t.task().state() == v1::TASK_SUCCEEDED;
  }
  v1::Progress* progress = job.mutable_progress();
  progress->set_completed(finished);
  progress->set_total(r.tasks_size());
  progress->set_unit(v1::PROGRESS_UNIT_STAGES);
  // Records stored before Timestamps carry the times in milliseconds only.
  auto fill = [](int64_t ms, google::protobuf::Timestamp* ts) {
    if (ms > 0 && ts->seconds() == 0 && ts->nanos() == 0)
      *ts = TimeUtil::MillisecondsToTimestamp(ms);
  };
  fill(job.created_unix_ms(), job.mutable_create_time());
  if (job.started_unix_ms() > 0) fill(job.started_unix_ms(), job.mutable_start_time());
  if (job.finished_unix_ms() > 0) fill(job.finished_unix_ms(), job.mutable_finish_time());
  return job;
}

void JobScheduler::AddEvent(v1::JobRecord& r, v1::JobEvent event, bool durable) {
  jobs_.AddEvent(r, std::move(event), Now(), durable);
  events_cv_.SignalAll();
}

void JobScheduler::AddTaskEvent(v1::JobRecord& r, const v1::TaskRecord& t,
                                const std::string& message, bool durable) {
  v1::JobEvent e;
  v1::TaskUpdate* u = e.mutable_task();
  u->set_index(t.task().index());
  u->set_kind(t.task().kind());
  u->set_state(t.task().state());
  *u->mutable_progress() = t.task().progress();
  u->set_message(message);
  if (t.task().has_result()) *u->mutable_result() = t.task().result();
  if (t.task().has_metrics()) *u->mutable_metrics() = t.task().metrics();
  AddEvent(r, std::move(e), durable);
}

bool JobScheduler::MoveTaskOrCount(v1::Task& task, v1::TaskState to) {
  absl::Status moved = MoveTask(task, to);
  if (!moved.ok()) {
    ++illegal_moves_;
    SQ_LOG(ERROR) << "scheduler: " << moved.message();
    return false;
  }
  // What every move implies for the task's times and figures, kept here so no path forgets it.
  if (to == v1::TASK_RUNNING) {
    *task.mutable_start_time() = TimeUtil::MillisecondsToTimestamp(Now());
    task.clear_finish_time();
  } else if (task.has_start_time() && !task.has_finish_time()) {
    *task.mutable_finish_time() = TimeUtil::MillisecondsToTimestamp(Now());
  }
  if (to != v1::TASK_RUNNING) task.clear_metrics();  // live figures only while it runs
  // A finished stage has done all its work, whatever its last heartbeat said.
  if (to == v1::TASK_SUCCEEDED && task.progress().total() > 0)
    task.mutable_progress()->set_completed(task.progress().total());
  return true;
}

bool JobScheduler::MoveJobOrCount(v1::Job& job, v1::JobState to) {
  absl::Status moved = MoveJob(job, to);
  if (!moved.ok()) {
    ++illegal_moves_;
    SQ_LOG(ERROR) << "scheduler: " << moved.message();
  }
  return moved.ok();
}

int64_t JobScheduler::illegal_moves() const {
  absl::MutexLock lock(&mu_);
  return illegal_moves_;
}

void JobScheduler::SetJobState(v1::JobRecord& r, v1::JobState state) {
  if (r.job().state() == state) return;
  if (!MoveJobOrCount(*r.mutable_job(), state)) return;
  if (state == v1::RUNNING) {
    r.mutable_job()->set_started_unix_ms(Now());
    *r.mutable_job()->mutable_start_time() = TimeUtil::MillisecondsToTimestamp(Now());
    if (observer_) observer_->OnJobStarted((Now() - r.job().created_unix_ms()) / 1000.0);
  }
  if (IsFinished(state)) {
    r.mutable_job()->set_finished_unix_ms(Now());
    *r.mutable_job()->mutable_finish_time() = TimeUtil::MillisecondsToTimestamp(Now());
    if (observer_) observer_->OnJobFinished(state, (Now() - r.job().created_unix_ms()) / 1000.0);
    jobs_.Deactivate(r);
  }
  v1::JobEvent e;
  e.set_state(state);
  AddEvent(r, std::move(e), /*durable=*/true);
  if (state == v1::FAILED) {
    SQ_LOG_TASK(WARNING, r.job().id(), "") << "job FAILED: " << r.job().error();
  } else {
    SQ_LOG_TASK(INFO, r.job().id(), "") << "job " << v1::JobState_Name(state);
  }
}

absl::StatusOr<v1::SubmitJobResponse> JobScheduler::Submit(const v1::SubmitJobRequest& request,
                                                           const Recipe& recipe) {
  absl::MutexLock lock(&mu_);
  const std::string tenant = request.tenant().empty() ? "default" : request.tenant();
  v1::SubmitJobResponse response;
  if (!request.request_id().empty()) {
    if (const v1::JobRecord* earlier = jobs_.FindByRequest(tenant, request.request_id())) {
      // A retry of the same request gets its job; the same id on another request is a mistake
      // that would otherwise lose the new request silently.
      if (earlier->job().recipe_yaml() != request.recipe_yaml() ||
          earlier->job().priority() != request.priority())
        return absl::AlreadyExistsError(absl::StrCat(
            "request_id \"", request.request_id(), "\" was used for job ", earlier->job().id(),
            " with another recipe or priority; a retry sends the same request, a new job a new "
            "request_id"));
      *response.mutable_job() = PublicView(*earlier);
      response.set_created(false);
      return response;
    }
  }
  auto record = std::make_unique<v1::JobRecord>();
  v1::Job* job = record->mutable_job();
  job->set_id(RandomId("job-"));
  job->set_tenant(tenant);
  job->set_priority(request.priority());
  MoveJobOrCount(*job, v1::QUEUED);
  job->set_recipe_yaml(request.recipe_yaml());
  job->set_created_unix_ms(Now());
  *job->mutable_create_time() = TimeUtil::MillisecondsToTimestamp(job->created_unix_ms());
  job->set_request_id(request.request_id());
  record->set_sequence(jobs_.NextSequence());
  for (v1::TaskRecord& t : PlanJob(recipe, job->id(), options_.store_root))
    *record->add_tasks() = std::move(t);
  v1::JobRecord& r = jobs_.Insert(std::move(record));
  v1::JobEvent e;
  e.set_state(v1::QUEUED);
  AddEvent(r, std::move(e), true);
  SQ_LOG_TASK(INFO, job->id(), "") << "submitted by tenant " << tenant << ": " << r.tasks_size()
                                   << " stages, priority " << request.priority();
  MakeRunnable(r, 0);
  if (auto s = jobs_.Commit(r); !s.ok()) {
    jobs_.Erase(r.job().id());  // not durable, so not accepted: forget it entirely
    return s;
  }
  *response.mutable_job() = PublicView(r);
  response.set_created(true);
  if (observer_) observer_->OnJobSubmitted();
  return response;
}

void JobScheduler::MakeRunnable(v1::JobRecord& r, int index) {
  v1::TaskRecord& t = *r.mutable_tasks(index);
  // The planner said where each input comes from; earlier tasks have produced them by now.
  for (const v1::InputBinding& b : t.bindings()) {
    if (b.has_task_output()) {
      const v1::TaskRecord& from = r.tasks(b.task_output().task_index());
      auto out = from.outputs().find(b.task_output().output());
      if (out != from.outputs().end()) (*t.mutable_inputs())[b.name()] = out->second;
    } else {
      (*t.mutable_inputs())[b.name()] = b.uri();
    }
  }
  MoveTaskOrCount(*t.mutable_task(), v1::TASK_QUEUED);
  AddTaskEvent(r, t, "queued", true);
  work_cv_.SignalAll();
}

absl::StatusOr<v1::Job> JobScheduler::Get(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  const v1::JobRecord* r = jobs_.Find(job_id);
  if (r == nullptr) return JobNotFound(job_id);
  return PublicView(*r);
}

absl::StatusOr<v1::ListJobsResponse> JobScheduler::List(const v1::ListJobsRequest& request) {
  absl::MutexLock lock(&mu_);
  if (request.page_size() < 0)
    return absl::InvalidArgumentError(absl::StrCat(
        "page_size: must be 0 (the default, 50) or positive, got ", request.page_size()));
  const int page_size = request.page_size() == 0 ? 50 : std::min(request.page_size(), 1000);
  auto token = ParsePageToken(request);
  if (!token.ok()) return token.status();
  const int64_t after = *token;
  std::vector<const v1::JobRecord*> matching;
  for (const auto& [id, r] : jobs_.jobs()) {
    if (r->sequence() <= after) continue;
    if (request.state() != v1::JOB_STATE_UNSPECIFIED && r->job().state() != request.state())
      continue;
    if (!request.tenant().empty() && r->job().tenant() != request.tenant()) continue;
    matching.push_back(r.get());
  }
  std::sort(matching.begin(), matching.end(), [](const v1::JobRecord* a, const v1::JobRecord* b) {
    return a->sequence() < b->sequence();
  });
  v1::ListJobsResponse response;
  // A page also ends before it outgrows half the gRPC message limit, so that a client can
  // always read it (jobs carry their recipes).
  size_t bytes = 0, i = 0;
  for (; i < matching.size() && static_cast<int>(i) < page_size; ++i) {
    v1::Job job = PublicView(*matching[i]);
    const size_t size = job.ByteSizeLong();
    if (i > 0 && bytes + size > static_cast<size_t>(options_.max_page_bytes)) break;
    bytes += size;
    *response.add_jobs() = std::move(job);
  }
  if (i < matching.size())
    response.set_next_page_token(PageToken(matching[i - 1]->sequence(), request));
  return response;
}

absl::StatusOr<v1::Job> JobScheduler::Cancel(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  v1::JobRecord* found = jobs_.Find(job_id);
  if (found == nullptr) return JobNotFound(job_id);
  v1::JobRecord& r = *found;
  // AIP-216: a job that has ended (or whose every stage has) cannot be cancelled.
  if (IsFinished(r.job().state()))
    return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " already ended ",
                                                      v1::JobState_Name(r.job().state()),
                                                      ": nothing to cancel"));
  if (AllTasksSucceeded(r))
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " has finished every stage: nothing to cancel"));
  r.mutable_job()->set_cancel_requested(true);
  bool running = false;
  for (const v1::TaskRecord& t : r.tasks())
    running = running || t.task().state() == v1::TASK_RUNNING;
  if (!running) {
    FinishJob(r, v1::CANCELLED, "cancelled");
  } else {
    v1::JobEvent e;
    e.set_log("cancel requested; the running stage stops at its next step boundary");
    AddEvent(r, std::move(e), true);
  }
  if (auto s = jobs_.Commit(r); !s.ok()) return s;
  return PublicView(r);
}

absl::StatusOr<v1::ListArtifactsResponse> JobScheduler::Artifacts(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  const v1::JobRecord* r = jobs_.Find(job_id);
  if (r == nullptr) return JobNotFound(job_id);
  v1::ListArtifactsResponse response;
  for (const v1::Artifact& a : r->artifacts()) *response.add_artifacts() = a;
  return response;
}

absl::StatusOr<std::vector<v1::JobEvent>> JobScheduler::Events(const std::string& job_id,
                                                               int64_t after_sequence,
                                                               int64_t wait_ms, bool* done) {
  absl::MutexLock lock(&mu_);
  const v1::JobRecord* r = jobs_.Find(job_id);
  if (r == nullptr) return JobNotFound(job_id);
  std::vector<v1::JobEvent> out = jobs_.EventsAfter(job_id, after_sequence);
  if (out.empty() && !IsFinished(r->job().state())) {
    const absl::Time deadline = absl::Now() + absl::Milliseconds(wait_ms);
    while (!(shutdown_ || IsFinished(r->job().state()) ||
             jobs_.LastEventSequence(job_id) > after_sequence)) {
      if (events_cv_.WaitWithDeadline(&mu_, deadline)) break;  // timed out
    }
    out = jobs_.EventsAfter(job_id, after_sequence);
  }
  const int64_t last = out.empty() ? after_sequence : out.back().sequence();
  *done = IsFinished(r->job().state()) && jobs_.LastEventSequence(job_id) <= last;
  return out;
}

v1::RegisterWorkerResponse JobScheduler::Register(const v1::RegisterWorkerRequest& request) {
  absl::MutexLock lock(&mu_);
  std::string id = request.worker_id();
  if (id.empty()) id = absl::StrCat("worker-", request.node(), "-", RandomId(""));
  leases_.Register(id, request, jobs_, Now());
  v1::RegisterWorkerResponse response;
  response.set_worker_id(id);
  response.set_heartbeat_interval_ms(options_.heartbeat_interval_ms);
  response.set_lease_timeout_ms(options_.lease_timeout_ms);
  return response;
}

std::optional<v1::TaskLease> JobScheduler::TryLease(const std::string& worker_id) {
  const int64_t now = Now();
  for (v1::JobRecord* job : jobs_.ActiveInOrder()) {
    v1::JobRecord& r = *job;
    if (r.job().cancel_requested()) continue;
    for (v1::TaskRecord& t : *r.mutable_tasks()) {
      if (t.task().state() != v1::TASK_QUEUED) continue;
      // Tasks of a job run in order: the first queued one is the only candidate.
      if (t.not_before_unix_ms() > now) break;
      if (!leases_.WithinTenantLimit(r.job().tenant(), t, jobs_)) break;
      std::optional<std::vector<std::string>> ranks = leases_.PickGang(worker_id, t);
      if (!ranks) break;

      MoveTaskOrCount(*t.mutable_task(), v1::TASK_RUNNING);
      t.mutable_task()->set_attempts(t.task().attempts() + 1);
      t.mutable_task()->set_worker_id(worker_id);
      t.set_lease_deadline_unix_ms(now + options_.lease_timeout_ms);
      t.set_attempt_start_completed(t.task().progress().completed());
      t.clear_lease_workers();
      for (const std::string& id : *ranks) {
        t.add_lease_workers(id);
        leases_.Find(id)->tokens_reported = 0;  // the new attempt counts its tokens from 0
      }
      SetJobState(r, v1::RUNNING);
      AddTaskEvent(r, t, absl::StrCat("attempt ", t.task().attempts(), " leased to ", worker_id),
                   true);
      SQ_LOG_TASK(INFO, r.job().id(), t.task().id())
          << "stages[" << t.task().index() << "] " << t.task().kind() << " attempt "
          << t.task().attempts() << " leased to " << worker_id
          << (ranks->size() > 1 ? absl::StrCat(" (a gang of ", ranks->size(), ")") : "");
      if (auto s = jobs_.Commit(r); !s.ok()) {
        // Not durable: undo, so that nobody runs what the store does not know about.
        MoveTaskOrCount(*t.mutable_task(), v1::TASK_QUEUED);
        t.mutable_task()->set_attempts(t.task().attempts() - 1);
        t.clear_lease_workers();
        return std::nullopt;
      }
      // Every rank meets rank 0 at its rendezvous address.
      const std::string rendezvous = leases_.Find(worker_id)->registration.rendezvous_address();
      std::vector<v1::TaskLease> later_ranks;
      for (size_t rank = 1; rank < ranks->size(); ++rank)
        later_ranks.push_back(BuildTaskLease(r, t, static_cast<int>(rank), rendezvous));
      leases_.Hold(t, *ranks, std::move(later_ranks), now);
      if (ranks->size() > 1) work_cv_.SignalAll();
      return BuildTaskLease(r, t, 0, rendezvous);
    }
  }
  return std::nullopt;
}

absl::StatusOr<std::optional<v1::TaskLease>> JobScheduler::Lease(const std::string& worker_id,
                                                                 int64_t wait_ms) {
  absl::MutexLock lock(&mu_);
  if (leases_.Find(worker_id) == nullptr) {
    return absl::NotFoundError(absl::StrCat("worker \"", worker_id, "\" is not registered"));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
  while (true) {
    WorkerInfo* w = leases_.Find(worker_id);
    w->last_seen_ms = Now();
    if (w->assigned) {
      std::optional<v1::TaskLease> lease = std::move(w->assigned);
      w->assigned.reset();
      w->waiting = false;
      return lease;
    }
    if (w->current_task.empty()) {
      if (auto lease = TryLease(worker_id)) {
        leases_.Find(worker_id)->waiting = false;
        return lease;
      }
    }
    if (shutdown_ || std::chrono::steady_clock::now() >= deadline) {
      w->waiting = false;
      return std::optional<v1::TaskLease>();
    }
    w->waiting = true;
    // Backoff deadlines pass without any event, so wake up now and then to look again.
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    work_cv_.WaitWithTimeout(&mu_, absl::Milliseconds(std::min<int64_t>(left.count(), 100)));
  }
}

absl::StatusOr<v1::HeartbeatResponse> JobScheduler::Heartbeat(const v1::HeartbeatRequest& request) {
  absl::MutexLock lock(&mu_);
  v1::HeartbeatResponse response;
  auto ref = jobs_.FindTask(request.task_id());
  if (!ref) return TaskNotFound(request.task_id());
  v1::TaskRecord& t = *ref->task;
  const bool current =
      t.task().state() == v1::TASK_RUNNING && t.task().attempts() == request.attempt() &&
      std::find(t.lease_workers().begin(), t.lease_workers().end(), request.worker_id()) !=
          t.lease_workers().end();
  if (!current) {
    response.set_cancel(true);  // this attempt was given up on; stop working on it
    return response;
  }
  if (WorkerInfo* w = leases_.Find(request.worker_id())) {
    w->last_seen_ms = Now();
    auto tokens = request.metrics().find("tokens");
    if (tokens != request.metrics().end()) {
      if (observer_ && tokens->second > w->tokens_reported)
        observer_->OnTokens(t.task().kind(), tokens->second - w->tokens_reported);
      w->tokens_reported = tokens->second;
    }
  }
  t.set_lease_deadline_unix_ms(Now() + options_.lease_timeout_ms);
  if (request.has_progress() && request.worker_id() == t.lease_workers(0)) {
    *t.mutable_task()->mutable_progress() = request.progress();
    *t.mutable_task()->mutable_metrics() = LiveMetrics(t, request, Now());
    // Progress is for watching; it need not survive a restart, so it is not written each time.
    AddTaskEvent(*ref->job, t, "", /*durable=*/false);
  }
  for (const std::string& line : request.log()) {
    v1::JobEvent e;
    e.set_log(line);
    AddEvent(*ref->job, std::move(e), /*durable=*/false);
  }
  response.set_cancel(ref->job->job().cancel_requested());
  response.set_lease_deadline_unix_ms(t.lease_deadline_unix_ms());
  return response;
}

void JobScheduler::ReleaseWorkers(const v1::TaskRecord& t) {
  leases_.Release(t);
  work_cv_.SignalAll();
}

absl::Status JobScheduler::Complete(const v1::CompleteTaskRequest& request) {
  absl::MutexLock lock(&mu_);
  auto ref = jobs_.FindTask(request.task_id());
  if (!ref) return TaskNotFound(request.task_id());
  v1::JobRecord& r = *ref->job;
  v1::TaskRecord& t = *ref->task;
  if (t.task().state() != v1::TASK_RUNNING || t.task().attempts() != request.attempt()) {
    return absl::FailedPreconditionError(
        absl::StrCat("task \"", request.task_id(), "\" attempt ", request.attempt(),
                     " is no longer current (state ", v1::TaskState_Name(t.task().state()), ")"));
  }
  // Only rank 0 reports for a gang.
  if (t.lease_workers_size() > 0 && t.lease_workers(0) != request.worker_id())
    return absl::OkStatus();
  ReleaseWorkers(t);
  MoveTaskOrCount(*t.mutable_task(), v1::TASK_SUCCEEDED);
  NoteAttemptFinished(t, "succeeded");
  *t.mutable_task()->mutable_result() = request.result();
  for (const auto& [name, uri] : request.outputs()) {
    (*t.mutable_outputs())[name] = uri;
    v1::Artifact* a = r.add_artifacts();
    a->set_name(name);
    a->set_uri(uri);
    a->set_task_index(t.task().index());
    a->set_kind(t.task().kind());
  }
  AddTaskEvent(r, t, "succeeded", true);
  SQ_LOG_TASK(INFO, r.job().id(), t.task().id())
      << "stages[" << t.task().index() << "] " << t.task().kind() << " succeeded";
  const bool last = AdvanceJob(r);
  if (auto s = jobs_.Commit(r); !s.ok()) return s;
  if (last) FinalizeJob(r.job().id());
  return absl::OkStatus();
}

bool JobScheduler::AdvanceJob(v1::JobRecord& r) {
  if (r.job().cancel_requested()) {
    FinishJob(r, v1::CANCELLED, "cancelled");
    return false;
  }
  for (int i = 0; i < r.tasks_size(); ++i) {
    if (r.tasks(i).task().state() == v1::TASK_PENDING) {
      MakeRunnable(r, i);
      return false;
    }
  }
  return true;  // every stage succeeded: the job is finalized next
}

void JobScheduler::FinalizeJob(const std::string& job_id) {
  // The report is written without holding the scheduler lock (it is store I/O), while the job is
  // still RUNNING with every stage done; only then does the job become SUCCEEDED. A crash in
  // between is finished by Recover, so SUCCEEDED always comes with its report.
  if (finalizing_.count(job_id)) return;
  finalizing_.insert(job_id);
  const std::string report = BuildJobReport(*jobs_.Find(job_id));
  mu_.Unlock();
  absl::StatusOr<std::vector<v1::Artifact>> written = finalizer_.WriteReport(job_id, report);
  mu_.Lock();
  finalizing_.erase(job_id);
  v1::JobRecord& r = *jobs_.Find(job_id);
  if (IsFinished(r.job().state())) return;
  if (written.ok()) {
    for (v1::Artifact& a : *written) *r.add_artifacts() = std::move(a);
  } else {
    v1::JobEvent e;
    e.set_log(absl::StrCat("could not write the report: ", written.status().message()));
    AddEvent(r, std::move(e), true);
  }
  FinishJob(r, v1::SUCCEEDED, "");
  jobs_.Commit(r).IgnoreError();  // on failure, Recover finalizes again from the stored record
}

void JobScheduler::FinishJob(v1::JobRecord& r, v1::JobState state, const std::string& error) {
  for (v1::TaskRecord& t : *r.mutable_tasks()) {
    const v1::TaskState s = t.task().state();
    if (s == v1::TASK_PENDING || s == v1::TASK_QUEUED || s == v1::TASK_RUNNING) {
      if (s == v1::TASK_RUNNING) ReleaseWorkers(t);
      MoveTaskOrCount(*t.mutable_task(),
                      state == v1::CANCELLED ? v1::TASK_CANCELLED : v1::TASK_FAILED);
    }
  }
  if (!error.empty() && state != v1::SUCCEEDED) r.mutable_job()->set_error(error);
  SetJobState(r, state);
  if (state != v1::SUCCEEDED) unreleased_checkpoints_.insert(r.job().id());
}

int JobScheduler::ReleaseCheckpoints() {
  std::vector<std::pair<std::string, std::vector<std::string>>> work;
  {
    absl::MutexLock lock(&mu_);
    for (const std::string& id : unreleased_checkpoints_)
      work.emplace_back(id, CheckpointUris(*jobs_.Find(id)));
  }
  int released = 0;
  for (const auto& [id, uris] : work) {
    const absl::Status deleted = finalizer_.DeleteCheckpoints(uris);
    if (!deleted.ok()) continue;  // kept for the next round; the store may be unreachable
    absl::MutexLock lock(&mu_);
    v1::JobRecord& r = *jobs_.Find(id);
    unreleased_checkpoints_.erase(id);
    r.set_checkpoints_released(true);
    jobs_.Commit(r).IgnoreError();  // if lost, a restart releases again (deleting is idempotent)
    ++released;
  }
  return released;
}

void JobScheduler::EndAttempt(v1::JobRecord& r, v1::TaskRecord& t, const std::string& error,
                              int code, bool retryable, bool cancelled) {
  ReleaseWorkers(t);
  t.mutable_task()->set_error(error);
  t.mutable_task()->set_error_code(code);
  SQ_LOG_TASK(WARNING, r.job().id(), t.task().id())
      << "stages[" << t.task().index() << "] " << t.task().kind() << " attempt "
      << t.task().attempts() << " ended: " << error;
  if (cancelled || r.job().cancel_requested()) {
    NoteAttemptFinished(t, "cancelled");
    MoveTaskOrCount(*t.mutable_task(), v1::TASK_CANCELLED);
    AddTaskEvent(r, t, "cancelled", true);
    FinishJob(r, v1::CANCELLED, "cancelled");
    return;
  }
  if (retryable && t.task().attempts() < t.task().max_attempts()) {
    const int64_t backoff =
        std::min(options_.retry_backoff_max_ms,
                 options_.retry_backoff_base_ms << std::min(20, t.task().attempts() - 1));
    NoteAttemptFinished(t, "retried");
    MoveTaskOrCount(*t.mutable_task(), v1::TASK_QUEUED);
    t.set_not_before_unix_ms(Now() + backoff);
    work_cv_.SignalAll();
    AddTaskEvent(r, t,
                 absl::StrCat("attempt ", t.task().attempts(), " failed: ", error, "; retrying in ",
                              backoff, " ms"),
                 true);
    return;
  }
  NoteAttemptFinished(t, "failed");
  MoveTaskOrCount(*t.mutable_task(), v1::TASK_FAILED);
  AddTaskEvent(r, t, absl::StrCat("failed: ", error), true);
  FinishJob(r, v1::FAILED,
            absl::StrCat("stages[", t.task().index(), "] ", t.task().kind(), " failed after ",
                         t.task().attempts(), " attempt(s): ", error));
}

absl::Status JobScheduler::Fail(const v1::FailTaskRequest& request) {
  absl::MutexLock lock(&mu_);
  auto ref = jobs_.FindTask(request.task_id());
  if (!ref) return TaskNotFound(request.task_id());
  v1::TaskRecord& t = *ref->task;
  if (t.task().state() != v1::TASK_RUNNING || t.task().attempts() != request.attempt()) {
    return absl::FailedPreconditionError(absl::StrCat("task \"", request.task_id(), "\" attempt ",
                                                      request.attempt(), " is no longer current"));
  }
  // An older worker sends no code: UNKNOWN, not OK, for an attempt that failed.
  EndAttempt(*ref->job, t, request.error(),
             request.code() != 0 ? request.code() : static_cast<int>(absl::StatusCode::kUnknown),
             request.retryable(), request.cancelled());
  return jobs_.Commit(*ref->job);
}

int JobScheduler::ExpireLeases() {
  absl::MutexLock lock(&mu_);
  int expired = 0;
  for (const JobTable::TaskRef& ref : leases_.Expired(jobs_, Now())) {
    ++expired;
    if (observer_) observer_->OnLeaseExpired();
    EndAttempt(*ref.job, *ref.task,
               absl::StrCat("lease expired: worker ", ref.task->task().worker_id(),
                            " stopped heartbeating"),
               static_cast<int>(absl::StatusCode::kUnavailable), /*retryable=*/true,
               /*cancelled=*/false);
    // A failed commit leaves memory ahead of the store; the job's next successful commit writes
    // the whole record and catches up.
    jobs_.Commit(*ref.job).IgnoreError();
  }
  return expired;
}

void JobScheduler::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutdown_ = true;
  work_cv_.SignalAll();
  events_cv_.SignalAll();
}

void JobScheduler::NoteAttemptFinished(const v1::TaskRecord& t, const std::string& result) {
  const double seconds = leases_.EndAttempt(t.task().id(), Now());
  if (observer_) observer_->OnAttemptFinished(t.task().kind(), result, seconds);
}

JobScheduler::Stats JobScheduler::GetStats() {
  absl::MutexLock lock(&mu_);
  Stats s;
  for (const auto& [id, r] : jobs_.jobs()) {
    s.jobs_by_state[r->job().state()]++;
    if (IsFinished(r->job().state())) continue;
    for (const v1::TaskRecord& t : r->tasks()) {
      s.queued_tasks += t.task().state() == v1::TASK_QUEUED;
      if (t.task().state() != v1::TASK_RUNNING) continue;
      ++s.leased_tasks;
      RunningTask running;
      running.kind = t.task().kind();
      const v1::Progress& p = t.task().progress();
      if (p.total() > 0) running.progress = static_cast<double>(p.completed()) / p.total();
      s.running.push_back(std::move(running));
    }
  }
  const int64_t now = Now();
  s.workers = static_cast<int64_t>(leases_.workers().size());
  for (const auto& [id, w] : leases_.workers()) {
    s.gpus += w.gpus;
    if (!w.current_task.empty()) {
      s.max_heartbeat_age_seconds =
          std::max(s.max_heartbeat_age_seconds, (now - w.last_seen_ms) / 1000.0);
    }
  }
  return s;
}

}  // namespace squeeze::coordinator
