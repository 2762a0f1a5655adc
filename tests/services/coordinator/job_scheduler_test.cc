#include "services/coordinator/job_scheduler.h"
#include "services/coordinator/state_transitions.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "common/base/file_util.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"

namespace squeeze::coordinator {
namespace {

namespace fs = std::filesystem;

class FakeClock : public Clock {
 public:
  int64_t NowMs() override { return now_; }
  void Advance(int64_t ms) { now_ += ms; }

 private:
  std::atomic<int64_t> now_{1'700'000'000'000};
};

constexpr char kThreeStages[] = R"(
model: /models/teacher
data: {evaluation: [/data/eval.jsonl]}
max_attempts: 3
stages:
  - evaluate: {}
  - quantize: {bits: 4, timeout: 45m}
  - evaluate: {gate: {min_retention: 0.5}}
)";

v1::StageResult Evaluated(double perplexity) {
  v1::StageResult r;
  r.mutable_evaluate()->set_perplexity(perplexity);
  return r;
}

v1::StageResult Quantized(int bits) {
  v1::StageResult r;
  r.mutable_quantize()->set_bits(bits);
  return r;
}

class JobSchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("scheduler_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    RemoveTree(dir_).IgnoreError();
    fs::create_directories(dir_);
    artifacts_ = *OpenArtifactStore("file://");
    options_.lease_timeout_ms = 10'000;
    options_.retry_backoff_base_ms = 1'000;
    options_.store_root = "file://" + (dir_ / "store").string();
    Restart();
  }
  void TearDown() override {
    scheduler_.reset();
    state_.reset();
    RemoveTree(dir_).IgnoreError();
  }

  // A new scheduler over the same database, as after a crash (nothing is shut down cleanly).
  void Restart() {
    scheduler_.reset();
    state_.reset();
    state_ = *OpenSqliteStateStore((dir_ / "state.db").string());
    scheduler_ = std::make_unique<JobScheduler>(state_.get(), artifacts_.get(), &clock_, options_);
    ASSERT_TRUE(scheduler_->Recover().ok());
  }

  std::string RegisterWorker(const std::string& node, int gpus = 0, const std::string& id = "") {
    v1::RegisterWorkerRequest r;
    r.set_node(node);
    r.set_worker_id(id);
    r.set_rendezvous_address(node + ":29500");
    for (int i = 0; i < gpus; ++i) r.add_devices()->set_name("cuda:" + std::to_string(i));
    if (gpus == 0) r.add_devices()->set_name("cpu");
    r.add_capabilities("evaluate");
    r.add_capabilities("quantize");
    return scheduler_->Register(r).worker_id();
  }

  v1::Job Submit(const std::string& yaml = kThreeStages, const std::string& request_id = "",
                 const std::string& tenant = "", int priority = 0) {
    auto recipe = ParseRecipe(yaml);
    EXPECT_TRUE(recipe.ok()) << recipe.status();
    v1::SubmitJobRequest request;
    request.set_recipe_yaml(yaml);
    request.set_request_id(request_id);
    request.set_tenant(tenant);
    request.set_priority(priority);
    auto response = scheduler_->Submit(request, *recipe);
    EXPECT_TRUE(response.ok()) << response.status();
    return response->job();
  }

  std::optional<v1::TaskLease> Lease(const std::string& worker, int64_t wait_ms = 0) {
    auto lease = scheduler_->Lease(worker, wait_ms);
    EXPECT_TRUE(lease.ok()) << lease.status();
    return lease.ok() ? *lease : std::nullopt;
  }

  // The job's report.json, found through its artifacts; null when there is none.
  nlohmann::json Report(const std::string& job_id) {
    auto artifacts = scheduler_->Artifacts(job_id);
    if (!artifacts.ok()) return nullptr;
    for (const v1::Artifact& a : artifacts->artifacts()) {
      if (a.name() != "report") continue;
      auto text = artifacts_->ReadFile(a.uri());
      return text.ok() ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
    }
    return nullptr;
  }

  absl::Status Complete(const std::string& worker, const v1::TaskLease& lease,
                        std::map<std::string, std::string> outputs = {},
                        const v1::StageResult& result = {}) {
    v1::CompleteTaskRequest r;
    r.set_worker_id(worker);
    r.set_task_id(lease.task_id());
    r.set_attempt(lease.attempt());
    for (const auto& [k, v] : outputs) (*r.mutable_outputs())[k] = v;
    *r.mutable_result() = result;
    return scheduler_->Complete(r);
  }

  absl::Status Fail(const std::string& worker, const v1::TaskLease& lease, bool retryable,
                    bool cancelled = false, const std::string& error = "boom") {
    v1::FailTaskRequest r;
    r.set_worker_id(worker);
    r.set_task_id(lease.task_id());
    r.set_attempt(lease.attempt());
    r.set_error(error);
    r.set_retryable(retryable);
    r.set_cancelled(cancelled);
    return scheduler_->Fail(r);
  }

