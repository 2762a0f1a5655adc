#include "services/coordinator/lease_table.h"

#include "gtest/gtest.h"

namespace squeeze::coordinator {
namespace {

v1::RegisterWorkerRequest Worker(int gpus, const std::string& capability = "quantize") {
  v1::RegisterWorkerRequest request;
  for (int i = 0; i < gpus; ++i) request.add_devices()->set_name("cuda:" + std::to_string(i));
  request.add_devices()->set_name("cpu");
  request.add_capabilities(capability);
  request.set_rendezvous_address("node:29500");
  return request;
}

// A job with one quantize task needing `gpus` GPUs on each of `world_size` ranks.
std::unique_ptr<v1::JobRecord> Job(const std::string& id, const std::string& tenant, int gpus,
                                   int world_size, int64_t sequence) {
  auto r = std::make_unique<v1::JobRecord>();
  r->mutable_job()->set_id(id);
  r->mutable_job()->set_tenant(tenant);
  r->mutable_job()->set_state(v1::RUNNING);
  r->set_sequence(sequence);
  v1::TaskRecord* t = r->add_tasks();
  t->mutable_task()->set_id(id + "-t0");
  t->mutable_task()->set_kind("quantize");
  t->mutable_task()->set_state(v1::TASK_QUEUED);
  t->set_gpus(gpus);
  t->set_world_size(world_size);
  t->set_baseline_task(-1);
  return r;
}

TEST(LeaseTableTest, CountsGpusAndKeepsATaskHeldAcrossACoordinatorRestart) {
  JobTable jobs(nullptr);
  v1::JobRecord& r = jobs.Insert(Job("job-a", "team", 1, 1, 1));
  r.mutable_tasks(0)->mutable_task()->set_state(v1::TASK_RUNNING);
  r.mutable_tasks(0)->add_lease_workers("w1");
  LeaseTable leases(0);
  WorkerInfo& w = leases.Register("w1", Worker(2), jobs, 5);
  EXPECT_EQ(w.gpus, 2);  // "cpu" is not a GPU
  EXPECT_EQ(w.current_task, "job-a-t0");
  EXPECT_EQ(w.last_seen_ms, 5);
  EXPECT_EQ(leases.Register("w2", Worker(1), jobs, 5).current_task, "");
  EXPECT_EQ(leases.Find("w3"), nullptr);
}

TEST(LeaseTableTest, AGangIsFormedOnlyFromWaitingCapableIdleWorkers) {
  JobTable jobs(nullptr);
  v1::JobRecord& r = jobs.Insert(Job("job-a", "team", 1, 3, 1));
  const v1::TaskRecord& t = r.tasks(0);
  LeaseTable leases(0);
  leases.Register("w1", Worker(1), jobs, 0);
  leases.Register("w2", Worker(1), jobs, 0);
  leases.Register("w3", Worker(0), jobs, 0);              // no GPU
  leases.Register("w4", Worker(1, "evaluate"), jobs, 0);  // cannot quantize
  leases.Register("w5", Worker(1), jobs, 0);
  // Only w1 asks: nobody else is waiting, so no gang of three.
  EXPECT_FALSE(leases.PickGang("w1", t).has_value());
  leases.Find("w2")->waiting = true;
  leases.Find("w3")->waiting = true;
  leases.Find("w4")->waiting = true;
  EXPECT_FALSE(leases.PickGang("w1", t).has_value());
  leases.Find("w5")->waiting = true;
  auto gang = leases.PickGang("w1", t);
  ASSERT_TRUE(gang.has_value());
  EXPECT_EQ(*gang, (std::vector<std::string>{"w1", "w2", "w5"}));
  // A worker that cannot run the task itself gets nothing, whoever waits.
  EXPECT_FALSE(leases.PickGang("w3", t).has_value());

  leases.Hold(t, *gang, {v1::TaskLease(), v1::TaskLease()}, 100);
  EXPECT_EQ(leases.Find("w2")->current_task, "job-a-t0");
  EXPECT_TRUE(leases.Find("w5")->assigned.has_value());
  EXPECT_FALSE(leases.Find("w1")->assigned.has_value());  // rank 0 gets its lease directly
  EXPECT_FALSE(leases.PickGang("w1", t).has_value());     // busy now
  EXPECT_DOUBLE_EQ(leases.EndAttempt("job-a-t0", 2100), 2.0);
  EXPECT_DOUBLE_EQ(leases.EndAttempt("job-a-t0", 2100), 0.0);  // forgotten

  r.mutable_tasks(0)->add_lease_workers("w1");
  r.mutable_tasks(0)->add_lease_workers("w2");
  r.mutable_tasks(0)->add_lease_workers("w5");
  leases.Release(r.tasks(0));
  for (const char* id : {"w1", "w2", "w5"}) {
    EXPECT_EQ(leases.Find(id)->current_task, "") << id;
    EXPECT_FALSE(leases.Find(id)->assigned.has_value()) << id;
  }
}

TEST(LeaseTableTest, TenantLimitCountsEveryRankOfRunningTasks) {
  JobTable jobs(nullptr);
  v1::JobRecord& running = jobs.Insert(Job("job-a", "team", 2, 2, 1));  // 4 GPUs
  running.mutable_tasks(0)->mutable_task()->set_state(v1::TASK_RUNNING);
  v1::JobRecord& next = jobs.Insert(Job("job-b", "team", 1, 1, 2));
  v1::JobRecord& other = jobs.Insert(Job("job-c", "other", 1, 1, 3));
  LeaseTable limited(5);
  EXPECT_TRUE(limited.WithinTenantLimit("team", next.tasks(0), jobs));  // 4 + 1 <= 5
  next.mutable_tasks(0)->set_gpus(2);
  EXPECT_FALSE(limited.WithinTenantLimit("team", next.tasks(0), jobs));  // 4 + 2 > 5
  EXPECT_TRUE(limited.WithinTenantLimit("other", other.tasks(0), jobs));
  LeaseTable unlimited(0);
  EXPECT_TRUE(unlimited.WithinTenantLimit("team", next.tasks(0), jobs));
  // A CPU task is never held back by a GPU limit.
  next.mutable_tasks(0)->set_gpus(0);
  EXPECT_TRUE(LeaseTable(1).WithinTenantLimit("team", next.tasks(0), jobs));
}

TEST(LeaseTableTest, ExpiredListsRunningTasksPastTheirDeadlineOnly) {
  JobTable jobs(nullptr);
  v1::JobRecord& a = jobs.Insert(Job("job-a", "team", 0, 1, 1));
  v1::JobRecord& b = jobs.Insert(Job("job-b", "team", 0, 1, 2));
  v1::JobRecord& c = jobs.Insert(Job("job-c", "team", 0, 1, 3));
  LeaseTable leases(0);
  for (v1::JobRecord* r : {&a, &b, &c}) {
    v1::TaskRecord* t = r->mutable_tasks(0);
    t->mutable_task()->set_state(v1::TASK_RUNNING);
    leases.Adopt(t->task().id());
  }
  a.mutable_tasks(0)->set_lease_deadline_unix_ms(1000);
  b.mutable_tasks(0)->set_lease_deadline_unix_ms(3000);
  c.mutable_tasks(0)->set_lease_deadline_unix_ms(500);
  c.mutable_tasks(0)->mutable_task()->set_state(v1::TASK_SUCCEEDED);  // finished meanwhile
  leases.Adopt("unknown-task");
  auto expired = leases.Expired(jobs, 2000);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].task->task().id(), "job-a-t0");
  // The finished and unknown tasks were dropped; b expires later.
  auto later = leases.Expired(jobs, 5000);
  ASSERT_EQ(later.size(), 2u);
}

