// The PostgreSQL state store and leader lease against a real server started for the test.
#include <chrono>
#include <thread>

#include "gtest/gtest.h"
#include "services/coordinator/leader_lease.h"
#include "services/coordinator/state_store.h"
#include "tests/common/postgres_server.h"

namespace squeeze::coordinator {
namespace {

using squeeze::testing::PostgresServer;

v1::JobRecord Job(const std::string& id, int64_t sequence, v1::JobState state) {
  v1::JobRecord r;
  r.mutable_job()->set_id(id);
  r.mutable_job()->set_tenant("team-a");
  r.mutable_job()->set_state(state);
  r.set_sequence(sequence);
  r.add_tasks()->mutable_task()->set_id(id + "-t0");
  return r;
}

class PostgresStateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.started()) << "see " << server_.dir(); }
  PostgresServer server_;
};

TEST_F(PostgresStateStoreTest, CommitsOfTheLeaderRoundTripInOrder) {
  auto lease = OpenPostgresLeaderLease(server_.conninfo());
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE(*(*lease)->TryAcquire("a", 60000));
  auto store = OpenPostgresStateStore(server_.conninfo(), "a");
  ASSERT_TRUE(store.ok()) << store.status();

  v1::JobRecord second = Job("j2", 2, v1::QUEUED), first = Job("j1", 1, v1::RUNNING);
  StoredEvent event{"j1", {}};
  event.event.set_sequence(0);
  event.event.set_log("started");
  ASSERT_TRUE((*store)->Commit({&second, &first}, {event}).ok());
  first.mutable_job()->set_state(v1::SUCCEEDED);  // an update replaces the record
  ASSERT_TRUE((*store)->Commit({&first}, {}).ok());

  // A second connection (a standby's) reads what the leader wrote.
  auto reader = OpenPostgresStateStore(server_.conninfo(), "b");
  ASSERT_TRUE(reader.ok());
  auto jobs = (*reader)->LoadJobs();
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].job().id(), "j1") << "in submission order";
  EXPECT_EQ((*jobs)[0].job().state(), v1::SUCCEEDED);
  EXPECT_EQ((*jobs)[0].tasks(0).task().id(), "j1-t0");
  EXPECT_EQ((*jobs)[1].job().id(), "j2");
  auto events = (*reader)->LoadEvents();
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].job_id, "j1");
  EXPECT_EQ((*events)[0].event.log(), "started");
}

TEST_F(PostgresStateStoreTest, OneLeaderAtATimeAndTheFormerOneIsFencedOff) {
  auto a = OpenPostgresLeaderLease(server_.conninfo());
  auto b = OpenPostgresLeaderLease(server_.conninfo());
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(*(*a)->TryAcquire("a", 800));
  EXPECT_FALSE(*(*b)->TryAcquire("b", 800)) << "held by a";
  EXPECT_TRUE(*(*a)->TryAcquire("a", 800)) << "the holder renews";

  auto store_a = OpenPostgresStateStore(server_.conninfo(), "a");
  ASSERT_TRUE(store_a.ok());
  v1::JobRecord job = Job("j1", 1, v1::RUNNING);
  ASSERT_TRUE((*store_a)->Commit({&job}, {}).ok());

  // a stops renewing (stalled, partitioned): once the lease lapses, b takes it.
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  EXPECT_TRUE(*(*b)->TryAcquire("b", 60000));
  EXPECT_FALSE(*(*a)->TryAcquire("a", 800)) << "a cannot take it back";
  job.mutable_job()->set_state(v1::FAILED);
  absl::Status late = (*store_a)->Commit({&job}, {});
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition) << late;
  EXPECT_NE(late.message().find("coordinator a no longer holds the leader lease"),
            std::string::npos);
  auto store_b = OpenPostgresStateStore(server_.conninfo(), "b");
  auto jobs = (*store_b)->LoadJobs();
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ((*jobs)[0].job().state(), v1::RUNNING) << "the fenced commit changed nothing";

  // A clean stop hands over at once.
  ASSERT_TRUE((*b)->Release("b").ok());
  EXPECT_TRUE(*(*a)->TryAcquire("a", 60000));
}

TEST_F(PostgresStateStoreTest, UnreachableServerIsAClearError) {
  auto store = OpenPostgresStateStore("host=" + server_.dir() + " port=1 user=squeeze", "a");
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(store.status().message().find("postgresql state store: cannot connect"),
            std::string::npos)
      << store.status();
}

}  // namespace
}  // namespace squeeze::coordinator
