#include "services/coordinator/job_table.h"

#include <unistd.h>

#include <filesystem>

#include "common/base/file_util.h"
#include "gtest/gtest.h"

namespace squeeze::coordinator {
namespace {

namespace fs = std::filesystem;

std::unique_ptr<v1::JobRecord> MakeRecord(const std::string& id, int priority, int64_t sequence,
                                          const std::string& request_id = "") {
  auto r = std::make_unique<v1::JobRecord>();
  r->mutable_job()->set_id(id);
  r->mutable_job()->set_tenant("team");
  r->mutable_job()->set_priority(priority);
  r->mutable_job()->set_state(v1::QUEUED);
  r->mutable_job()->set_request_id(request_id);
  r->set_sequence(sequence);
  for (int i = 0; i < 2; ++i) {
    v1::TaskRecord* t = r->add_tasks();
    t->mutable_task()->set_id(id + "-t" + std::to_string(i));
    t->mutable_task()->set_index(i);
  }
  return r;
}

v1::JobEvent Log(const std::string& line) {
  v1::JobEvent e;
  e.set_log(line);
  return e;
}

class JobTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("job_table_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    RemoveTree(dir_).IgnoreError();
    fs::create_directories(dir_);
    state_ = *OpenSqliteStateStore((dir_ / "state.db").string());
  }
  void TearDown() override {
    state_.reset();
    RemoveTree(dir_).IgnoreError();
  }

  fs::path dir_;
  std::unique_ptr<StateStore> state_;
};

TEST_F(JobTableTest, FindsJobsByIdRequestAndTask) {
  JobTable table(state_.get());
  table.Insert(MakeRecord("job-a", 0, 1, "req-1"));
  ASSERT_NE(table.Find("job-a"), nullptr);
  EXPECT_EQ(table.Find("job-b"), nullptr);
  ASSERT_NE(table.FindByRequest("team", "req-1"), nullptr);
  EXPECT_EQ(table.FindByRequest("team", "req-1")->job().id(), "job-a");
  EXPECT_EQ(table.FindByRequest("other-team", "req-1"), nullptr);
  auto ref = table.FindTask("job-a-t1");
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(ref->job->job().id(), "job-a");
  EXPECT_EQ(ref->task->task().index(), 1);
  EXPECT_FALSE(table.FindTask("job-a-t2").has_value());
}

TEST_F(JobTableTest, ActiveJobsAreOrderedByPriorityThenAge) {
  JobTable table(state_.get());
  table.Insert(MakeRecord("old-low", 0, table.NextSequence()));
  table.Insert(MakeRecord("new-high", 5, table.NextSequence()));
  table.Insert(MakeRecord("new-low", 0, table.NextSequence()));
  auto finished = MakeRecord("done", 9, table.NextSequence());
  finished->mutable_job()->set_state(v1::SUCCEEDED);
  table.Insert(std::move(finished));
  std::vector<std::string> order;
  for (const v1::JobRecord* r : table.ActiveInOrder()) order.push_back(r->job().id());
  EXPECT_EQ(order, (std::vector<std::string>{"new-high", "old-low", "new-low"}));
  table.Deactivate(*table.Find("new-high"));
  order.clear();
  for (const v1::JobRecord* r : table.ActiveInOrder()) order.push_back(r->job().id());
  EXPECT_EQ(order, (std::vector<std::string>{"old-low", "new-low"}));
  EXPECT_NE(table.Find("new-high"), nullptr);  // still there, just not scheduled
}

TEST_F(JobTableTest, SequencesContinueAfterTheHighestInserted) {
  JobTable table(state_.get());
  table.Insert(MakeRecord("job-a", 0, 41));
  EXPECT_EQ(table.NextSequence(), 42);
  EXPECT_EQ(table.NextSequence(), 43);
}

TEST_F(JobTableTest, EraseForgetsEveryIndexAndEvent) {
  JobTable table(state_.get());
  v1::JobRecord& r = table.Insert(MakeRecord("job-a", 0, 1, "req-1"));
  table.AddEvent(r, Log("hello"), 1000, /*durable=*/true);
  table.Erase("job-a");
  EXPECT_EQ(table.Find("job-a"), nullptr);
  EXPECT_EQ(table.FindByRequest("team", "req-1"), nullptr);
  EXPECT_FALSE(table.FindTask("job-a-t0").has_value());
  EXPECT_TRUE(table.ActiveInOrder().empty());
  EXPECT_TRUE(table.EventsAfter("job-a", 0).empty());
  // The erased job's pending event is not written with the next job's commit.
  v1::JobRecord& b = table.Insert(MakeRecord("job-b", 0, 2));
  ASSERT_TRUE(table.Commit(b).ok());
  auto events = state_->LoadEvents();
  ASSERT_TRUE(events.ok());
  EXPECT_TRUE(events->empty());
}

TEST_F(JobTableTest, EventsAreNumberedPerJobAndOnlyDurableOnesAreStored) {
  JobTable table(state_.get());
  v1::JobRecord& r = table.Insert(MakeRecord("job-a", 0, 1));
  table.AddEvent(r, Log("first"), 1000, /*durable=*/true);
  table.AddEvent(r, Log("progress"), 1001, /*durable=*/false);
  table.AddEvent(r, Log("third"), 1002, /*durable=*/true);
  EXPECT_EQ(table.LastEventSequence("job-a"), 3);
  EXPECT_EQ(table.LastEventSequence("job-b"), 0);
  std::vector<v1::JobEvent> after = table.EventsAfter("job-a", 1);
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].log(), "progress");
  EXPECT_EQ(after[0].unix_ms(), 1001);
  ASSERT_TRUE(table.Commit(r).ok());

  // A second table over the same store: the record and the durable events come back.
  JobTable reloaded(state_.get());
  auto records = reloaded.LoadStored();
  ASSERT_TRUE(records.ok()) << records.status();
  ASSERT_EQ(records->size(), 1u);
  EXPECT_EQ((*records)[0].next_event_sequence(), 4);
  reloaded.Insert(std::make_unique<v1::JobRecord>((*records)[0]));
  std::vector<v1::JobEvent> stored = reloaded.EventsAfter("job-a", 0);
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[0].log(), "first");
  EXPECT_EQ(stored[1].log(), "third");
  EXPECT_EQ(stored[1].sequence(), 3);
}

}  // namespace
}  // namespace squeeze::coordinator
