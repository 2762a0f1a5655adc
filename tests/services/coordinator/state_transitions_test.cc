// Walks the task and job transition tables: every state is reachable from creation, every
// non-final state can still end, final states have no way out, and a refused move changes
// nothing and says which move it was.
#include "services/coordinator/state_transitions.h"

#include <set>
#include <vector>

#include "gtest/gtest.h"

namespace squeeze::coordinator {
namespace {

template <typename State>
std::set<State> Reachable(State from, const std::vector<State>& all,
                          bool (*allowed)(State, State)) {
  std::set<State> seen = {from};
  std::vector<State> todo = {from};
  while (!todo.empty()) {
    State s = todo.back();
    todo.pop_back();
    for (State t : all) {
      if (allowed(s, t) && seen.insert(t).second) todo.push_back(t);
    }
  }
  return seen;
}

const std::vector<v1::TaskState> kTaskStates = {
    v1::TASK_STATE_UNSPECIFIED, v1::TASK_PENDING, v1::TASK_QUEUED,   v1::TASK_RUNNING,
    v1::TASK_SUCCEEDED,         v1::TASK_FAILED,  v1::TASK_CANCELLED};
const std::set<v1::TaskState> kFinalTasks = {v1::TASK_SUCCEEDED, v1::TASK_FAILED,
                                             v1::TASK_CANCELLED};
const std::vector<v1::JobState> kJobStates = {
    v1::JOB_STATE_UNSPECIFIED, v1::QUEUED, v1::RUNNING, v1::SUCCEEDED, v1::FAILED, v1::CANCELLED};
const std::set<v1::JobState> kFinalJobs = {v1::SUCCEEDED, v1::FAILED, v1::CANCELLED};

TEST(StateTransitionsTest, EveryTaskStateIsReachableAndCanEnd) {
  EXPECT_EQ(Reachable(v1::TASK_STATE_UNSPECIFIED, kTaskStates, TaskMoveAllowed).size(),
            kTaskStates.size());
  for (v1::TaskState s : kTaskStates) {
    if (s == v1::TASK_STATE_UNSPECIFIED) continue;
    const auto ahead = Reachable(s, kTaskStates, TaskMoveAllowed);
    if (kFinalTasks.count(s)) {
      EXPECT_EQ(ahead.size(), 1u) << v1::TaskState_Name(s) << " is final";
    } else {
      for (v1::TaskState end : kFinalTasks)
        EXPECT_TRUE(ahead.count(end))
            << v1::TaskState_Name(s) << " can end " << v1::TaskState_Name(end);
    }
    EXPECT_FALSE(TaskMoveAllowed(s, v1::TASK_STATE_UNSPECIFIED));
    EXPECT_FALSE(TaskMoveAllowed(s, v1::TASK_PENDING)) << "nothing goes back to waiting";
  }
  // Only a lease runs a task, and only a running task succeeds.
  for (v1::TaskState s : kTaskStates) {
    EXPECT_EQ(TaskMoveAllowed(s, v1::TASK_RUNNING), s == v1::TASK_QUEUED) << v1::TaskState_Name(s);
    EXPECT_EQ(TaskMoveAllowed(s, v1::TASK_SUCCEEDED), s == v1::TASK_RUNNING)
        << v1::TaskState_Name(s);
  }
}

TEST(StateTransitionsTest, EveryJobStateIsReachableAndCanEnd) {
  EXPECT_EQ(Reachable(v1::JOB_STATE_UNSPECIFIED, kJobStates, JobMoveAllowed).size(),
            kJobStates.size());
  for (v1::JobState s : kJobStates) {
    if (s == v1::JOB_STATE_UNSPECIFIED) continue;
    const auto ahead = Reachable(s, kJobStates, JobMoveAllowed);
    if (kFinalJobs.count(s)) {
      EXPECT_EQ(ahead.size(), 1u) << v1::JobState_Name(s) << " is final";
    } else {
      EXPECT_TRUE(ahead.count(v1::FAILED) && ahead.count(v1::CANCELLED)) << v1::JobState_Name(s);
    }
    EXPECT_EQ(JobMoveAllowed(s, v1::SUCCEEDED), s == v1::RUNNING) << v1::JobState_Name(s);
  }
}

TEST(StateTransitionsTest, ARefusedMoveChangesNothingAndNamesIt) {
  v1::Task task;
  task.set_id("job-1-t0");
  ASSERT_TRUE(MoveTask(task, v1::TASK_PENDING).ok());
  absl::Status s = MoveTask(task, v1::TASK_SUCCEEDED);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(), "task job-1-t0: no move from TASK_PENDING to TASK_SUCCEEDED");
  EXPECT_EQ(task.state(), v1::TASK_PENDING);

  v1::Job job;
  job.set_id("job-1");
  ASSERT_TRUE(MoveJob(job, v1::QUEUED).ok());
  ASSERT_TRUE(MoveJob(job, v1::CANCELLED).ok());
  EXPECT_FALSE(MoveJob(job, v1::RUNNING).ok()) << "a cancelled job stays cancelled";
  EXPECT_EQ(job.state(), v1::CANCELLED);
}

}  // namespace
}  // namespace squeeze::coordinator
