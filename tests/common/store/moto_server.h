// moto_server (an independent S3 implementation on the machine image) started on a free loopback
// port for the duration of a test suite.
#pragma once

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "common/store/s3_client.h"
#include "tests/common/free_port.h"

namespace squeeze::testing {

class MotoServer {
 public:
  // With `enforce_auth`, moto checks request signatures against its own IAM, where no access key
  // exists: every request is refused with 403, as a real S3 refuses wrong credentials.
  explicit MotoServer(bool enforce_auth = false) : port_(FreeLoopbackPort()) {
    pid_ = ::fork();
    if (pid_ == 0) {
      if (enforce_auth) ::setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0", 1);
      const std::string port = std::to_string(port_);
      std::freopen("/dev/null", "w", stdout);
      std::freopen("/dev/null", "w", stderr);
      ::execlp("moto_server", "moto_server", "-H", "127.0.0.1", "-p", port.c_str(), nullptr);
      _exit(127);
    }
  }
  ~MotoServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  S3Options Options() const {
    S3Options o;
    o.endpoint = endpoint();
    o.credentials = {"testing", "testing", ""};
    o.max_attempts = 3;
    o.backoff_ms = 20;
    return o;
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // Waits until it answers HTTP at all (any status).
  bool Answers() const {
    S3Client probe(Options());
    for (int i = 0; i < 100; ++i) {
      if (probe.CreateBucket("probe").code() != absl::StatusCode::kUnavailable) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }
  // Waits until it answers, creating `bucket`.
  bool Ready(const std::string& bucket) const {
    S3Client probe(Options());
    for (int i = 0; i < 100; ++i) {
      if (probe.CreateBucket(bucket).ok()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

 private:
  int port_;
  pid_t pid_ = -1;
};

}  // namespace squeeze::testing
