// The moves a task or a job may make between states, in one table each. Every state change of
// the scheduler goes through MoveTask/MoveJob, which refuse a move the table does not allow and
// leave the state as it was.
//
//   task:  PENDING -> QUEUED -> RUNNING -> SUCCEEDED
//                       ^         |  \-> FAILED, CANCELLED
//                       +---------+ (retry, or a lease whose commit failed)
//          PENDING, QUEUED -> FAILED, CANCELLED (the job ended)
//   job:   QUEUED -> RUNNING -> SUCCEEDED, FAILED, CANCELLED;  QUEUED -> FAILED, CANCELLED
#pragma once

#include "absl/status/status.h"
#include "squeeze/v1/jobs.pb.h"

namespace squeeze::coordinator {

// Whether the table allows the move. A new task starts from TASK_STATE_UNSPECIFIED to PENDING, a
// new job from JOB_STATE_UNSPECIFIED to QUEUED. Staying in the same state is not a move.
bool TaskMoveAllowed(v1::TaskState from, v1::TaskState to);
bool JobMoveAllowed(v1::JobState from, v1::JobState to);

// Sets the state if the table allows it; otherwise InternalError naming the task (or job) and
// both states, and nothing changes.
absl::Status MoveTask(v1::Task& task, v1::TaskState to);
absl::Status MoveJob(v1::Job& job, v1::JobState to);

}  // namespace squeeze::coordinator
