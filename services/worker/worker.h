// A worker process: registers with the coordinator, long-polls for leases, runs each task with
// its runner while a heartbeat thread reports progress and listens for cancellation, then reports
// the outcome. Survives coordinator restarts: it retries unavailable calls and re-registers.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "services/worker/task_runner.h"
#include "squeeze/v1/worker.grpc.pb.h"

namespace squeeze {
class MetricsExporter;
}

namespace squeeze::worker {

struct WorkerOptions {
  std::string coordinator = "127.0.0.1:7070";
  std::string node = "local";
  std::string device = "cpu";  // or cuda[:N]
  std::string scratch_dir;     // default: a temporary directory
  std::string rendezvous_address;
  // Fault injection for tests and drills: sleep this long at every step boundary.
  int64_t step_delay_ms = 0;
  int64_t lease_wait_ms = 5000;
  std::string metrics_listen;  // host:port for /metrics; empty: none
  // Credentials towards the coordinator: a worker token, and TLS (mutual with a certificate).
  std::string token;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
};

class Worker {
 public:
  explicit Worker(WorkerOptions options);
  ~Worker();

  // Runs until Stop(). Returns an error only for what retrying cannot fix.
  absl::Status Run();
  void Stop() { stop_ = true; }
  int64_t tasks_done() const { return tasks_done_; }
  // host:port of /metrics once Run() has started it, or "".
  std::string metrics_address() const;

 private:
  absl::Status RegisterUntilReady();
  // Runs the lease's task with heartbeats beside it, then reports the outcome.
  void RunTask(const v1::TaskLease& lease);
  absl::StatusOr<TaskOutput> Execute(const v1::TaskLease& lease, const std::string& scratch);

  WorkerOptions options_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  absl::Status channel_error_;  // a credentials file that could not be read
  // One store per root URI the coordinator names in leases (file:// or s3://).
  absl::StatusOr<ArtifactStore*> StoreFor(const std::string& root);
  std::map<std::string, std::unique_ptr<ArtifactStore>> stores_;
  std::map<std::string, std::unique_ptr<TaskRunner>> runners_;
  std::string worker_id_;
  int64_t heartbeat_interval_ms_ = 1000;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> tasks_done_{0};
  std::shared_ptr<class WorkerMetrics> metrics_;
  std::unique_ptr<MetricsExporter> exporter_;  // last: destroyed first
};

}  // namespace squeeze::worker
