// Each task runs in a child process of the worker ("squeeze-worker run-task"), so that the
// worker can always end it: a cancel the task does not honour within a grace period, a stage's
// `timeout`, and a task whose progress stops (the stall watchdog) end in SIGKILL of the task's
// process group. A task that crashes (a signal, an abort in a library) fails that attempt and
// leaves the worker serving. The child also frees every byte of device memory when it exits.
//
// The two sides talk over pipes with the messages of task_process.proto: the request on the
// child's stdin, which the worker keeps open (its closing asks the task to stop at its next step
// boundary), and events on descriptor 3: updates (progress, metrics, log, steps) and the outcome.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "services/worker/task_report.h"
#include "squeeze/v1/task_process.pb.h"

namespace squeeze::worker {

// The descriptor the child writes its events to.
inline constexpr int kTaskEventFd = 3;

struct TaskProcessLimits {
  int64_t timeout_ms = 0;         // the stage's `timeout`; 0: none
  int64_t stall_timeout_ms = 0;   // no progress for this long ends the task; 0: never
  int64_t kill_grace_ms = 10000;  // after a cancel, how long the task may take to stop by itself
};

struct TaskProcessResult {
  bool ok = false;
  v1::TaskProcessOutcome outcome;  // outputs and result when ok
  absl::Status error;              // when not ok, one line naming the task
  bool retryable = false;          // whether another attempt could succeed
};

class TaskProcess {
 public:
  // Starts `executable run-task` and hands it the request.
  static absl::StatusOr<std::unique_ptr<TaskProcess>> Start(const std::string& executable,
                                                            const v1::TaskProcessRequest& request);
  ~TaskProcess();  // kills the process group if it is still there

  // Runs until the process has exited, mirroring its updates into `report` (and to `on_update`,
  // for counters), and ending it when `cancel` turns true, the timeout passes or it stalls.
  TaskProcessResult Supervise(TaskReport& report, const std::atomic<bool>& cancel,
                              const TaskProcessLimits& limits,
                              const std::function<void(const v1::TaskProcessUpdate&)>& on_update);

  pid_t pid() const { return pid_; }

 private:
  TaskProcess(pid_t pid, int request_fd, int event_fd, std::string name)
      : pid_(pid), request_fd_(request_fd), event_fd_(event_fd), name_(std::move(name)) {}

  pid_t pid_;
  int request_fd_;  // closed to ask for a stop
  int event_fd_;
  std::string name_;  // "quantize task j-1-t1", for errors
  bool reaped_ = false;
};

// Whether a runner's error is worth another attempt: not the ones about the input or the recipe.
bool RetryableTaskError(const absl::Status& status);

// Writes one framed message; false when the pipe is gone.
bool WriteFrame(int fd, const google::protobuf::MessageLite& message);
// Reads one framed message, blocking; false at end of input or on a malformed frame.
bool ReadFrame(int fd, google::protobuf::MessageLite& message);

// The child's side: reads the request from `request_fd`, runs the task with the runner of its
// kind, writes updates and the outcome to `event_fd`. Returns the process's exit status.
int RunTaskProcessMain(int request_fd, int event_fd);

}  // namespace squeeze::worker
