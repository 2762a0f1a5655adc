// The coordinator's Prometheus metrics. Events (submissions, finished jobs and attempts, lease
// expiries) are counted as the scheduler reports them; levels (jobs by state, queue depth,
// workers, running stages' progress and tokens/s) are read from the scheduler at scrape time.
// No job or task ids are labels: stage kinds, states and results are bounded sets.
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "services/coordinator/job_scheduler.h"

namespace squeeze::coordinator {

class CoordinatorMetrics : public SchedulerObserver, public prometheus::Collectable {
 public:
  CoordinatorMetrics(prometheus::Registry& registry, JobScheduler* scheduler);

  void OnJobSubmitted() override;
  void OnJobStarted(double queue_wait_seconds) override;
  void OnJobFinished(v1::JobState state, double seconds) override;
  void OnAttemptFinished(const std::string& kind, const std::string& result,
                         double seconds) override;
  void OnLeaseExpired() override;
  void OnTokens(const std::string& kind, double tokens) override;

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  JobScheduler* scheduler_;
  prometheus::Counter& submitted_;
  prometheus::Family<prometheus::Counter>& finished_;
  prometheus::Histogram& queue_wait_;
  prometheus::Histogram& job_duration_;
  prometheus::Family<prometheus::Histogram>& stage_duration_;
  prometheus::Family<prometheus::Counter>& attempts_;
  prometheus::Counter& lease_expiries_;
  prometheus::Counter& retries_;
  prometheus::Family<prometheus::Counter>& tokens_;
};

}  // namespace squeeze::coordinator
