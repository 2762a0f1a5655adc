#include "services/worker/worker.h"

#include "common/metrics/metrics_exporter.h"
#include "common/rpc/client_channel.h"
#include "services/worker/task_runner.h"
#include "services/worker/worker_metrics.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/file_util.h"
#include "common/base/log.h"

namespace squeeze::worker {
namespace {

namespace fs = std::filesystem;

bool Transient(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

}  // namespace

Worker::Worker(WorkerOptions options) : options_(std::move(options)) {
  for (const auto& [kind, runner] : MakeRunners()) capabilities_.push_back(kind);
  if (options_.task_executable.empty()) {
    std::error_code ec;
    options_.task_executable = fs::read_symlink("/proc/self/exe", ec).string();
  }
  ClientChannelOptions channel;
  channel.token = options_.token;
  channel.tls_ca_file = options_.tls_ca_file;
  channel.tls_cert_file = options_.tls_cert_file;
  channel.tls_key_file = options_.tls_key_file;
  auto made = MakeClientChannel(options_.coordinator, channel);
  if (made.ok()) {
    stub_ = v1::WorkerService::NewStub(*made);
  } else {
    channel_error_ = made.status();
  }
  if (options_.scratch_dir.empty()) {
    options_.scratch_dir = (fs::temp_directory_path() /
                            absl::StrCat("squeeze-worker-", ::getpid(), "-", options_.node))
                               .string();
  }
}

Worker::~Worker() { Stop(); }

std::string Worker::metrics_address() const { return exporter_ ? exporter_->address() : ""; }

int64_t Worker::NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Worker::MarkAlive() { last_alive_ms_ = NowMs(); }

absl::Status Worker::RegisterUntilReady() {
  v1::RegisterWorkerRequest request;
  request.set_node(options_.node);
  request.set_worker_id(worker_id_);
  request.set_rendezvous_address(options_.rendezvous_address);
  v1::Device* d = request.add_devices();
  d->set_name(options_.device);
  for (const std::string& kind : capabilities_) request.add_capabilities(kind);
  while (!stop_) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::RegisterWorkerResponse response;
    grpc::Status s = stub_->RegisterWorker(&context, request, &response);
    if (s.ok()) {
      worker_id_ = response.worker_id();
      heartbeat_interval_ms_ = response.heartbeat_interval_ms();
      registered_ = true;
      SQ_LOG(INFO) << "registered as " << worker_id_ << " (node " << options_.node << ", device "
                   << options_.device << ", " << capabilities_.size() << " task kinds)";
      return absl::OkStatus();
    }
    if (!Transient(s)) return absl::UnavailableError(absl::StrCat("register: ", s.error_message()));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return absl::CancelledError("stopped");
}

absl::Status Worker::Run() {
  if (!channel_error_.ok()) return channel_error_;
  if (!options_.metrics_listen.empty() && !exporter_) {
    auto exporter = MetricsExporter::Start(options_.metrics_listen, "worker");
    if (!exporter.ok()) return exporter.status();
    exporter_ = *std::move(exporter);
    metrics_ = std::make_shared<WorkerMetrics>(exporter_->registry(), options_.device);
    exporter_->RegisterCollectable(metrics_);
    // Liveness follows the work loops (leasing, heartbeating a task, reporting its outcome),
    // each of which marks itself alive at least every lease wait + RPC deadline; a wedged loop
    // stops answering 200 and the kubelet restarts the pod. Readiness: registered.
    const int64_t limit_ms = std::max<int64_t>(
        60000, 2 * std::max<int64_t>(options_.lease_wait_ms + 5000, 4 * heartbeat_interval_ms_));
    exporter_->AddProbe("/healthz", [this, limit_ms]() -> absl::Status {
      const int64_t idle = NowMs() - last_alive_ms_.load();
      if (idle > limit_ms)
        return absl::UnavailableError(
            absl::StrCat("the worker's loop has not run for ", idle / 1000, " s"));
      return absl::OkStatus();
    });
    exporter_->AddProbe("/readyz", [this]() -> absl::Status {
      return registered_ ? absl::OkStatus()
                         : absl::UnavailableError("not registered with the coordinator yet");
    });
  }
  if (auto s = RegisterUntilReady(); !s.ok()) return s;
  while (!stop_) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(options_.lease_wait_ms + 5000));
    v1::LeaseTaskRequest request;
    request.set_worker_id(worker_id_);
    request.set_wait_ms(options_.lease_wait_ms);
    v1::LeaseTaskResponse response;
    grpc::Status s = stub_->LeaseTask(&context, request, &response);
    MarkAlive();
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
      // The coordinator restarted and forgot us: register again under the same id.
      if (auto r = RegisterUntilReady(); !r.ok()) return r;
      continue;
    }
    if (!s.ok()) {
      // Said once per outage, not on every retry.
      if (!coordinator_unreachable_) {
        SQ_LOG(WARNING) << "coordinator unreachable (" << s.error_message() << "); retrying";
        coordinator_unreachable_ = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    if (coordinator_unreachable_) {
      SQ_LOG(INFO) << "coordinator reachable again";
    }
    coordinator_unreachable_ = false;
    if (response.has_lease()) RunTask(response.lease());
  }
  return absl::OkStatus();
}

TaskProcessResult Worker::Execute(const v1::TaskLease& lease, const std::string& scratch) {
  v1::TaskProcessRequest request;
  *request.mutable_lease() = lease;
  request.set_scratch_dir(scratch);
  request.set_device(options_.device);
  request.set_step_delay_ms(options_.step_delay_ms);
  request.set_threads(options_.threads);
  if (auto fault = options_.faults.find(lease.kind()); fault != options_.faults.end())
    request.set_fault(fault->second);

  TaskReport report;
  std::atomic<bool> cancel{false};
  auto process = TaskProcess::Start(options_.task_executable, request);
  if (!process.ok()) {
    TaskProcessResult failed;
    failed.error = process.status();
    failed.retryable = true;
    return failed;
  }

  // Heartbeats run beside the task: they extend the lease, carry progress, and bring cancellation.
  auto send_heartbeat = [&] {
    v1::HeartbeatRequest request;
    request.set_worker_id(worker_id_);
    request.set_task_id(lease.task_id());
    request.set_attempt(lease.attempt());
    report.FillHeartbeat(request);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::HeartbeatResponse response;
    grpc::Status s = stub_->Heartbeat(&context, request, &response);
    if ((s.ok() && response.cancel()) || s.error_code() == grpc::StatusCode::NOT_FOUND)
      cancel = true;
  };
  std::mutex mu;
  std::condition_variable finished_cv;
  bool finished = false;
  std::thread heartbeat([&] {
    std::unique_lock<std::mutex> lock(mu);
    while (!finished_cv.wait_for(lock, std::chrono::milliseconds(heartbeat_interval_ms_),
                                 [&] { return finished; })) {
      lock.unlock();
      send_heartbeat();
      MarkAlive();
      lock.lock();
    }
  });

  if (metrics_) metrics_->SetCurrent(&report, lease.kind());
  TaskProcessLimits limits;
  limits.timeout_ms = lease.timeout_ms();
  limits.stall_timeout_ms = options_.stall_timeout_ms;
  limits.kill_grace_ms = options_.kill_grace_ms;
  TaskProcessResult result =
      (*process)->Supervise(report, cancel, limits, [&](const v1::TaskProcessUpdate& update) {
        if (metrics_) metrics_->AddTaskCounters(update);
      });
  if (metrics_) {
    metrics_->SetCurrent(nullptr, "");
    metrics_->TaskFinished(lease.kind(), result.ok ? "succeeded"
                                         : result.error.code() == absl::StatusCode::kCancelled
                                             ? "cancelled"
                                             : "failed");
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    finished = true;
  }
  finished_cv.notify_all();
  heartbeat.join();
  // The last progress and log lines, which a short task may not have had a heartbeat for.
  send_heartbeat();
  return result;
}

void Worker::RunTask(const v1::TaskLease& lease) {
  const std::string scratch =
      absl::StrCat(options_.scratch_dir, "/", lease.task_id(), "-", lease.attempt());
  fs::create_directories(scratch);
  SQ_LOG_TASK(INFO, lease.job_id(), lease.task_id())
      << lease.kind() << " attempt " << lease.attempt() << " started"
      << (lease.world_size() > 1
              ? absl::StrCat(" as rank ", lease.rank(), " of ", lease.world_size())
              : "");
  const auto started = std::chrono::steady_clock::now();
  const TaskProcessResult result = Execute(lease, scratch);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (result.ok) {
    SQ_LOG_TASK(INFO, lease.job_id(), lease.task_id())
        << lease.kind() << " attempt " << lease.attempt() << " succeeded in "
        << absl::StrFormat("%.1f", seconds) << " s";
  } else {
    SQ_LOG_TASK(WARNING, lease.job_id(), lease.task_id())
        << lease.kind() << " attempt " << lease.attempt() << " "
        << (result.error.code() == absl::StatusCode::kCancelled ? "cancelled" : "failed")
        << " after " << absl::StrFormat("%.1f", seconds) << " s"
        << (result.retryable ? " (retryable)" : "") << ": " << result.error.message();
  }

  // Report the outcome, retrying while the coordinator is unreachable (it may be restarting).
  for (int attempt = 0; attempt < 600 && !stop_; ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    grpc::Status s;
    if (result.ok) {
      v1::CompleteTaskRequest request;
      request.set_worker_id(worker_id_);
      request.set_task_id(lease.task_id());
      request.set_attempt(lease.attempt());
      *request.mutable_outputs() = result.outcome.outputs();
      *request.mutable_result() = result.outcome.result();
      v1::CompleteTaskResponse response;
      s = stub_->CompleteTask(&context, request, &response);
    } else {
      v1::FailTaskRequest request;
      request.set_worker_id(worker_id_);
      request.set_task_id(lease.task_id());
      request.set_attempt(lease.attempt());
      request.set_error(std::string(result.error.message()));
      request.set_cancelled(result.error.code() == absl::StatusCode::kCancelled);
      request.set_code(static_cast<int>(result.error.code()));
      request.set_retryable(result.retryable);
      v1::FailTaskResponse response;
      s = stub_->FailTask(&context, request, &response);
    }
    MarkAlive();
    if (!Transient(s)) break;  // done, or refused for good (the attempt is no longer current)
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  RemoveTree(scratch).IgnoreError();
  ++tasks_done_;
}

}  // namespace squeeze::worker
