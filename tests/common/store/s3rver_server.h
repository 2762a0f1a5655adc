// s3rver (an independent S3 implementation from npm, installed by scripts/install-test-peers.sh)
// started on a free loopback port for the duration of a test. It checks SigV4 signatures against
// its fixed credentials and, unlike moto_server, answers 501 to ListMultipartUploads.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "common/base/file_util.h"
#include "common/store/s3_client.h"
#include "tests/common/free_port.h"

namespace squeeze::testing {

class S3rverServer {
 public:
  S3rverServer() : port_(FreeLoopbackPort()) {
    dir_ = std::filesystem::temp_directory_path() /
           ("s3rver_" + std::to_string(::getpid()) + "_" + std::to_string(port_));
    std::filesystem::create_directories(dir_);
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string port = std::to_string(port_);
      std::freopen("/dev/null", "w", stdout);
      std::freopen("/dev/null", "w", stderr);
      ::execl(Binary().c_str(), "s3rver", "-d", dir_.c_str(), "-a", "127.0.0.1", "-p", port.c_str(),
              "-s", "--no-vhost-buckets", nullptr);
      _exit(127);
    }
  }
  ~S3rverServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    RemoveTree(dir_).IgnoreError();
  }
  static std::string Binary() {
    const char* source = std::getenv("SQUEEZE_SOURCE_DIR");
    return std::string(source ? source : ".") + "/tests/peers/node_modules/.bin/s3rver";
  }
  static bool Installed() { return ::access(Binary().c_str(), X_OK) == 0; }
  S3Options Options() const {
    S3Options o;
    o.endpoint = endpoint();
    o.credentials = {"S3RVER", "S3RVER", ""};  // s3rver's built-in account
    o.max_attempts = 3;
    o.backoff_ms = 20;
    return o;
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // Waits until it answers, creating `bucket`.
  bool Ready(const std::string& bucket) const {
    S3Client probe(Options());
    for (int i = 0; i < 200; ++i) {
      if (probe.CreateBucket(bucket).ok()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

 private:
  int port_;
  std::filesystem::path dir_;
  pid_t pid_ = -1;
};

}  // namespace squeeze::testing
