// A standby coordinator over PostgreSQL: the leader is SIGKILLed mid-job, the standby takes the
// lapsed leader lease, binds the same address (as a Kubernetes Service's endpoint would move) and
// finishes every job exactly once; clients and workers reconnect on their own.
#include <sys/wait.h>

#include <csignal>
#include <fstream>
#include <sstream>
#include <thread>

#include "gtest/gtest.h"
#include "tests/common/postgres_server.h"
#include "tests/integration/service_harness.h"

namespace squeeze::testing {
namespace {

std::string ThreeStages() {
  const std::string src = SourceDir();
  return "model: " + src + "/deploy/models/fortunes-teacher\ndata: {evaluation: [" + src +
         "/deploy/data/fortunes/evaluation.jsonl]}\nstages:\n"
         "  - evaluate: {max_examples: 8, window: 64, stride: 32}\n"
         "  - quantize: {method: rtn, bits: 8}\n"
         "  - evaluate: {max_examples: 8, window: 64, stride: 32}\n";
}

std::string FileText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(FailoverTest, StandbyFinishesEveryJobExactlyOnceAfterTheLeaderIsKilled) {
  PostgresServer pg;
  ASSERT_TRUE(pg.started()) << "see " << pg.dir();
  ServiceHarness h("failover");
  const std::vector<std::string> flags = {
      "--postgres",         pg.conninfo(), "--leader-lease-ms",       "1500",
      "--lease-timeout-ms", "8000",        "--heartbeat-interval-ms", "200"};
  auto with_id = [&](const std::string& id) {
    std::vector<std::string> f = flags;
    f.insert(f.end(), {"--leader-id", id});
    return f;
  };
  h.StartCoordinator(with_id("first"));
  h.StartStandbyCoordinator(with_id("second"));
  h.StartWorker("w", {"--step-delay-ms", "300"});
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i)
    ids.push_back(h.Submit(ThreeStages(), "req-" + std::to_string(i)).id());
  h.WaitFor(ids[0], [](const v1::Job& j) {
    return j.tasks(0).state() == v1::TASK_RUNNING || j.tasks(1).state() == v1::TASK_RUNNING;
  });

  h.KillCoordinator();
  h.PromoteStandby();
  EXPECT_NE(FileText(h.dir() + "/coordinator-standby.log").find("second: now leading"),
            std::string::npos);
  for (int i = 0; i < 3; ++i) {
    // A client retrying its submission through the same address gets the same job back.
    EXPECT_EQ(h.Submit(ThreeStages(), "req-" + std::to_string(i)).id(), ids[i]);
  }
  for (const std::string& id : ids) {
    v1::Job done = h.WaitFor(id, Finished);
    ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
    for (const v1::Task& t : done.tasks())
      EXPECT_EQ(t.attempts(), 1) << id << " stage " << t.index() << " ran once; " << t.error();
  }
  grpc::ClientContext context;
  v1::ListJobsRequest request;
  v1::ListJobsResponse response;
  ASSERT_TRUE(h.jobs().ListJobs(&context, request, &response).ok());
  EXPECT_EQ(response.jobs_size(), 3) << "no job lost or duplicated";

  // A third coordinator stands by behind the new leader, and stops cleanly when told to.
  std::vector<std::string> argv = {Env("SQUEEZE_COORDINATOR_BIN"), "--listen", h.address(),
                                   "--state-dir", h.dir() + "/state"};
  for (const std::string& f : with_id("third")) argv.push_back(f);
  Process third(argv, h.dir() + "/coordinator-third.log");
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_NE(FileText(h.dir() + "/coordinator-third.log").find("third: standing by"),
            std::string::npos);
  third.Kill(SIGTERM);
  const int status = third.Wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(FailoverTest, PasswordsStayOffTheCommandLine) {
  auto [code, out] = RunCommand({Env("SQUEEZE_COORDINATOR_BIN"), "--state-dir", "/tmp/unused",
                                 "--postgres", "host=db user=squeeze password=hunter2"});
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("--postgres: no passwords on the command line"), std::string::npos) << out;
}

}  // namespace
}  // namespace squeeze::testing
