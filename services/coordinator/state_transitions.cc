#include "services/coordinator/state_transitions.h"

#include <set>
#include <utility>

#include "absl/strings/str_cat.h"

namespace squeeze::coordinator {
namespace {

using TaskMove = std::pair<v1::TaskState, v1::TaskState>;
using JobMove = std::pair<v1::JobState, v1::JobState>;

const std::set<TaskMove>& TaskTable() {
  static const auto* table = new std::set<TaskMove>{
      {v1::TASK_STATE_UNSPECIFIED, v1::TASK_PENDING},  // planned
      {v1::TASK_PENDING, v1::TASK_QUEUED},             // its inputs are ready
      {v1::TASK_QUEUED, v1::TASK_RUNNING},             // leased
      {v1::TASK_RUNNING, v1::TASK_QUEUED},  // retried, or a lease that could not be committed
      {v1::TASK_RUNNING, v1::TASK_SUCCEEDED},
      {v1::TASK_RUNNING, v1::TASK_FAILED},
      {v1::TASK_RUNNING, v1::TASK_CANCELLED},
      // The job ended (failed elsewhere, or cancelled) before this task ran.
      {v1::TASK_PENDING, v1::TASK_FAILED},
      {v1::TASK_PENDING, v1::TASK_CANCELLED},
      {v1::TASK_QUEUED, v1::TASK_FAILED},
      {v1::TASK_QUEUED, v1::TASK_CANCELLED},
  };
  return *table;
}

const std::set<JobMove>& JobTable() {
  static const auto* table = new std::set<JobMove>{
      {v1::JOB_STATE_UNSPECIFIED, v1::QUEUED},  // submitted
      {v1::QUEUED, v1::RUNNING},                // its first task leased
      {v1::RUNNING, v1::SUCCEEDED},
      {v1::RUNNING, v1::FAILED},
      {v1::RUNNING, v1::CANCELLED},
      {v1::QUEUED, v1::FAILED},     // a stage failed to start for good
      {v1::QUEUED, v1::CANCELLED},  // cancelled before any task ran
  };
  return *table;
}

}  // namespace

bool TaskMoveAllowed(v1::TaskState from, v1::TaskState to) {
  return TaskTable().count({from, to}) > 0;
}

bool JobMoveAllowed(v1::JobState from, v1::JobState to) { return JobTable().count({from, to}) > 0; }

absl::Status MoveTask(v1::Task& task, v1::TaskState to) {
  if (!TaskMoveAllowed(task.state(), to)) {
    return absl::InternalError(absl::StrCat("task ", task.id(), ": no move from ",
                                            v1::TaskState_Name(task.state()), " to ",
                                            v1::TaskState_Name(to)));
  }
  task.set_state(to);
  return absl::OkStatus();
}

absl::Status MoveJob(v1::Job& job, v1::JobState to) {
  if (!JobMoveAllowed(job.state(), to)) {
    return absl::InternalError(absl::StrCat("job ", job.id(), ": no move from ",
                                            v1::JobState_Name(job.state()), " to ",
                                            v1::JobState_Name(to)));
  }
  job.set_state(to);
  return absl::OkStatus();
}

}  // namespace squeeze::coordinator
