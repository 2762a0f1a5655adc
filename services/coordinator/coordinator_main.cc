// squeeze-coordinator: the JobService and WorkerService over one state directory.
#include <csignal>
#include <iostream>
#include <thread>

#include "common/base/flags.h"
#include "common/base/log.h"
#include "services/coordinator/coordinator.h"
#include "services/coordinator/input_policy.h"

namespace {
std::atomic<bool> g_stop{false};
}

int main(int argc, char** argv) {
  squeeze::Flags flags;
  flags.Value("listen", "127.0.0.1:7070")
      .Value("state-dir")
      .Value("store")
      .Value("lease-timeout-ms", "15000")
      .Value("heartbeat-interval-ms", "1000")
      .Value("retry-backoff-ms", "1000")
      .Value("tenant-gpu-limit", "0")
      .Value("metrics-listen", "")
      .Value("auth-tokens", "")
      .Value("tls-cert", "")
      .Value("tls-key", "")
      .Value("tls-client-ca", "")
      .Value("max-recipe-bytes", "1048576")
      .Value("max-stages", "64")
      .Value("tenant-roots", "")
      .Value("postgres", "")
      .Value("leader-id", "")
      .Value("leader-lease-ms", "10000")
      .Bool("sqlite-synchronous-full");
  if (auto s = flags.Parse({argv + 1, argv + argc}); !s.ok()) {
    std::cerr << "squeeze-coordinator: " << s.message() << "\n";
    return 2;
  }
  squeeze::coordinator::CoordinatorOptions options;
  options.listen_address = *flags.Get("listen");
  auto state_dir = flags.Get("state-dir");
  if (!state_dir.ok()) {
    std::cerr << "squeeze-coordinator: " << state_dir.status().message() << "\n";
    return 2;
  }
  options.state_dir = *state_dir;
  options.postgres = *flags.Get("postgres");
  // A password on the command line is visible to every user of the host in `ps`.
  if (options.postgres.find("password") != std::string::npos) {
    std::cerr << "squeeze-coordinator: --postgres: no passwords on the command line; give it in "
                 "PGPASSWORD or a PGPASSFILE (from a Secret)\n";
    return 2;
  }
  options.leader_id = *flags.Get("leader-id");
  options.stop_standby = &g_stop;
  if (flags.Has("store")) options.store_root = *flags.Get("store");
  options.sqlite_synchronous_full = flags.GetBool("sqlite-synchronous-full");
  options.metrics_listen = *flags.Get("metrics-listen");
  options.auth_tokens_file = *flags.Get("auth-tokens");
  options.tls_cert_file = *flags.Get("tls-cert");
  options.tls_key_file = *flags.Get("tls-key");
  options.tls_client_ca_file = *flags.Get("tls-client-ca");
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    std::cerr << "squeeze-coordinator: --tls-cert and --tls-key go together\n";
    return 2;
  }
  if (!options.tls_client_ca_file.empty() && options.tls_cert_file.empty()) {
    std::cerr << "squeeze-coordinator: --tls-client-ca needs --tls-cert and --tls-key\n";
    return 2;
  }
  for (auto [name, out] :
       {std::pair{"lease-timeout-ms", &options.scheduler.lease_timeout_ms},
        std::pair{"heartbeat-interval-ms", &options.scheduler.heartbeat_interval_ms},
        std::pair{"retry-backoff-ms", &options.scheduler.retry_backoff_base_ms},
        std::pair{"max-recipe-bytes", &options.recipe_limits.max_bytes},
        std::pair{"max-stages", &options.recipe_limits.max_stages},
        std::pair{"leader-lease-ms", &options.leader_lease_ms}}) {
    auto v = flags.GetInt(name);
    if (!v.ok() || *v <= 0) {
      std::cerr << "squeeze-coordinator: --" << name << ": expected a positive integer\n";
      return 2;
    }
    *out = *v;
  }
  if (options.recipe_limits.max_bytes > options.max_message_bytes / 2) {
    std::cerr << "squeeze-coordinator: --max-recipe-bytes: at most "
              << options.max_message_bytes / 2
              << " (half the gRPC message limit), so that every accepted job can be read back\n";
    return 2;
  }
  auto roots = squeeze::coordinator::TenantInputPolicy::ParseRoots(*flags.Get("tenant-roots"));
  if (!roots.ok()) {
    std::cerr << "squeeze-coordinator: " << roots.status().message() << "\n";
    return 2;
  }
  options.tenant_roots = *roots;
  auto limit = flags.GetInt("tenant-gpu-limit");
  if (!limit.ok() || *limit < 0) {
    std::cerr << "squeeze-coordinator: --tenant-gpu-limit: expected a non-negative integer\n";
    return 2;
  }
  options.scheduler.tenant_gpu_limit = static_cast<int>(*limit);

  std::signal(SIGTERM, [](int) { g_stop = true; });
  std::signal(SIGINT, [](int) { g_stop = true; });
  auto coordinator = squeeze::coordinator::Coordinator::Start(options);
  if (!coordinator.ok() && absl::IsCancelled(coordinator.status())) return 0;  // stopped in standby
  if (!coordinator.ok()) {
    std::cerr << "squeeze-coordinator: " << coordinator.status().message() << "\n";
    return 1;
  }
  SQ_LOG(INFO) << "listening on " << (*coordinator)->address() << "; state in "
               << (options.postgres.empty() ? options.state_dir + "/state.db" : "PostgreSQL")
               << "; store " << (*coordinator)->store_root();
  if (!options.metrics_listen.empty()) {
    SQ_LOG(INFO) << "metrics on http://" << (*coordinator)->metrics_address() << "/metrics";
  }
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  SQ_LOG(INFO) << "shutting down";
  (*coordinator)->Shutdown();
  return 0;
}
