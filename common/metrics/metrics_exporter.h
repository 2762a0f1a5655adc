// The Prometheus side of a process: one registry with squeeze_build_info, served as text at
// http://HOST:PORT/metrics. Processes add their own families to registry(), and gauges computed at
// scrape time as collectables.
//
// The HTTP endpoint is a small server of our own rather than prometheus-cpp's civetweb exposer:
// civetweb starts its threads with a fixed small stack, which fails (EINVAL) in processes whose
// libraries need a lot of static thread-local storage, as libtorch does; workers could not serve
// metrics at all.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#include "absl/synchronization/mutex.h"

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"

namespace prometheus {
class Collectable;
class Registry;
}  // namespace prometheus

namespace squeeze {

class MetricsExporter {
 public:
  // Serves on `listen_address` ("127.0.0.1:9090"; port 0 picks one). `component` labels
  // squeeze_build_info ("coordinator", "worker").
  static absl::StatusOr<std::unique_ptr<MetricsExporter>> Start(const std::string& listen_address,
                                                                const std::string& component);
  ~MetricsExporter();

  prometheus::Registry& registry() { return *registry_; }
  // Values computed at scrape time (gauges read from a component's state).
  void RegisterCollectable(const std::weak_ptr<prometheus::Collectable>& collectable);
  // host:port of the HTTP endpoint.
  std::string address() const { return address_; }
  // The text exposition of every metric now (what a scrape returns).
  std::string Scrape();

  // Probe endpoints on the same port: GET `path` ("/healthz", "/readyz") answers 200 with the
  // check's text when it returns OK, 503 with the reason otherwise. For kubelet probes that
  // must reflect the component's work loop, not merely that this thread answers.
  void AddProbe(const std::string& path, std::function<absl::Status()> check);

 private:
  MetricsExporter() = default;
  void Serve();
  void Answer(int connection);

  std::shared_ptr<prometheus::Registry> registry_;
  absl::Mutex mu_;
  std::vector<std::weak_ptr<prometheus::Collectable>> collectables_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::function<absl::Status()>> probes_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<prometheus::Collectable> process_;  // process_* metrics, on every exporter
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread server_;
  std::string address_;
};

}  // namespace squeeze