TEST(LeaseTableTest, LeasesCarryTheBaselineEvaluationTypedOrFromOlderJson) {
  JobTable jobs(nullptr);
  auto record = Job("job-a", "team", 1, 2, 1);
  record->mutable_tasks(0)->mutable_task()->mutable_result()->mutable_evaluate()->set_perplexity(
      12.5);
  v1::TaskRecord* later = record->add_tasks();
  *later = record->tasks(0);
  later->mutable_task()->set_id("job-a-t1");
  later->mutable_task()->clear_result();
  later->set_baseline_task(0);
  (*later->mutable_inputs())["model"] = "file:///store/model";
  later->mutable_task()->set_attempts(2);
  v1::JobRecord& r = jobs.Insert(std::move(record));

  v1::TaskLease lease = BuildTaskLease(r, r.tasks(1), 1, "node:29500");
  EXPECT_EQ(lease.task_id(), "job-a-t1");
  EXPECT_EQ(lease.attempt(), 2);
  EXPECT_EQ(lease.rank(), 1);
  EXPECT_EQ(lease.world_size(), 2);
  EXPECT_EQ(lease.rendezvous_address(), "node:29500");
  EXPECT_EQ(lease.inputs().at("model"), "file:///store/model");
  EXPECT_DOUBLE_EQ(lease.baseline().perplexity(), 12.5);

  r.mutable_tasks(0)->mutable_task()->clear_result();
  r.mutable_tasks(0)->set_result_json(R"({"perplexity": 7.25, "removed_key": 1})");
  EXPECT_DOUBLE_EQ(BuildTaskLease(r, r.tasks(1), 0, "").baseline().perplexity(), 7.25);
  r.mutable_tasks(0)->set_result_json("not json");
  EXPECT_FALSE(BuildTaskLease(r, r.tasks(1), 0, "").has_baseline());
  // A single-rank task needs no rendezvous.
  EXPECT_EQ(BuildTaskLease(r, r.tasks(0), 0, "node:29500").rendezvous_address(), "node:29500");
  r.mutable_tasks(0)->set_world_size(1);
  EXPECT_EQ(BuildTaskLease(r, r.tasks(0), 0, "node:29500").rendezvous_address(), "");
}

}  // namespace
}  // namespace squeeze::coordinator
