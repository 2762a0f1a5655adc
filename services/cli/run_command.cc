// `squeezectl run RECIPE`: the whole job in one command. With a coordinator configured it submits
// there; otherwise it starts an embedded coordinator and an in-process worker over a local state
// directory (SQLite + file store), which is the single-machine default.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/base/flags.h"
#include "common/store/artifact_store.h"
#include "services/cli/commands.h"
#include "services/cli/embedded_service.h"
#include "services/cli/job_client.h"

namespace squeeze::cli {
namespace {

// Watches, prints the report, copies the outputs; returns the exit code.
int FollowJob(JobClient& client, const v1::Job& submitted, const Flags& flags) {
  const bool json = flags.GetBool("json");
  std::ostream& progress = json ? std::cerr : std::cout;
  progress << "job " << submitted.id() << " submitted\n";
  auto job = client.Watch(submitted.id(), progress, !json && ::isatty(STDOUT_FILENO), false);
  if (!job.ok()) return Fail(job.status());
  grpc::ClientContext context;
  v1::ListArtifactsRequest request;
  request.set_job_id(job->id());
  v1::ListArtifactsResponse artifacts;
  if (auto s = client.stub().ListArtifacts(&context, request, &artifacts); s.ok()) {
    for (const v1::Artifact& a : artifacts.artifacts()) {
      if (a.name() != "report") continue;
      auto store = OpenArtifactStore(a.uri());
      if (!store.ok()) break;
      auto report = (*store)->ReadFile(a.uri());
      if (report.ok()) std::cout << (json ? *report : DescribeReport(*report));
    }
  }
  if (job->state() == v1::SUCCEEDED && flags.Has("output")) {
    if (auto s = CopyJobOutputs(*job, client, *flags.Get("output")); !s.ok()) return Fail(s);
    if (!json) std::cout << "outputs copied to " << *flags.Get("output") << "\n";
  }
  return FinishWithJob(job, /*json=*/false);
}

}  // namespace

int RunRun(const Args& args) {
  Flags flags;
  ClientFlags(flags)
      .Value("output")
      .Value("state-dir")
      .Value("device", "cpu")
      .Value("tenant", "")
      .Value("priority", "0")
      .Positional(1, 1);
  if (auto s = flags.Parse(args); !s.ok()) return Fail(s);
  const std::string recipe = flags.positional()[0];
  auto priority = flags.GetInt("priority");
  if (!priority.ok()) return Fail(priority.status());

  std::string address;
  if (flags.Has("coordinator")) {
    address = *flags.Get("coordinator");
  } else if (const char* env = std::getenv("SQUEEZE_COORDINATOR"); env && *env) {
    address = env;
  }
  if (!address.empty()) {
    auto connected = Connect(flags, address);
    if (!connected.ok()) return Fail(connected.status());
    JobClient& client = **connected;
    auto job = SubmitRecipe(client, recipe, "", *flags.Get("tenant"), static_cast<int>(*priority),
                            nullptr);
    if (!job.ok()) return Fail(job.status());
    return FollowJob(client, *job, flags);
  }

  // Embedded: coordinator on a free loopback port, one worker thread in this process.
  const std::string state_dir =
      flags.Has("state-dir") ? *flags.Get("state-dir") : DefaultStateDir();
  auto embedded = EmbeddedService::Start(state_dir, *flags.Get("device"));
  if (!embedded.ok()) return Fail(embedded.status());
  JobClient client((*embedded)->address());
  int code;
  auto job =
      SubmitRecipe(client, recipe, "", *flags.Get("tenant"), static_cast<int>(*priority), nullptr);
  if (!job.ok()) {
    code = Fail(job.status());
  } else {
    // Progress goes to stderr with --json, so that stdout is the report alone.
    (flags.GetBool("json") ? std::cerr : std::cout)
        << "embedded coordinator on " << (*embedded)->address() << ", state in " << state_dir
        << "\n";
    code = FollowJob(client, *job, flags);
  }
  return code;
}

}  // namespace squeeze::cli
