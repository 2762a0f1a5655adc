#include "services/coordinator/coordinator_metrics.h"

#include <map>

#include "common/metrics/gauge_family.h"

namespace squeeze::coordinator {
namespace {

const prometheus::Histogram::BucketBoundaries kSeconds = {
    0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400};

const char* JobStateLabel(v1::JobState s) {
  switch (s) {
    case v1::QUEUED:
      return "queued";
    case v1::RUNNING:
      return "running";
    case v1::SUCCEEDED:
      return "succeeded";
    case v1::FAILED:
      return "failed";
    case v1::CANCELLED:
      return "cancelled";
    default:
      return "unknown";
  }
}

}  // namespace

CoordinatorMetrics::CoordinatorMetrics(prometheus::Registry& registry, JobScheduler* scheduler)
    : scheduler_(scheduler),
      submitted_(prometheus::BuildCounter()
                     .Name("squeeze_jobs_submitted_total")
                     .Help("Jobs accepted by SubmitJob (a repeated request_id is not counted).")
                     .Register(registry)
                     .Add({})),
      finished_(prometheus::BuildCounter()
                    .Name("squeeze_jobs_finished_total")
                    .Help("Jobs that reached a final state, by result.")
                    .Register(registry)),
      queue_wait_(prometheus::BuildHistogram()
                      .Name("squeeze_job_queue_wait_seconds")
                      .Help("Time from submission to the first lease of a job's task.")
                      .Register(registry)
                      .Add({}, kSeconds)),
      job_duration_(prometheus::BuildHistogram()
                        .Name("squeeze_job_duration_seconds")
                        .Help("Time from submission to the final state.")
                        .Register(registry)
                        .Add({}, kSeconds)),
      stage_duration_(prometheus::BuildHistogram()
                          .Name("squeeze_stage_attempt_duration_seconds")
                          .Help("Duration of task attempts, by stage kind and result.")
                          .Register(registry)),
      attempts_(prometheus::BuildCounter()
                    .Name("squeeze_task_attempts_total")
                    .Help("Task attempts that ended, by stage kind and result (succeeded, "
                          "failed, retried, cancelled).")
                    .Register(registry)),
      lease_expiries_(prometheus::BuildCounter()
                          .Name("squeeze_lease_expiries_total")
                          .Help("Leases whose worker stopped heartbeating.")
                          .Register(registry)
                          .Add({})),
      retries_(prometheus::BuildCounter()
                   .Name("squeeze_task_retries_total")
                   .Help("Task attempts that ended in a retry.")
                   .Register(registry)
                   .Add({})),
      tokens_(prometheus::BuildCounter()
                  .Name("squeeze_stage_tokens_total")
                  .Help("Tokens processed by running stages, by stage kind, as their heartbeats "
                        "report them; rate() of it is the throughput.")
                  .Register(registry)) {
  for (const char* result : {"succeeded", "failed", "cancelled"})
    finished_.Add({{"result", result}});
}

void CoordinatorMetrics::OnJobSubmitted() { submitted_.Increment(); }

void CoordinatorMetrics::OnJobStarted(double queue_wait_seconds) {
  queue_wait_.Observe(queue_wait_seconds);
}

void CoordinatorMetrics::OnJobFinished(v1::JobState state, double seconds) {
  finished_.Add({{"result", JobStateLabel(state)}}).Increment();
  job_duration_.Observe(seconds);
}

void CoordinatorMetrics::OnAttemptFinished(const std::string& kind, const std::string& result,
                                           double seconds) {
  attempts_.Add({{"kind", kind}, {"result", result}}).Increment();
  stage_duration_.Add({{"kind", kind}, {"result", result}}, kSeconds).Observe(seconds);
  if (result == "retried") retries_.Increment();
}

void CoordinatorMetrics::OnLeaseExpired() { lease_expiries_.Increment(); }

void CoordinatorMetrics::OnTokens(const std::string& kind, double tokens) {
  tokens_.Add({{"kind", kind}}).Increment(tokens);
}

std::vector<prometheus::MetricFamily> CoordinatorMetrics::Collect() const {
  const JobScheduler::Stats s = scheduler_->GetStats();
  std::vector<prometheus::MetricFamily> out;
  auto jobs = GaugeFamily("squeeze_jobs", "Jobs known to the coordinator, by state.");
  for (v1::JobState state : {v1::QUEUED, v1::RUNNING, v1::SUCCEEDED, v1::FAILED, v1::CANCELLED})
    AddGaugeSample(jobs, static_cast<double>(s.jobs_by_state[state]),
                   {{"state", JobStateLabel(state)}});
  out.push_back(std::move(jobs));
  auto queued =
      GaugeFamily("squeeze_tasks_queued", "Tasks waiting for a worker (the queue depth).");
  AddGaugeSample(queued, static_cast<double>(s.queued_tasks));
  out.push_back(std::move(queued));
  auto leased = GaugeFamily("squeeze_tasks_running", "Tasks leased to workers now.");
  AddGaugeSample(leased, static_cast<double>(s.leased_tasks));
  out.push_back(std::move(leased));
  auto workers = GaugeFamily("squeeze_workers", "Workers registered.");
  AddGaugeSample(workers, static_cast<double>(s.workers));
  out.push_back(std::move(workers));
  auto gpus = GaugeFamily("squeeze_gpus", "GPUs of the registered workers.");
  AddGaugeSample(gpus, static_cast<double>(s.gpus));
  out.push_back(std::move(gpus));
  auto age = GaugeFamily("squeeze_worker_heartbeat_age_max_seconds",
                         "The longest time since a busy worker's last heartbeat.");
  AddGaugeSample(age, s.max_heartbeat_age_seconds);
  out.push_back(std::move(age));
  // Running stages, aggregated by kind: the least advanced one's progress. (Throughput is the
  // squeeze_stage_tokens_total counter: rate() of it, not a gauge a scrape may miss.)
  std::map<std::string, double> by_kind;
  for (const auto& r : s.running) {
    auto [it, fresh] = by_kind.emplace(r.kind, r.progress);
    if (!fresh) it->second = std::min(it->second, r.progress);
  }
  auto progress = GaugeFamily("squeeze_running_stage_progress_ratio",
                              "Progress (completed / total) of the least advanced running stage of "
                              "each kind.");
  for (const auto& [kind, v] : by_kind) AddGaugeSample(progress, v, {{"kind", kind}});
  // A family without samples would print a bare HELP/TYPE; leave it out.
  if (!progress.metric.empty()) out.push_back(std::move(progress));
  return out;
}

}  // namespace squeeze::coordinator
