// squeeze-worker: runs tasks leased from a coordinator, each in a child process of its own
// (`squeeze-worker run-task`, started by the worker itself).
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <ATen/Context.h>

#include "absl/strings/str_split.h"
#include "common/base/flags.h"
#include "common/rpc/client_channel.h"
#include "services/worker/worker.h"

namespace {
squeeze::worker::Worker* g_worker = nullptr;
}

// A non-negative integer flag, or exits naming it.
int64_t NonNegative(const squeeze::Flags& flags, const std::string& name,
                    const std::string& meaning) {
  auto value = flags.GetInt(name);
  if (!value.ok() || *value < 0) {
    std::cerr << "squeeze-worker: --" << name << ": expected a non-negative integer (" << meaning
              << ")\n";
    std::exit(2);
  }
  return *value;
}

int main(int argc, char** argv) {
  // A task's own process, started by a worker with the task on stdin.
  if (argc >= 2 && std::string(argv[1]) == "run-task") {
    return squeeze::worker::RunTaskProcessMain(0, squeeze::worker::kTaskEventFd);
  }
  // A task that exits while the worker writes to it must not take the worker down.
  std::signal(SIGPIPE, SIG_IGN);
  squeeze::Flags flags;
  char host[256] = "local";
  ::gethostname(host, sizeof(host));
  flags.Value("coordinator", "127.0.0.1:7070")
      .Value("node", host)
      .Value("device", "cpu")
      .Value("scratch")
      .Value("rendezvous")
      .Value("step-delay-ms", "0")
      .Value("stall-timeout-ms", "1800000")
      .Value("kill-grace-ms", "10000")
      .Value("fault-inject", "")
      .Value("threads", "0")
      .Value("metrics-listen", "")
      .Value("token")  // refused: tokens do not go on the command line
      .Value("token-file", "")
      .Value("tls-ca", "")
      .Value("tls-cert", "")
      .Value("tls-key", "");
  if (auto s = flags.Parse({argv + 1, argv + argc}); !s.ok()) {
    std::cerr << "squeeze-worker: " << s.message() << "\n";
    return 2;
  }
  squeeze::worker::WorkerOptions options;
  options.coordinator = *flags.Get("coordinator");
  options.node = *flags.Get("node");
  options.device = *flags.Get("device");
  if (options.device != "cpu" && options.device.rfind("cuda", 0) != 0) {
    std::cerr << "squeeze-worker: --device: expected cpu or cuda[:N], got \"" << options.device
              << "\"\n";
    return 2;
  }
  if (options.device != "cpu" && !at::hasCUDA()) {
    std::cerr << "squeeze-worker: --device " << options.device
              << ": this build or machine has no CUDA\n";
    return 2;
  }
  if (flags.Has("scratch")) options.scratch_dir = *flags.Get("scratch");
  if (flags.Has("rendezvous")) options.rendezvous_address = *flags.Get("rendezvous");
  options.metrics_listen = *flags.Get("metrics-listen");
  // The token from a file or the environment (a Secret), never argv, where `ps` shows it.
  if (flags.Has("token")) {
    std::cerr << "squeeze-worker: " << squeeze::kTokenOnCommandLine << "\n";
    return 2;
  }
  auto token = squeeze::ClientToken(*flags.Get("token-file"), "SQUEEZE_WORKER_TOKEN");
  if (!token.ok()) {
    std::cerr << "squeeze-worker: --token-file: " << token.status().message() << "\n";
    return 2;
  }
  options.token = *token;
  options.tls_ca_file = *flags.Get("tls-ca");
  options.tls_cert_file = *flags.Get("tls-cert");
  options.tls_key_file = *flags.Get("tls-key");
  options.step_delay_ms = NonNegative(flags, "step-delay-ms", "a pause at every step");
  options.stall_timeout_ms =
      NonNegative(flags, "stall-timeout-ms", "0 lets a task without progress run forever");
  options.kill_grace_ms = NonNegative(flags, "kill-grace-ms", "0 kills a cancelled task at once");
  // kind=block:PATH or kind=crash, comma-separated: for tests and drills only.
  for (absl::string_view item :
       absl::StrSplit(*flags.Get("fault-inject"), ',', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(item, absl::MaxSplits('=', 1));
    if (kv.first.empty() || (kv.second != "crash" && kv.second.rfind("block:", 0) != 0)) {
      std::cerr << "squeeze-worker: --fault-inject: expected KIND=crash or KIND=block:PATH, got \""
                << item << "\"\n";
      return 2;
    }
    options.faults[kv.first] = kv.second;
  }
  const int64_t threads = NonNegative(flags, "threads", "0: libtorch's default");
  // Several workers on one host each default to every core; --threads keeps them from fighting.
  options.threads = static_cast<int32_t>(threads);
  squeeze::worker::Worker worker(options);
  g_worker = &worker;
  std::signal(SIGTERM, [](int) { g_worker->Stop(); });
  std::signal(SIGINT, [](int) { g_worker->Stop(); });
  auto status = worker.Run();
  if (!status.ok()) {
    std::cerr << "squeeze-worker: " << status.message() << "\n";
    return 1;
  }
  return 0;
}
