#include "services/cli/embedded_service.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace squeeze::cli {

std::string DefaultStateDir() {
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg && *xdg)
    return absl::StrCat(xdg, "/squeeze");
  if (const char* home = std::getenv("HOME"); home && *home)
    return absl::StrCat(home, "/.local/state/squeeze");
  return ".squeeze";
}

absl::StatusOr<std::unique_ptr<EmbeddedService>> EmbeddedService::Start(
    const std::string& state_dir, const std::string& device) {
  // The service's own log lines (leases, registrations) would interleave with the progress the
  // command draws; only warnings and errors show, unless the user set a level. Set before the
  // first line is logged (the level is read once) and inherited by the task processes.
  ::setenv("SQUEEZE_LOG_LEVEL", "warning", /*overwrite=*/0);
  coordinator::CoordinatorOptions options;
  options.listen_address = "127.0.0.1:0";
  options.state_dir = state_dir;
  options.scheduler.lease_timeout_ms = 60000;
  auto started = coordinator::Coordinator::Start(options);
  if (!started.ok()) return started.status();
  std::unique_ptr<EmbeddedService> service(new EmbeddedService());
  service->coordinator_ = *std::move(started);
  service->address_ = service->coordinator_->address();
  service->state_dir_ = state_dir;
  worker::WorkerOptions worker_options;
  worker_options.coordinator = service->address_;
  worker_options.node = "embedded";
  worker_options.device = device;
  worker_options.lease_wait_ms = 500;
  service->worker_ = std::make_unique<worker::Worker>(worker_options);
  worker::Worker* w = service->worker_.get();
  service->worker_thread_ = std::thread([w] { w->Run().IgnoreError(); });
  return service;
}

EmbeddedService::~EmbeddedService() {
  if (worker_) worker_->Stop();
  if (worker_thread_.joinable()) worker_thread_.join();
  if (coordinator_) coordinator_->Shutdown();
}

}  // namespace squeeze::cli