  v1::HeartbeatResponse Heartbeat(const std::string& worker, const v1::TaskLease& lease,
                                  int64_t done = 0) {
    v1::HeartbeatRequest r;
    r.set_worker_id(worker);
    r.set_task_id(lease.task_id());
    r.set_attempt(lease.attempt());
    r.mutable_progress()->set_completed(done);
    r.mutable_progress()->set_total(10);
    r.mutable_progress()->set_unit(v1::PROGRESS_UNIT_STEPS);
    auto response = scheduler_->Heartbeat(r);
    EXPECT_TRUE(response.ok()) << response.status();
    return *response;
  }

  v1::Job Get(const std::string& id) { return *scheduler_->Get(id); }

  fs::path dir_;
  FakeClock clock_;
  SchedulerOptions options_;
  std::unique_ptr<ArtifactStore> artifacts_;
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<JobScheduler> scheduler_;
};

TEST_F(JobSchedulerTest, JobRunsItsStagesInOrderAndEndsWithAReport) {
  const std::string w = RegisterWorker("a");
  v1::Job job = Submit();
  EXPECT_EQ(job.state(), v1::QUEUED);
  ASSERT_EQ(job.tasks_size(), 3);

  auto l0 = Lease(w);
  ASSERT_TRUE(l0);
  EXPECT_EQ(l0->kind(), "evaluate");
  EXPECT_EQ(l0->inputs().at("model"), "/models/teacher");
  EXPECT_EQ(Get(job.id()).state(), v1::RUNNING);
  EXPECT_FALSE(Heartbeat(w, *l0, 4).cancel());
  EXPECT_EQ(Get(job.id()).tasks(0).progress().completed(), 4);
  EXPECT_FALSE(Lease(w)) << "one task at a time per worker";
  ASSERT_TRUE(Complete(w, *l0, {{"evaluation", "file:///x/0"}}, Evaluated(5.0)).ok());

  auto l1 = Lease(w);
  ASSERT_TRUE(l1);
  EXPECT_EQ(l1->kind(), "quantize");
  EXPECT_EQ(l1->stage().quantize().bits(), 4);
  EXPECT_EQ(l1->timeout_ms(), 45 * 60 * 1000) << "the stage's timeout reaches its worker";
  EXPECT_EQ(l0->timeout_ms(), 0);
  ASSERT_TRUE(Complete(w, *l1, {{"model", "file:///x/1-quantize"}}, Quantized(4)).ok());

  auto l2 = Lease(w);
  ASSERT_TRUE(l2);
  EXPECT_EQ(l2->inputs().at("model"), "file:///x/1-quantize")
      << "later stages get the compressed model";
  EXPECT_EQ(l2->baseline().perplexity(), 5.0);
  ASSERT_TRUE(Complete(w, *l2, {{"evaluation", "file:///x/2"}}, Evaluated(5.5)).ok());

  v1::Job done = Get(job.id());
  EXPECT_EQ(done.state(), v1::SUCCEEDED);
  for (const v1::Task& t : done.tasks()) {
    EXPECT_EQ(t.state(), v1::TASK_SUCCEEDED);
    EXPECT_EQ(t.attempts(), 1);
  }
  const nlohmann::json report = Report(job.id());
  ASSERT_TRUE(report.is_object()) << "the job has a readable report artifact";
  EXPECT_EQ(report["model"], "file:///x/1-quantize");
  EXPECT_EQ(report["stages"][2]["result"]["perplexity"], 5.5);

  bool finished = false;
  auto events = scheduler_->Events(job.id(), 0, 0, &finished);
  ASSERT_TRUE(events.ok());
  EXPECT_TRUE(finished);
  EXPECT_EQ(events->back().state(), v1::SUCCEEDED);
}

TEST_F(JobSchedulerTest, RepeatedRequestIdReturnsTheFirstJob) {
  v1::Job a = Submit(kThreeStages, "req-1");
  v1::Job b = Submit(kThreeStages, "req-1");
  EXPECT_EQ(a.id(), b.id());
  // The same id with another request is refused, naming the job it belongs to.
  const std::string other = std::string(kThreeStages) + "# another recipe\n";
  v1::SubmitJobRequest reused;
  reused.set_recipe_yaml(other);
  reused.set_request_id("req-1");
  auto refused = scheduler_->Submit(reused, *ParseRecipe(other));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(refused.status().message().find("was used for job " + a.id()), std::string::npos)
      << refused.status();
  v1::Job other_tenant = Submit(kThreeStages, "req-1", "team-b");
  EXPECT_NE(a.id(), other_tenant.id());
  Restart();
  EXPECT_EQ(Submit(kThreeStages, "req-1").id(), a.id()) << "idempotency survives a restart";
  v1::ListJobsRequest list;
  EXPECT_EQ(scheduler_->List(list)->jobs_size(), 2);
}

