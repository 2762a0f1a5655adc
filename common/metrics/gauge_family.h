// Gauge families built at scrape time, for collectables that read a component's state.
#pragma once

#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>

#include <string>
#include <utility>
#include <vector>

namespace squeeze {

inline prometheus::MetricFamily GaugeFamily(const std::string& name, const std::string& help) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = prometheus::MetricType::Gauge;
  return f;
}

inline void AddGaugeSample(prometheus::MetricFamily& family, double value,
                           std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  family.metric.push_back(std::move(m));
}

// A family holding one sample.
inline prometheus::MetricFamily OneGauge(const std::string& name, const std::string& help,
                                         double value,
                                         std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::MetricFamily f = GaugeFamily(name, help);
  AddGaugeSample(f, value, std::move(labels));
  return f;
}

}  // namespace squeeze
