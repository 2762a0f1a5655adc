// Real processes for integration tests: a coordinator and workers started from their binaries on
// loopback, killed with real signals, and a gRPC client to talk to them.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "squeeze/v1/jobs.grpc.pb.h"

namespace squeeze::testing {

// A child process with its output in `log_path`, started in `cwd` (or the test's directory).
class Process {
 public:
  Process(std::vector<std::string> argv, const std::string& log_path, const std::string& cwd = "");
  ~Process();  // SIGKILL if still running
  void Kill(int signal);
  int Wait();      // exit status
  bool Running();  // not exited (and not reaped by Wait)
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// Paths of the binaries under test and of the source tree (compiled in; the environment may
// override them).
std::string Env(const char* name);
int FreePort();
std::string SourceDir();

// Runs `argv`, returns (exit code, stdout + stderr).
std::pair<int, std::string> RunCommand(const std::vector<std::string>& argv);

// The files of the file-store artifact at `uri`, verified and placed under `scratch`.
std::string ArtifactDir(const std::string& uri, const std::string& scratch);

// SUCCEEDED, FAILED or CANCELLED.
bool Finished(const v1::Job& job);

class ServiceHarness {
 public:
  explicit ServiceHarness(const std::string& name);
  ~ServiceHarness();

  // Waits until it answers plaintext calls, unless `wait_ready` is false (TLS or auth, which the
  // harness's own client does not speak).
  void StartCoordinator(std::vector<std::string> extra = {}, bool wait_ready = true);
  void KillCoordinator();
  // A second coordinator with the same address and flags, which stands by (PostgreSQL state)
  // until the first one's leader lease lapses; PromoteStandby waits until it answers.
  void StartStandbyCoordinator(std::vector<std::string> extra);
  void PromoteStandby();
  // Returns an index for KillWorker.
  int StartWorker(const std::string& node, std::vector<std::string> extra = {});
  void KillWorker(int index);
  bool WorkerRunning(int index) { return workers_[index]->Running(); }

  // Processes started from now on run in `dir` (created if absent); "" for the test's own.
  void set_working_dir(const std::string& dir);

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& dir() const { return dir_; }
  v1::JobService::Stub& jobs() { return *stub_; }

  v1::Job Submit(const std::string& recipe_yaml, const std::string& request_id = "");
  v1::Job Get(const std::string& job_id);
  // Polls GetJob until `done(job)` or the timeout; returns the last job seen.
  v1::Job WaitFor(const std::string& job_id, const std::function<bool(const v1::Job&)>& done,
                  int timeout_ms = 120000);
  std::string WriteRecipe(const std::string& name, const std::string& yaml);
  // The job's report.json (file store), parsed; a test failure when it has none.
  nlohmann::json Report(const v1::Job& job);

 private:
  std::string dir_;
  int port_;
  std::vector<std::string> CoordinatorArgv(const std::vector<std::string>& extra);
  void WaitUntilServing();
  std::unique_ptr<Process> coordinator_;
  std::unique_ptr<Process> standby_;
  std::vector<std::unique_ptr<Process>> workers_;
  std::unique_ptr<v1::JobService::Stub> stub_;
  int restarts_ = 0;
  std::string working_dir_;
};

}  // namespace squeeze::testing