TEST_F(JobSchedulerTest, CancelQueuedIsImmediateAndRunningStopsAtTheWorker) {
  v1::Job queued = Submit();
  EXPECT_EQ(scheduler_->Cancel(queued.id())->state(), v1::CANCELLED);

  const std::string w = RegisterWorker("a");
  v1::Job running = Submit();
  auto lease = Lease(w);
  ASSERT_TRUE(lease);
  EXPECT_EQ(lease->job_id(), running.id()) << "cancelled jobs are not leased";
  v1::Job j = *scheduler_->Cancel(running.id());
  EXPECT_EQ(j.state(), v1::RUNNING);
  EXPECT_TRUE(j.cancel_requested());
  EXPECT_TRUE(Heartbeat(w, *lease).cancel());
  ASSERT_TRUE(Fail(w, *lease, false, /*cancelled=*/true, "cancelled").ok());
  j = Get(running.id());
  EXPECT_EQ(j.state(), v1::CANCELLED);
  for (const v1::Task& t : j.tasks()) EXPECT_EQ(t.state(), v1::TASK_CANCELLED);
  EXPECT_FALSE(Lease(w));
  EXPECT_EQ(scheduler_->Cancel("job-nope").status().code(), absl::StatusCode::kNotFound);
  // AIP-216: an ended job cannot be cancelled.
  auto again = scheduler_->Cancel(running.id());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(again.status().message(),
            "job " + running.id() + " already ended CANCELLED: nothing to cancel");
}

TEST_F(JobSchedulerTest, ExpiredLeaseGoesToAnotherWorkerAfterBackoff) {
  const std::string a = RegisterWorker("a"), b = RegisterWorker("b");
  v1::Job job = Submit();
  auto first = Lease(a);
  ASSERT_TRUE(first);
  clock_.Advance(options_.lease_timeout_ms + 1);
  EXPECT_EQ(scheduler_->ExpireLeases(), 1);
  v1::Job j = Get(job.id());
  EXPECT_EQ(j.tasks(0).state(), v1::TASK_QUEUED);
  EXPECT_NE(j.tasks(0).error().find("lease expired"), std::string::npos);
  EXPECT_FALSE(Lease(b)) << "retry waits for its backoff";
  clock_.Advance(options_.retry_backoff_base_ms);
  auto second = Lease(b);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->task_id(), first->task_id());
  EXPECT_EQ(second->attempt(), 2);
  // The first worker comes back: it is told to stop, and its result is refused.
  EXPECT_TRUE(Heartbeat(a, *first).cancel());
  EXPECT_EQ(Complete(a, *first).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Complete(b, *second).ok());
}

