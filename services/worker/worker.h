// A worker process: registers with the coordinator, long-polls for leases, runs each task in a
// child process (task_process.h) while a heartbeat thread reports its progress and listens for
// cancellation, then reports the outcome. Survives coordinator restarts (it retries unavailable
// calls and re-registers) and its tasks' crashes.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "services/worker/task_process.h"
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
  // Fault injection for tests and drills, by task kind: "block:PATH" or "crash"
  // (task_process.proto).
  std::map<std::string, std::string> faults;
  // The binary that runs tasks ("<it> run-task"); empty: this process's own executable.
  std::string task_executable;
  int32_t threads = 0;                 // libtorch threads per task; 0: its default
  int64_t stall_timeout_ms = 1800000;  // a task with no progress for this long is killed; 0: never
  int64_t kill_grace_ms = 10000;       // how long a cancelled task may take to stop by itself
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
  static int64_t NowMs();
  void MarkAlive();
  absl::Status RegisterUntilReady();
  // Runs the lease's task with heartbeats beside it, then reports the outcome.
  void RunTask(const v1::TaskLease& lease);
  TaskProcessResult Execute(const v1::TaskLease& lease, const std::string& scratch);

  WorkerOptions options_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
  absl::Status channel_error_;             // a credentials file that could not be read
  std::vector<std::string> capabilities_;  // the task kinds this build has runners for
  std::string worker_id_;
  int64_t heartbeat_interval_ms_ = 1000;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> tasks_done_{0};
  bool coordinator_unreachable_ = false;  // the lease loop's, to log an outage once
  // For the probes: when a work loop last ran (steady clock, ms), and whether registered.
  std::atomic<int64_t> last_alive_ms_{NowMs()};
  std::atomic<bool> registered_{false};
  std::shared_ptr<class WorkerMetrics> metrics_;
  std::unique_ptr<MetricsExporter> exporter_;  // last: destroyed first
};

}  // namespace squeeze::worker
