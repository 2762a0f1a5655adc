// Tasks run in child processes of the worker, so that they can always be ended: a task blocked
// on a FIFO (in the kernel, deaf to the cancel flag its runner checks between steps) is ended by
// a cancel, by its stage's timeout and by the stall watchdog; a task that crashes fails its
// attempt. Each time the same worker process then runs the next job.
#include <sys/stat.h>

#include <chrono>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "tests/integration/service_harness.h"

namespace squeeze::testing {
namespace {

std::string QuantizeRecipe(const std::string& options, int max_attempts) {
  return "model: " + SourceDir() +
         "/deploy/models/fortunes-teacher\nmax_attempts: " + std::to_string(max_attempts) +
         "\nstages:\n  - quantize: {method: rtn, bits: 8" + options + "}\n";
}

// A job with no quantize stage: what the worker must still run afterwards.
std::string EvaluateRecipe() {
  const std::string src = SourceDir();
  return "model: " + src + "/deploy/models/fortunes-teacher\ndata: {evaluation: [" + src +
         "/deploy/data/fortunes/evaluation.jsonl]}\nstages:\n"
         "  - evaluate: {max_examples: 4, window: 64, stride: 32}\n";
}

// A FIFO that nobody writes to: opening it for reading blocks until the test ends.
std::string Fifo(const ServiceHarness& h) {
  const std::string path = h.dir() + "/never-written.fifo";
  EXPECT_EQ(::mkfifo(path.c_str(), 0600), 0);
  return path;
}

// The worker that ran `ended`'s task is still up and runs the next job.
void ExpectWorkerStillServes(ServiceHarness& h, int worker, const v1::Job& ended) {
  EXPECT_TRUE(h.WorkerRunning(worker)) << "the worker process survived its task";
  v1::Job next = h.WaitFor(h.Submit(EvaluateRecipe()).id(), Finished);
  EXPECT_EQ(next.state(), v1::SUCCEEDED) << next.error();
  EXPECT_EQ(next.tasks(0).worker_id(), ended.tasks(0).worker_id());
  EXPECT_TRUE(h.WorkerRunning(worker));
}

const std::vector<std::string> kCoordinatorFlags = {"--heartbeat-interval-ms", "200",
                                                    "--retry-backoff-ms", "100"};

TEST(TaskProcessTest, CancelEndsATaskBlockedOnAFifo) {
  ServiceHarness h("task_cancel");
  h.StartCoordinator(kCoordinatorFlags);
  const int w =
      h.StartWorker("w", {"--fault-inject", "quantize=block:" + Fifo(h), "--kill-grace-ms", "500"});
  v1::Job job = h.Submit(QuantizeRecipe("", 3));
  h.WaitFor(job.id(), [](const v1::Job& j) { return j.tasks(0).state() == v1::TASK_RUNNING; });
  std::this_thread::sleep_for(std::chrono::seconds(1));  // blocked in open(2) by now
  auto [code, out] =
      RunCommand({Env("SQUEEZECTL_BIN"), "cancel", job.id(), "--coordinator", h.address()});
  ASSERT_EQ(code, 0) << out;
  v1::Job done = h.WaitFor(job.id(), Finished, 30000);
  EXPECT_EQ(done.state(), v1::CANCELLED) << done.error();
  EXPECT_EQ(done.tasks(0).attempts(), 1);
  ExpectWorkerStillServes(h, w, done);
}

TEST(TaskProcessTest, StageTimeoutKillsABlockedTaskWithoutRetrying) {
  ServiceHarness h("task_timeout");
  h.StartCoordinator(kCoordinatorFlags);
  const int w = h.StartWorker("w", {"--fault-inject", "quantize=block:" + Fifo(h)});
  v1::Job job = h.Submit(QuantizeRecipe(", timeout: 2s", 3));
  v1::Job done = h.WaitFor(job.id(), Finished, 30000);
  EXPECT_EQ(done.state(), v1::FAILED);
  EXPECT_NE(done.error().find("longer than its stage's timeout of 2s"), std::string::npos)
      << done.error();
  EXPECT_EQ(done.tasks(0).attempts(), 1) << "a timeout would only repeat itself";
  ExpectWorkerStillServes(h, w, done);
}

TEST(TaskProcessTest, WatchdogKillsATaskWhoseProgressStops) {
  ServiceHarness h("task_stall");
  h.StartCoordinator(kCoordinatorFlags);
  const int w = h.StartWorker(
      "w", {"--fault-inject", "quantize=block:" + Fifo(h), "--stall-timeout-ms", "1500"});
  v1::Job job = h.Submit(QuantizeRecipe("", 2));
  v1::Job done = h.WaitFor(job.id(), Finished, 30000);
  EXPECT_EQ(done.state(), v1::FAILED);
  EXPECT_NE(done.error().find("made no progress for 1500ms"), std::string::npos) << done.error();
  EXPECT_EQ(done.tasks(0).attempts(), 2) << "a stall may be transient: it is retried";
  ExpectWorkerStillServes(h, w, done);
}

TEST(TaskProcessTest, CrashedTaskFailsItsAttemptAndTheWorkerLives) {
  ServiceHarness h("task_crash");
  h.StartCoordinator(kCoordinatorFlags);
  const int w = h.StartWorker("w", {"--fault-inject", "quantize=crash"});
  v1::Job job = h.Submit(QuantizeRecipe("", 2));
  v1::Job done = h.WaitFor(job.id(), Finished, 30000);
  EXPECT_EQ(done.state(), v1::FAILED);
  EXPECT_NE(done.error().find("died of signal 11"), std::string::npos) << done.error();
  EXPECT_EQ(done.tasks(0).attempts(), 2);
  ExpectWorkerStillServes(h, w, done);
}

// Without faults, a task's process runs it to the end and its progress reaches the job.
TEST(TaskProcessTest, TaskProcessReportsProgressAndOutputs) {
  ServiceHarness h("task_ok");
  h.StartCoordinator(kCoordinatorFlags);
  h.StartWorker("w");
  v1::Job done = h.WaitFor(h.Submit(QuantizeRecipe(", timeout: 10m", 1)).id(), Finished);
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
  EXPECT_GT(done.tasks(0).progress().total(), 0);
  EXPECT_EQ(done.tasks(0).progress().completed(), done.tasks(0).progress().total());
  nlohmann::json report = h.Report(done);
  EXPECT_EQ(report["stages"][0]["kind"], "quantize");
}

}  // namespace
}  // namespace squeeze::testing