TEST_F(JobSchedulerTest, TaskThatKeepsFailingFailsTheJobAfterMaxAttempts) {
  const std::string w = RegisterWorker("a");
  v1::Job job = Submit(R"(
model: /m
stages:
  - quantize: {max_attempts: 2}
)");
  auto l1 = Lease(w);
  ASSERT_TRUE(Fail(w, *l1, /*retryable=*/true, false, "out of memory").ok());
  clock_.Advance(10'000);
  auto l2 = Lease(w);
  ASSERT_TRUE(l2);
  ASSERT_TRUE(Fail(w, *l2, true, false, "out of memory again").ok());
  v1::Job j = Get(job.id());
  EXPECT_EQ(j.state(), v1::FAILED);
  EXPECT_NE(j.error().find("after 2 attempt(s): out of memory again"), std::string::npos)
      << j.error();
  EXPECT_EQ(j.tasks(0).attempts(), 2);

  v1::Job fatal = Submit(R"(
model: /m
stages:
  - quantize: {}
)");
  clock_.Advance(10'000);
  auto l3 = Lease(w);
  ASSERT_TRUE(Fail(w, *l3, /*retryable=*/false, false, "bad input").ok());
  EXPECT_EQ(Get(fatal.id()).state(), v1::FAILED) << "non-retryable errors fail at once";
}

// A failed job's checkpoints can never be resumed from: the scheduler deletes them (blobs and
// all, as they are private to the checkpoint), also after a restart that came before it could.
TEST_F(JobSchedulerTest, FailedJobsReleaseTheirCheckpoints) {
  const std::string w = RegisterWorker("a");
  v1::Job job = Submit(R"(
model: /m
stages:
  - quantize: {max_attempts: 1}
)");
  auto lease = Lease(w);
  ASSERT_TRUE(lease);
  ASSERT_FALSE(lease->checkpoint_uri().empty());
  const fs::path layer = dir_ / "layer";
  fs::create_directories(layer);
  std::ofstream(layer / "model.safetensors") << std::string(4096, 'c');
  ASSERT_TRUE(artifacts_
                  ->PutDirectory(layer.string(), lease->checkpoint_uri() + "/layer-0", {},
                                 CheckpointPutOptions())
                  .ok());
  const fs::path ckpt = FilePathOfUri(lease->checkpoint_uri());
  ASSERT_TRUE(fs::exists(ckpt / "layer-0" / "manifest.json"));

  ASSERT_TRUE(Fail(w, *lease, /*retryable=*/false, false, "bad input").ok());
  ASSERT_EQ(Get(job.id()).state(), v1::FAILED);
  Restart();  // as if the coordinator died before releasing them
  EXPECT_EQ(scheduler_->ReleaseCheckpoints(), 1);
  EXPECT_FALSE(fs::exists(ckpt)) << "the checkpoint and its private blobs are deleted";
  Restart();
  EXPECT_EQ(scheduler_->ReleaseCheckpoints(), 0) << "released once, and recorded";

  // A job that succeeds is left alone here (its runner deletes its own checkpoint).
  const std::string w2 = RegisterWorker("b");
  v1::Job ok = Submit(R"(
model: /m
stages:
  - quantize: {}
)");
  auto l2 = Lease(w2);
  ASSERT_TRUE(l2);
  ASSERT_TRUE(Complete(w2, *l2, {{"model", "file:///out"}}).ok());
  EXPECT_EQ(scheduler_->ReleaseCheckpoints(), 0);
}

// Pages of ListJobs stay under max_page_bytes however large the recipes, so that every page fits
// in a gRPC message; the tokens still walk every job exactly once.
TEST_F(JobSchedulerTest, ListPagesStayUnderTheirByteBudget) {
  options_.max_page_bytes = 200 << 10;
  Restart();
  const std::string padding = "# " + std::string(60 << 10, 'p') + "\n";
  for (int i = 0; i < 10; ++i) Submit(padding + "model: /m\nstages:\n  - quantize: {}\n");
  std::set<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    v1::ListJobsRequest request;
    request.set_page_size(100);
    request.set_page_token(token);
    auto page = scheduler_->List(request);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_LE(page->ByteSizeLong(), static_cast<size_t>(options_.max_page_bytes) + 1024);
    for (const v1::Job& j : page->jobs()) EXPECT_TRUE(seen.insert(j.id()).second);
    token = page->next_page_token();
    ++pages;
  } while (!token.empty() && pages < 20);
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_GE(pages, 4);
}

// AIP-158: sizes are validated, and tokens are opaque and bound to the filter they came from.
TEST_F(JobSchedulerTest, ListValidatesPageSizeAndTokensBoundToTheirFilter) {
  for (int i = 0; i < 3; ++i) Submit(kThreeStages, "", i < 2 ? "team-a" : "team-b");
  v1::ListJobsRequest request;
  request.set_page_size(-1);
  EXPECT_EQ(scheduler_->List(request).status().message(),
            "page_size: must be 0 (the default, 50) or positive, got -1");
  request.set_page_size(1);
  request.set_tenant("team-a");
  auto first = scheduler_->List(request);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->jobs_size(), 1);
  ASSERT_FALSE(first->next_page_token().empty());
  EXPECT_EQ(first->next_page_token().find_first_not_of("0123456789"), 0u) << "not a bare number";
  request.set_page_token(first->next_page_token());
  auto second = scheduler_->List(request);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(second->jobs_size(), 1);
  EXPECT_NE(second->jobs(0).id(), first->jobs(0).id());
  EXPECT_TRUE(second->next_page_token().empty()) << "team-a has two jobs";
  request.set_tenant("team-b");
  EXPECT_EQ(scheduler_->List(request).status().message(),
            "page_token: issued for another filter (state, tenant); start again without it");
  request.set_page_token("12");
  EXPECT_EQ(scheduler_->List(request).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JobSchedulerTest, RestartKeepsEveryJobAndLease) {
  const std::string w = RegisterWorker("a");
  v1::Job a = Submit(), b = Submit(), c = Submit();
  auto lease = Lease(w);
  ASSERT_TRUE(lease);
  EXPECT_EQ(lease->job_id(), a.id());
  Restart();
  // The worker's next call fails until it registers again, under its old id.
  EXPECT_EQ(scheduler_->Lease(w, 0).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(RegisterWorker("a", 0, w), w);
  EXPECT_FALSE(Heartbeat(w, *lease).cancel()) << "the lease survived the restart";
  EXPECT_FALSE(Lease(w)) << "still busy with its leased task";
  ASSERT_TRUE(Complete(w, *lease, {}, Evaluated(1.0)).ok());
  // Drain everything: all three jobs finish, every task ran exactly once.
  for (int i = 0; i < 20; ++i) {
    auto l = Lease(w);
    if (!l) break;
    ASSERT_TRUE(Complete(w, *l, {}, Evaluated(1.0)).ok());
  }
  for (const auto& id : {a.id(), b.id(), c.id()}) {
    v1::Job j = Get(id);
    EXPECT_EQ(j.state(), v1::SUCCEEDED);
    for (const v1::Task& t : j.tasks()) EXPECT_EQ(t.attempts(), 1);
  }
}

TEST_F(JobSchedulerTest, PriorityThenFifo) {
  const std::string w = RegisterWorker("a");
  const std::string one_stage = "model: /m\nstages:\n  - quantize: {}\n";
  v1::Job low1 = Submit(one_stage, "", "", 0);
  v1::Job low2 = Submit(one_stage, "", "", 0);
  v1::Job high = Submit(one_stage, "", "", 5);
  std::vector<std::string> order;
  for (int i = 0; i < 3; ++i) {
    auto l = Lease(w);
    ASSERT_TRUE(l);
    order.push_back(l->job_id());
    ASSERT_TRUE(Complete(w, *l).ok());
  }
  EXPECT_EQ(order, (std::vector<std::string>{high.id(), low1.id(), low2.id()}));
}

TEST_F(JobSchedulerTest, TenantGpuLimitHoldsBackThatTenantOnly) {
  options_.tenant_gpu_limit = 1;
  Restart();
  const std::string g1 = RegisterWorker("g1", 1), g2 = RegisterWorker("g2", 1),
                    cpu = RegisterWorker("cpu", 0);
  const std::string gpu_stage = "model: /m\nstages:\n  - quantize: {gpus: 1}\n";
  v1::Job a1 = Submit(gpu_stage, "", "team-a");
  v1::Job a2 = Submit(gpu_stage, "", "team-a");
  v1::Job b1 = Submit(gpu_stage, "", "team-b");
  EXPECT_FALSE(Lease(cpu)) << "a CPU worker cannot take a GPU stage";
  auto first = Lease(g1);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->job_id(), a1.id());
  auto second = Lease(g2);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->job_id(), b1.id()) << "team-a is at its limit; team-b goes ahead";
  ASSERT_TRUE(Complete(g1, *first).ok());
  auto third = Lease(g1);
  ASSERT_TRUE(third);
  EXPECT_EQ(third->job_id(), a2.id());
}

