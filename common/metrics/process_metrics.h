// The standard process_* metrics every Prometheus client library exports (CPU seconds, resident
// and virtual memory, open and maximum file descriptors, start time, threads), read from /proc at
// scrape time. prometheus-cpp has no such collector.
#pragma once

#include <prometheus/collectable.h>

#include <string>
#include <vector>

namespace squeeze {

class ProcessMetrics : public prometheus::Collectable {
 public:
  // `proc_dir`: the process's /proc directory; tests point it at a fixture.
  explicit ProcessMetrics(std::string proc_dir = "/proc/self", std::string proc_root = "/proc");
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::string proc_dir_;
  const std::string proc_root_;
};

}  // namespace squeeze
