#include "tests/integration/service_harness.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "common/base/file_util.h"
#include "common/store/artifact_store.h"
#include "gtest/gtest.h"
#include "tests/common/free_port.h"

namespace squeeze::testing {

namespace fs = std::filesystem;

Process::Process(std::vector<std::string> argv, const std::string& log_path,
                 const std::string& cwd) {
  pid_ = ::fork();
  if (pid_ == 0) {
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) _exit(126);
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    _exit(127);
  }
}

Process::~Process() {
  if (pid_ > 0) {
    Kill(SIGKILL);
    Wait();
  }
}

void Process::Kill(int signal) {
  if (pid_ > 0) ::kill(pid_, signal);
}

int Process::Wait() {
  int status = 0;
  if (pid_ > 0) ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

bool Process::Running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

std::string Env(const char* name) {
  if (const char* v = std::getenv(name)) return v;  // an override wins
  const std::string n = name;
  if (n == "SQUEEZE_SOURCE_DIR") return SQUEEZE_SOURCE_DIR;
  if (n == "SQUEEZE_COORDINATOR_BIN") return SQUEEZE_COORDINATOR_BIN;
  if (n == "SQUEEZE_WORKER_BIN") return SQUEEZE_WORKER_BIN;
  if (n == "SQUEEZECTL_BIN") return SQUEEZECTL_BIN;
  throw std::runtime_error("unknown setting " + n);
}

std::string SourceDir() { return Env("SQUEEZE_SOURCE_DIR"); }

int FreePort() { return FreeLoopbackPort(); }

// The files of the artifact at `uri`, verified and placed under `scratch` by the store.
std::string ArtifactDir(const std::string& uri, const std::string& scratch) {
  auto store = OpenArtifactStore("file://");
  EXPECT_TRUE(store.ok());
  auto dir = (*store)->LocalDirectory(uri, scratch);
  EXPECT_TRUE(dir.ok()) << dir.status();
  return dir.ok() ? *dir : scratch;
}

bool Finished(const v1::Job& j) {
  return j.state() == v1::SUCCEEDED || j.state() == v1::FAILED || j.state() == v1::CANCELLED;
}

nlohmann::json ServiceHarness::Report(const v1::Job& job) {
  grpc::ClientContext context;
  v1::ListArtifactsRequest request;
  request.set_job_id(job.id());
  v1::ListArtifactsResponse response;
  EXPECT_TRUE(stub_->ListArtifacts(&context, request, &response).ok());
  for (const v1::Artifact& a : response.artifacts()) {
    if (a.name() != "report") continue;
    std::ifstream in(FilePathOfUri(a.uri()));
    std::stringstream ss;
    ss << in.rdbuf();
    return nlohmann::json::parse(ss.str());
  }
  ADD_FAILURE() << "job " << job.id() << " has no report";
  return {};
}

std::pair<int, std::string> RunCommand(const std::vector<std::string>& argv) {
  std::string cmd;
  for (const std::string& a : argv) cmd += "'" + a + "' ";
  cmd += "2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

ServiceHarness::ServiceHarness(const std::string& name) : port_(FreePort()) {
  dir_ = (fs::temp_directory_path() / ("squeeze_it_" + std::to_string(::getpid()) + "_" + name))
             .string();
  RemoveTree(dir_).IgnoreError();
  fs::create_directories(dir_);
  stub_ =
      v1::JobService::NewStub(grpc::CreateChannel(address(), grpc::InsecureChannelCredentials()));
}

ServiceHarness::~ServiceHarness() {
  workers_.clear();
  coordinator_.reset();
  if (!::testing::Test::HasFailure()) RemoveTree(dir_).IgnoreError();  // keep logs of failures
}

std::vector<std::string> ServiceHarness::CoordinatorArgv(const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {Env("SQUEEZE_COORDINATOR_BIN"), "--listen", address(),
                                   "--state-dir", dir_ + "/state"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

void ServiceHarness::set_working_dir(const std::string& dir) {
  if (!dir.empty()) std::filesystem::create_directories(dir);
  working_dir_ = dir;
}

void ServiceHarness::StartCoordinator(std::vector<std::string> extra, bool wait_ready) {
  coordinator_ = std::make_unique<Process>(
      CoordinatorArgv(extra), dir_ + "/coordinator-" + std::to_string(restarts_++) + ".log",
      working_dir_);
  if (wait_ready) WaitUntilServing();
}

void ServiceHarness::StartStandbyCoordinator(std::vector<std::string> extra) {
  standby_ = std::make_unique<Process>(CoordinatorArgv(extra), dir_ + "/coordinator-standby.log");
}

void ServiceHarness::PromoteStandby() {
  coordinator_ = std::move(standby_);
  WaitUntilServing();
}

void ServiceHarness::WaitUntilServing() {
  // Ready when it answers.
  for (int i = 0; i < 200; ++i) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
    v1::ListJobsRequest request;
    v1::ListJobsResponse response;
    if (stub_->ListJobs(&context, request, &response).ok()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  FAIL() << "coordinator did not start; see " << dir_;
}

void ServiceHarness::KillCoordinator() {
  coordinator_->Kill(SIGKILL);
  coordinator_->Wait();
}

int ServiceHarness::StartWorker(const std::string& node, std::vector<std::string> extra) {
  std::vector<std::string> argv = {
      Env("SQUEEZE_WORKER_BIN"), "--coordinator", address(), "--node", node, "--scratch",
      dir_ + "/scratch-" + node, "--threads",     "2"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  workers_.push_back(
      std::make_unique<Process>(argv, dir_ + "/worker-" + node + ".log", working_dir_));
  return static_cast<int>(workers_.size()) - 1;
}

void ServiceHarness::KillWorker(int index) {
  workers_[index]->Kill(SIGKILL);
  workers_[index]->Wait();
}

v1::Job ServiceHarness::Submit(const std::string& recipe_yaml, const std::string& request_id) {
  grpc::ClientContext context;
  v1::SubmitJobRequest request;
  request.set_recipe_yaml(recipe_yaml);
  request.set_request_id(request_id);
  v1::SubmitJobResponse response;
  grpc::Status s = stub_->SubmitJob(&context, request, &response);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return response.job();
}

v1::Job ServiceHarness::Get(const std::string& job_id) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  v1::Job job;
  stub_->GetJob(&context, request, &job);
  return job;
}

v1::Job ServiceHarness::WaitFor(const std::string& job_id,
                                const std::function<bool(const v1::Job&)>& done, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  v1::Job job;
  while (std::chrono::steady_clock::now() < deadline) {
    job = Get(job_id);
    if (!job.id().empty() && done(job)) return job;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ADD_FAILURE() << "timed out waiting for job " << job_id << "; last state "
                << v1::JobState_Name(job.state()) << "; logs in " << dir_;
  return job;
}

std::string ServiceHarness::WriteRecipe(const std::string& name, const std::string& yaml) {
  const std::string path = dir_ + "/" + name;
  std::ofstream(path) << yaml;
  return path;
}

}  // namespace squeeze::testing
