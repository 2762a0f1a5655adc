// The task process's side of task_process.h: one task, run with the runner of its kind.
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/log.h"
#include "common/metrics/store_metrics.h"
#include "services/worker/task_process.h"
#include "services/worker/task_runner.h"

#ifdef SQUEEZE_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace squeeze::worker {
namespace {

double DeviceMemoryBytes(const at::Device& device) {
#ifdef SQUEEZE_HAS_CUDA
  if (device.is_cuda()) {
    const int index = device.has_index() ? device.index() : 0;
    return static_cast<double>(
        c10::cuda::CUDACachingAllocator::getDeviceStats(index).allocated_bytes[0].current);
  }
#endif
  (void)device;
  return 0.0;
}

// The child's store counters, cumulative, as samples for the worker to add to its own.
void AddCounters(const prometheus::Registry& registry, v1::TaskProcessUpdate& update) {
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.type != prometheus::MetricType::Counter) continue;
    for (const prometheus::ClientMetric& metric : family.metric) {
      v1::CounterSample* sample = update.add_counters();
      sample->set_name(family.name);
      for (const auto& label : metric.label) (*sample->mutable_labels())[label.name] = label.value;
      sample->set_value(metric.counter.value);
    }
  }
}

// What --fault-inject asked of this task, before its runner starts.
void InjectFault(const std::string& fault) {
  if (fault == "crash") {
    ::raise(SIGSEGV);
  } else if (absl::StartsWith(fault, "block:")) {
    // Opening a FIFO with no writer blocks in the kernel: a task stuck in I/O, deaf to cancel.
    const int fd = ::open(fault.substr(6).c_str(), O_RDONLY);
    if (fd >= 0) ::close(fd);
  }
}

// One line for the job's error: libtorch's messages carry a C++ stack trace after the first.
std::string FirstLine(std::string what) {
  what = what.substr(0, what.find('\n'));
  if (what.find_first_not_of(" \t") == std::string::npos) what = "an exception with no message";
  return what;
}

// Writes the task's events to the worker, from the runner's thread and the reporter's.
class EventSender {
 public:
  explicit EventSender(int fd) : fd_(fd) {}
  bool Send(const v1::TaskProcessEvent& event) {
    std::lock_guard<std::mutex> lock(mu_);
    return WriteFrame(fd_, event);
  }
  // Sends the outcome and ends the process.
  [[noreturn]] void Finish(const absl::StatusOr<TaskOutput>& result) {
    v1::TaskProcessEvent event;
    v1::TaskProcessOutcome* outcome = event.mutable_outcome();
    outcome->set_ok(result.ok());
    if (result.ok()) {
      for (const auto& [k, v] : result->outputs) (*outcome->mutable_outputs())[k] = v;
      *outcome->mutable_result() = result->result;
    } else {
      outcome->set_code(static_cast<int>(result.status().code()));
      outcome->set_message(std::string(result.status().message()));
    }
    Send(event);
    std::cout.flush();
    std::cerr.flush();
    // Threads may still be blocked (the stdin watcher, libtorch's pools): leave without unwinding.
    ::_exit(0);
  }

 private:
  const int fd_;
  std::mutex mu_;
};

}  // namespace

int RunTaskProcessMain(int request_fd, int event_fd) {
  ::signal(SIGPIPE, SIG_IGN);  // a worker gone is seen as a failed write
  v1::TaskProcessRequest request;
  if (!ReadFrame(request_fd, request)) {
    std::cerr << "squeeze-worker run-task: no task request on stdin (this command is started by "
                 "the worker, not by hand)\n";
    return 2;
  }
  const v1::TaskLease& lease = request.lease();
  if (request.threads() > 0) at::set_num_threads(request.threads());

  EventSender events(event_fd);
  InjectFault(request.fault());

  prometheus::Registry registry;
  const std::string& root = lease.data().store_root();
  auto opened = OpenArtifactStore(root.empty() ? "file://" : root);
  if (!opened.ok()) events.Finish(opened.status());
  std::unique_ptr<ArtifactStore> store = InstrumentStore(*std::move(opened), registry);

  auto runners = MakeRunners();
  auto runner = runners.find(lease.kind());
  if (runner == runners.end()) {
    events.Finish(absl::UnimplementedError(
        absl::StrCat("this worker has no runner for task kind \"", lease.kind(), "\"")));
  }
  TaskContext ctx(lease, store.get(), request.scratch_dir(), at::Device(request.device()),
                  request.step_delay_ms());

  // The worker closes our stdin to ask for a stop.
  std::thread([&ctx, request_fd] {
    char byte;
    for (;;) {
      const ssize_t n = ::read(request_fd, &byte, 1);
      if (n == 0 || (n < 0 && errno != EINTR)) break;
    }
    ctx.RequestCancel();
  }).detach();

  // Updates a few times a second: progress, metrics, log, steps, memory and store counters.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  auto update = [&] {
    v1::TaskProcessEvent event;
    ctx.report().SetDeviceMemory(DeviceMemoryBytes(ctx.device()));
    *event.mutable_update() = ctx.report().TakeUpdate();
    AddCounters(registry, *event.mutable_update());
    return events.Send(event);
  };
  std::thread reporter([&] {
    std::unique_lock<std::mutex> lock(mu);
    while (!cv.wait_for(lock, std::chrono::milliseconds(250), [&] { return done; })) {
      lock.unlock();
      const bool sent = update();
      lock.lock();
      if (!sent) break;  // the worker is gone; the death signal ends us
    }
  });

  absl::StatusOr<TaskOutput> result;
  try {
    result = runner->second->Run(ctx);
  } catch (const std::exception& e) {
    // The whole message goes to the worker's log; the job's error is its first line.
    SQ_LOG_TASK(ERROR, lease.job_id(), lease.task_id()) << lease.kind() << " threw: " << e.what();
    result = absl::InternalError(
        absl::StrCat(lease.kind(), " task ", lease.task_id(), " failed: ", FirstLine(e.what())));
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
  }
  cv.notify_all();
  reporter.join();
  update();
  events.Finish(result);
}

}  // namespace squeeze::worker
