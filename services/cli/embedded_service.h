// The single-machine service inside squeezectl: a coordinator on a free loopback port over a
// local state directory (SQLite and the file store) and one worker thread. `squeezectl run`
// without a coordinator, and the offline `compress`, run their jobs on it.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "services/coordinator/coordinator.h"
#include "services/worker/worker.h"

namespace squeeze::cli {

// $XDG_STATE_HOME/squeeze, else ~/.local/state/squeeze, else ./.squeeze.
std::string DefaultStateDir();

class EmbeddedService {
 public:
  // `device`: the worker's ("cpu", "cuda", "cuda:1").
  static absl::StatusOr<std::unique_ptr<EmbeddedService>> Start(const std::string& state_dir,
                                                                const std::string& device);
  ~EmbeddedService();  // stops the worker, then the coordinator
  EmbeddedService(const EmbeddedService&) = delete;
  EmbeddedService& operator=(const EmbeddedService&) = delete;

  const std::string& address() const { return address_; }
  const std::string& state_dir() const { return state_dir_; }

 private:
  EmbeddedService() = default;
  std::unique_ptr<coordinator::Coordinator> coordinator_;
  std::unique_ptr<worker::Worker> worker_;
  std::thread worker_thread_;
  std::string address_;
  std::string state_dir_;
};

}  // namespace squeeze::cli
