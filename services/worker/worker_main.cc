// squeeze-worker: runs tasks leased from a coordinator.
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <ATen/Parallel.h>

#include "common/rpc/client_channel.h"
#include "services/cli/flags.h"
#include "services/worker/worker.h"

namespace {
squeeze::worker::Worker* g_worker = nullptr;
}

int main(int argc, char** argv) {
  squeeze::cli::Flags flags;
  char host[256] = "local";
  ::gethostname(host, sizeof(host));
  flags.Value("coordinator", "127.0.0.1:7070")
      .Value("node", host)
      .Value("device", "cpu")
      .Value("scratch")
      .Value("rendezvous")
      .Value("step-delay-ms", "0")
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
  auto delay = flags.GetInt("step-delay-ms");
  if (!delay.ok() || *delay < 0) {
    std::cerr << "squeeze-worker: --step-delay-ms: expected a non-negative integer\n";
    return 2;
  }
  options.step_delay_ms = *delay;
  auto threads = flags.GetInt("threads");
  if (!threads.ok() || *threads < 0) {
    std::cerr
        << "squeeze-worker: --threads: expected a non-negative integer (0: libtorch's default)\n";
    return 2;
  }
  // Several workers on one host each default to every core; --threads keeps them from fighting.
  if (*threads > 0) at::set_num_threads(static_cast<int>(*threads));
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