TEST_F(JobSchedulerTest, GangIsLeasedToAllRanksAtOnceOrNotAtAll) {
  const std::string a = RegisterWorker("a"), b = RegisterWorker("b");
  v1::Job job = Submit("model: /m\nstages:\n  - quantize: {workers: 2}\n");
  EXPECT_FALSE(Lease(a)) << "one worker alone holds nothing";
  EXPECT_EQ(Get(job.id()).tasks(0).state(), v1::TASK_QUEUED);
  std::optional<v1::TaskLease> from_b;
  std::thread waiter([&] { from_b = Lease(b, 5'000); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // b is waiting now
  auto from_a = Lease(a);
  waiter.join();
  ASSERT_TRUE(from_a);
  ASSERT_TRUE(from_b);
  EXPECT_EQ(from_a->task_id(), from_b->task_id());
  EXPECT_EQ(from_a->world_size(), 2);
  EXPECT_NE(from_a->rank(), from_b->rank());
  EXPECT_EQ(from_a->rendezvous_address(), "a:29500") << "rank 0's worker hosts the rendezvous";
  EXPECT_EQ(from_b->rendezvous_address(), "a:29500");
}

// Random interleavings of everything workers, users and time can do. Invariants: a task is never
// held by two current leases, every unfinished job has exactly one runnable-or-running task, and
// once the chaos stops every job finishes.
TEST_F(JobSchedulerTest, PropertyNoDoubleLeaseAndNoLostTask) {
  std::mt19937 rng(12345);
  options_.lease_timeout_ms = 3'000;
  options_.retry_backoff_base_ms = 100;
  Restart();
  std::vector<std::string> workers;
  for (int i = 0; i < 5; ++i) workers.push_back(RegisterWorker("w" + std::to_string(i)));
  std::vector<std::string> jobs;
  std::map<std::string, v1::TaskLease> held;  // worker -> its lease, as the worker believes
  const std::string recipes[] = {
      "model: /m\nmax_attempts: 2\nstages:\n  - quantize: {}\n",
      "model: /m\nmax_attempts: 4\nstages:\n  - quantize: {}\n  - quantize: {}\n",
      "model: /m\ndata: {evaluation: [/e]}\nstages:\n  - evaluate: {}\n  - quantize: {}\n  - "
      "evaluate: {}\n"};

  auto check_invariants = [&] {
    std::map<std::string, int> holders;  // task -> current holders
    for (const auto& [w, lease] : held) {
      v1::HeartbeatRequest hb;
      hb.set_worker_id(w);
      hb.set_task_id(lease.task_id());
      hb.set_attempt(lease.attempt());
      auto r = scheduler_->Heartbeat(hb);
      ASSERT_TRUE(r.ok());
      v1::Job j = Get(lease.job_id());
      if (!r->cancel() || (j.cancel_requested() && j.state() == v1::RUNNING))
        holders[lease.task_id()]++;
    }
    for (const auto& [task, n] : holders) ASSERT_LE(n, 1) << "task " << task << " leased twice";
    for (const std::string& id : jobs) {
      v1::Job j = Get(id);
      int live = 0;
      for (const v1::Task& t : j.tasks())
        live += t.state() == v1::TASK_QUEUED || t.state() == v1::TASK_RUNNING;
      if (j.state() == v1::QUEUED || j.state() == v1::RUNNING) {
        ASSERT_EQ(live, 1) << "job " << id << " lost its task";
      } else {
        ASSERT_EQ(live, 0);
      }
      if (j.state() == v1::SUCCEEDED) {
        for (const v1::Task& t : j.tasks()) ASSERT_EQ(t.state(), v1::TASK_SUCCEEDED);
      }
    }
  };

  for (int step = 0; step < 3000; ++step) {
    const int op = rng() % 100;
    const std::string& w = workers[rng() % workers.size()];
    if (op < 12) {
      jobs.push_back(Submit(recipes[rng() % 3]).id());
    } else if (op < 40) {
      if (!held.count(w)) {
        if (auto l = Lease(w)) held[w] = *l;
      }
    } else if (op < 55) {
      if (held.count(w)) Heartbeat(w, held[w]);
    } else if (op < 75) {
      if (held.count(w)) {
        (void)Complete(w, held[w], {{"model", "file:///m/" + held[w].task_id()}});
        held.erase(w);
      }
    } else if (op < 83) {
      if (held.count(w)) {
        (void)Fail(w, held[w], rng() % 2 == 0);
        held.erase(w);
      }
    } else if (op < 87) {
      if (!jobs.empty()) (void)scheduler_->Cancel(jobs[rng() % jobs.size()]);
    } else if (op < 90) {
      held.erase(w);  // the worker crashes: it forgets its lease, which must expire
    } else if (op < 92) {
      Restart();  // the coordinator crashes; workers register again under their ids
      for (size_t i = 0; i < workers.size(); ++i)
        RegisterWorker("w" + std::to_string(i), 0, workers[i]);
    } else {
      clock_.Advance(rng() % 2'000);
      scheduler_->ExpireLeases();
    }
    if (step % 50 == 0) check_invariants();
  }
  check_invariants();

  // Calm: well-behaved workers drain the queue; every job must end.
  held.clear();
  for (int round = 0; round < 2000; ++round) {
    clock_.Advance(5'000);
    scheduler_->ExpireLeases();
    bool any = false;
    for (const std::string& w : workers) {
      if (auto l = Lease(w)) {
        any = true;
        ASSERT_TRUE(Complete(w, *l, {{"model", "file:///m/" + l->task_id()}}).ok());
      }
    }
    bool all_done = true;
    for (const std::string& id : jobs) {
      v1::JobState s = Get(id).state();
      all_done = all_done && (s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED);
    }
    if (all_done) break;
    ASSERT_TRUE(any || round < 1999);
  }
  int succeeded = 0;
  for (const std::string& id : jobs) {
    v1::JobState s = Get(id).state();
    ASSERT_TRUE(s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED) << id;
    succeeded += s == v1::SUCCEEDED;
  }
  EXPECT_GT(jobs.size(), 100u);
  EXPECT_GT(succeeded, 0);
}

// A job record from before typed stage options (options as JSON, no bindings) is planned again
// on recovery and runs as a new one would.
TEST_F(JobSchedulerTest, RecordsWithoutTypedStagesArePlannedAgainOnRecovery) {
  const std::string w = RegisterWorker("a");
  v1::Job job = Submit();
  auto stored = state_->LoadJobs();
  ASSERT_TRUE(stored.ok());
  v1::JobRecord old = (*stored)[0];
  for (v1::TaskRecord& t : *old.mutable_tasks()) {
    t.clear_bindings();
    t.set_baseline_task(0);  // what an older record reads as
    t.clear_stage();
    t.clear_data();
    t.set_spec_json(R"({"bits": 4})");
  }
  ASSERT_TRUE(state_->Commit({&old}, {}).ok());
  Restart();
  RegisterWorker("a", 0, w);
  auto l0 = Lease(w);
  ASSERT_TRUE(l0);
  EXPECT_FALSE(l0->has_baseline());
  EXPECT_TRUE(l0->stage().has_evaluate()) << "typed options planned again from the recipe";
  EXPECT_FALSE(l0->data().store_root().empty());
  ASSERT_TRUE(Complete(w, *l0, {{"evaluation", "file:///x/0"}}, Evaluated(5.0)).ok());
  auto l1 = Lease(w);
  ASSERT_TRUE(l1);
  EXPECT_EQ(l1->stage().quantize().bits(), 4);
  ASSERT_TRUE(Complete(w, *l1, {{"model", "file:///x/1-quantize"}}).ok());
  auto l2 = Lease(w);
  ASSERT_TRUE(l2);
  EXPECT_EQ(l2->inputs().at("model"), "file:///x/1-quantize");
  EXPECT_EQ(l2->baseline().perplexity(), 5.0);
}

// A baseline that finished before results were typed (its result as JSON in the record) still
// reaches later stages as a typed result, and the report shows the JSON as it was.
TEST_F(JobSchedulerTest, BaselinesWithJsonResultsFromOlderRecordsStillReachLaterStages) {
  const std::string w = RegisterWorker("a");
  v1::Job job = Submit();
  auto l0 = Lease(w);
  ASSERT_TRUE(l0);
  ASSERT_TRUE(Complete(w, *l0, {{"evaluation", "file:///x/0"}}, Evaluated(5.0)).ok());
  auto stored = state_->LoadJobs();
  ASSERT_TRUE(stored.ok());
  v1::JobRecord old = (*stored)[0];
  v1::TaskRecord& first = *old.mutable_tasks(0);
  ASSERT_TRUE(first.task().result().has_evaluate());
  first.mutable_task()->clear_result();
  first.set_result_json(R"({"perplexity": 5.0, "size_bytes": 800, "old_field": [1]})");
  ASSERT_TRUE(state_->Commit({&old}, {}).ok());
  Restart();
  RegisterWorker("a", 0, w);
  auto l1 = Lease(w);
  ASSERT_TRUE(l1);
  ASSERT_TRUE(Complete(w, *l1, {{"model", "file:///x/1-quantize"}}, Quantized(4)).ok());
  auto l2 = Lease(w);
  ASSERT_TRUE(l2);
  ASSERT_TRUE(l2->has_baseline());
  EXPECT_EQ(l2->baseline().perplexity(), 5.0);
  EXPECT_EQ(l2->baseline().size_bytes(), 800);
  ASSERT_TRUE(Complete(w, *l2, {{"evaluation", "file:///x/2"}}, Evaluated(5.5)).ok());
  const nlohmann::json report = Report(job.id());
  ASSERT_TRUE(report.is_object()) << "the job has a readable report artifact";
  EXPECT_EQ(report["stages"][0]["result"]["old_field"], nlohmann::json::array({1}));
  EXPECT_EQ(report["stages"][1]["result"]["bits"], 4);
  EXPECT_EQ(report["stages"][2]["result"]["perplexity"], 5.5);
  // GetJob carries the typed results.
  v1::Job done = Get(job.id());
  EXPECT_EQ(done.tasks(2).result().evaluate().perplexity(), 5.5);
  EXPECT_EQ(done.tasks(1).result().quantize().bits(), 4);
}

// Random sequences of what workers, clients and time do (leases, completions, retryable and
// final failures, cancels, heartbeats, expiries, restarts) never make a move the transition
// table forbids, and leave every job's state consistent with its tasks'.
TEST_F(JobSchedulerTest, RandomEventSequencesMakeOnlyAllowedMoves) {
  std::mt19937 rng(20261202);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  std::vector<std::string> workers = {RegisterWorker("a"), RegisterWorker("b"),
                                      RegisterWorker("c")};
  std::vector<std::string> jobs;
  std::map<std::string, v1::TaskLease> leases;  // worker -> its current lease
  std::map<std::string, v1::Job> before;
  auto snapshot = [&] {
    std::map<std::string, v1::Job> now;
    for (const std::string& id : jobs) now[id] = Get(id);
    return now;
  };
  int64_t moves_checked = 0;
  for (int step = 0; step < 3000; ++step) {
    before = snapshot();
    const size_t op = pick(10);
    const std::string& w = workers[pick(workers.size())];
    if (op == 0 || jobs.empty()) {
      jobs.push_back(Submit().id());
    } else if (op <= 2) {
      if (!leases.count(w)) {
        if (auto l = Lease(w)) leases[w] = *l;
      }
    } else if (op == 3 && leases.count(w)) {
      Complete(w, leases[w], {{"model", "file:///m/" + leases[w].task_id()}}).IgnoreError();
      leases.erase(w);
    } else if (op == 4 && leases.count(w)) {
      Fail(w, leases[w], /*retryable=*/pick(2) == 0).IgnoreError();
      leases.erase(w);
    } else if (op == 5) {
      scheduler_->Cancel(jobs[pick(jobs.size())]).IgnoreError();
    } else if (op == 6 && leases.count(w)) {
      if (Heartbeat(w, leases[w], static_cast<int64_t>(pick(10))).cancel()) {
        Fail(w, leases[w], false, /*cancelled=*/true).IgnoreError();
        leases.erase(w);
      }
    } else if (op == 7) {
      clock_.Advance(static_cast<int64_t>(pick(12'000)));
      scheduler_->ExpireLeases();
    } else if (op == 8 && pick(20) == 0) {
      ASSERT_EQ(scheduler_->illegal_moves(), 0);
      Restart();
      for (const std::string& id : workers) RegisterWorker("again", 0, id);
    } else if (op == 9 && leases.count(w)) {
      leases.erase(w);  // the worker dies with its lease; expiry takes it back
    }
    for (const auto& [id, job] : snapshot()) {
      auto was = before.find(id);
      if (was == before.end()) continue;
      if (was->second.state() != job.state()) {
        ++moves_checked;
        EXPECT_TRUE(JobMoveAllowed(was->second.state(), job.state()))
            << id << ": " << v1::JobState_Name(was->second.state()) << " -> "
            << v1::JobState_Name(job.state()) << " at step " << step;
      }
      for (int i = 0; i < job.tasks_size(); ++i) {
        const v1::TaskState from = was->second.tasks(i).state(), to = job.tasks(i).state();
        if (from == to) continue;
        ++moves_checked;
        // A lease expiry and the next lease can both happen in one step: QUEUED in between.
        const bool through_queue =
            TaskMoveAllowed(from, v1::TASK_QUEUED) && TaskMoveAllowed(v1::TASK_QUEUED, to);
        EXPECT_TRUE(TaskMoveAllowed(from, to) || through_queue)
            << id << " task " << i << ": " << v1::TaskState_Name(from) << " -> "
            << v1::TaskState_Name(to) << " at step " << step;
      }
      // A job's state agrees with its tasks'.
      for (const v1::Task& t : job.tasks()) {
        if (job.state() == v1::SUCCEEDED) {
          EXPECT_EQ(t.state(), v1::TASK_SUCCEEDED) << id;
        }
        if (job.state() == v1::FAILED || job.state() == v1::CANCELLED) {
          EXPECT_TRUE(t.state() == v1::TASK_SUCCEEDED || t.state() == v1::TASK_FAILED ||
                      t.state() == v1::TASK_CANCELLED)
              << id << " " << v1::TaskState_Name(t.state());
        }
        if (t.state() == v1::TASK_RUNNING) {
          EXPECT_EQ(job.state(), v1::RUNNING) << id;
        }
      }
    }
    if (::testing::Test::HasFailure()) break;
  }
  EXPECT_EQ(scheduler_->illegal_moves(), 0);
  EXPECT_GT(moves_checked, 1000) << "the sequence exercised the scheduler";
}

}  // namespace
}  // namespace squeeze::coordinator

namespace squeeze::coordinator {
namespace {

using google::protobuf::util::TimeUtil;

TEST_F(JobSchedulerTest, RunningTaskCarriesLiveFiguresAndFinishedOneItsResultAndTimes) {
  const std::string w = RegisterWorker("a");
  v1::Job job = Submit();
  EXPECT_EQ(TimeUtil::TimestampToMilliseconds(job.create_time()), clock_.NowMs());
  EXPECT_EQ(job.progress().total(), 3);
  EXPECT_EQ(job.progress().unit(), v1::PROGRESS_UNIT_STAGES);
  auto l0 = Lease(w);
  ASSERT_TRUE(l0);
  const int64_t leased_at = clock_.NowMs();
  clock_.Advance(4'000);
  v1::HeartbeatRequest beat;
  beat.set_worker_id(w);
  beat.set_task_id(l0->task_id());
  beat.set_attempt(l0->attempt());
  beat.mutable_progress()->set_completed(2);
  beat.mutable_progress()->set_total(10);
  beat.mutable_progress()->set_unit(v1::PROGRESS_UNIT_WINDOWS);
  (*beat.mutable_metrics())["tokens_per_second"] = 1234.5;
  (*beat.mutable_metrics())["device_memory_bytes"] = 1e9;
  ASSERT_TRUE(scheduler_->Heartbeat(beat).ok());

  v1::Task running = Get(job.id()).tasks(0);
  EXPECT_EQ(TimeUtil::TimestampToMilliseconds(running.start_time()), leased_at);
  EXPECT_FALSE(running.has_finish_time());
  EXPECT_DOUBLE_EQ(running.metrics().tokens_per_second(), 1234.5);
  EXPECT_EQ(running.metrics().device_memory_bytes(), 1'000'000'000);
  EXPECT_FALSE(running.metrics().has_loss()) << "evaluation reports no loss";
  EXPECT_EQ(TimeUtil::DurationToMilliseconds(running.metrics().elapsed()), 4'000);
  // 2 of 10 windows in 4 s: 8 more take 16 s.
  EXPECT_EQ(TimeUtil::DurationToMilliseconds(running.metrics().eta()), 16'000);
  // The watcher sees the same figures in the progress event.
  bool finished = false;
  auto events = scheduler_->Events(job.id(), 0, 0, &finished);
  ASSERT_TRUE(events.ok());
  const v1::JobEvent& last = events->back();
  ASSERT_TRUE(last.has_task());
  EXPECT_DOUBLE_EQ(last.task().metrics().tokens_per_second(), 1234.5);
  EXPECT_EQ(TimeUtil::TimestampToMilliseconds(last.time()), clock_.NowMs());

  // A runner that knows its own remaining time (training) is believed over the estimate.
  (*beat.mutable_metrics())["eta_seconds"] = 90;
  (*beat.mutable_metrics())["loss"] = 2.5;
  ASSERT_TRUE(scheduler_->Heartbeat(beat).ok());
  running = Get(job.id()).tasks(0);
  EXPECT_EQ(TimeUtil::DurationToMilliseconds(running.metrics().eta()), 90'000);
  EXPECT_DOUBLE_EQ(running.metrics().loss(), 2.5);

  clock_.Advance(1'000);
  ASSERT_TRUE(Complete(w, *l0, {{"evaluation", "file:///x/0"}}, Evaluated(5.0)).ok());
  v1::Job after = Get(job.id());
  const v1::Task& done = after.tasks(0);
  EXPECT_EQ(done.progress().completed(), 10) << "a finished stage shows all its work done";
  EXPECT_FALSE(done.has_metrics()) << "live figures end with the attempt";
  EXPECT_EQ(TimeUtil::TimestampToMilliseconds(done.finish_time()), clock_.NowMs());
  EXPECT_DOUBLE_EQ(done.result().evaluate().perplexity(), 5.0);
  EXPECT_EQ(after.progress().completed(), 1);
  EXPECT_EQ(TimeUtil::TimestampToMilliseconds(after.start_time()), leased_at);
  events = scheduler_->Events(job.id(), 0, 0, &finished);
  ASSERT_TRUE(events.ok());
  bool result_event = false;
  for (const v1::JobEvent& e : *events)
    result_event = result_event || (e.has_task() && e.task().state() == v1::TASK_SUCCEEDED &&
                                    e.task().result().evaluate().perplexity() == 5.0);
  EXPECT_TRUE(result_event) << "WatchJob carries the stage's result";
}

TEST_F(JobSchedulerTest, ResumedAttemptMeasuresItsEtaFromWhereItStarted) {
  const std::string w = RegisterWorker("a");
  v1::Job job = Submit();
  auto l0 = Lease(w);
  ASSERT_TRUE(l0);
  Heartbeat(w, *l0, 6);
  ASSERT_TRUE(Fail(w, *l0, /*retryable=*/true).ok());
  clock_.Advance(10'000);  // past the retry backoff
  auto l1 = Lease(w);
  ASSERT_TRUE(l1);
  EXPECT_FALSE(Get(job.id()).tasks(0).has_finish_time()) << "a new attempt is running";
  clock_.Advance(2'000);
  Heartbeat(w, *l1, 8);  // 2 steps in 2 s from 6: 2 steps left take 2 s
  EXPECT_EQ(TimeUtil::DurationToMilliseconds(Get(job.id()).tasks(0).metrics().eta()), 2'000);
}

}  // namespace
}  // namespace squeeze::coordinator
