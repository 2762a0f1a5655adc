// A coordinator process's parts wired together: state store, artifact store, scheduler, the gRPC
// server (JobService, WorkerService, health, reflection) and the lease-expiry loop. Used by the
// squeeze-coordinator binary and, embedded, by `squeezectl run`.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/recipe/recipe.h"
#include "services/coordinator/job_scheduler.h"

namespace grpc {
class Server;
}

namespace squeeze {
class Authenticator;
class MetricsExporter;
class ReflectionV1Service;
}  // namespace squeeze

namespace squeeze::coordinator {

struct CoordinatorOptions {
  std::string listen_address = "127.0.0.1:7070";  // port 0 picks a free one
  std::string state_dir;                          // holds state.db
  // PostgreSQL instead of state.db (libpq conninfo): several coordinators share it, one leads
  // and the others stand by until its lease lapses (leader_lease.h).
  std::string postgres;
  std::string leader_id;  // this coordinator's name in the lease; default host:pid
  int64_t leader_lease_ms = 10000;
  // While standing by, Start returns Cancelled once this turns true.
  const std::atomic<bool>* stop_standby = nullptr;
  std::string store_root;  // default file://<state_dir>/store
  bool sqlite_synchronous_full = false;
  int max_message_bytes = 16 << 20;  // gRPC, both directions; clients use the same
  RecipeLimits recipe_limits;        // --max-recipe-bytes, --max-stages
  // With authentication: tenant -> the local directories and s3:// prefixes its jobs may read,
  // besides the store (--tenant-roots). A tenant without roots reads from the store only.
  std::map<std::string, std::vector<std::string>> tenant_roots;
  std::string metrics_listen;  // host:port for /metrics; empty: no metrics endpoint
  // Authentication: a file of token digests (see common/rpc/authenticator.h); empty: open.
  std::string auth_tokens_file;
  // TLS: the server's certificate and key; with a client CA, mutual TLS.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  SchedulerOptions scheduler;
};

class Coordinator {
 public:
  static absl::StatusOr<std::unique_ptr<Coordinator>> Start(CoordinatorOptions options);
  ~Coordinator();

  int port() const { return port_; }
  std::string address() const;
  JobScheduler& scheduler() { return *scheduler_; }
  const std::string& store_root() const { return options_.store_root; }
  // host:port of /metrics, or "" without one.
  std::string metrics_address() const;
  void Wait();
  void Shutdown();

 private:
  Coordinator() = default;
  // Waits until this coordinator holds the leader lease (PostgreSQL only).
  absl::Status StandBy();
  // Renews the lease; ends the process when it is lost.
  void KeepLeadership();
  CoordinatorOptions options_;
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::shared_ptr<class CoordinatorMetrics> scheduler_metrics_;
  std::unique_ptr<JobScheduler> scheduler_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<class JobServiceImpl> job_service_;
  std::unique_ptr<class WorkerServiceImpl> worker_service_;
  std::unique_ptr<ReflectionV1Service> reflection_v1_;
  std::unique_ptr<grpc::Server> server_;
  std::thread expiry_;
  std::thread releaser_;  // deletes the checkpoints of failed and cancelled jobs
  std::unique_ptr<class LeaderLease> lease_;  // with PostgreSQL
  std::thread lease_keeper_;                  // renews it; ends the process if it is lost
  std::atomic<bool> stopping_{false};
  int port_ = 0;
  // Last, so that it is destroyed first: no scrape reaches a half-destroyed coordinator.
  std::unique_ptr<MetricsExporter> metrics_;
};

}  // namespace squeeze::coordinator
