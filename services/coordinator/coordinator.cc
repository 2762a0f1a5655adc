#include "services/coordinator/coordinator.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/metrics/grpc_server_metrics.h"
#include "common/metrics/metrics_exporter.h"
#include "common/metrics/store_metrics.h"
#include "common/recipe/recipe.h"
#include "services/coordinator/coordinator_metrics.h"
#include "squeeze/v1/jobs.grpc.pb.h"
#include "squeeze/v1/worker.grpc.pb.h"

namespace squeeze::coordinator {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

}  // namespace

class JobServiceImpl final : public v1::JobService::Service {
 public:
  explicit JobServiceImpl(JobScheduler* scheduler) : scheduler_(scheduler) {}

  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest* request,
                         v1::SubmitJobResponse* response) override {
    // Everything knowable now is checked now: a job never fails later for a reason we could have
    // told the user at submit time.
    auto recipe = ParseRecipe(request->recipe_yaml());
    if (!recipe.ok()) return ToGrpc(recipe.status());
    if (auto s = CheckRecipeInputs(*recipe); !s.ok()) return ToGrpc(s);
    if (request->priority() < -1000 || request->priority() > 1000) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "priority: must be between -1000 and 1000");
    }
    auto result = scheduler_->Submit(*request, *recipe);
    if (!result.ok()) return ToGrpc(result.status());
    *response = *std::move(result);
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest* request,
                      v1::Job* response) override {
    auto job = scheduler_->Get(request->job_id());
    if (!job.ok()) return ToGrpc(job.status());
    *response = *std::move(job);
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override {
    auto jobs = scheduler_->List(*request);
    if (!jobs.ok()) return ToGrpc(jobs.status());
    *response = *std::move(jobs);
    return grpc::Status::OK;
  }

  grpc::Status CancelJob(grpc::ServerContext*, const v1::CancelJobRequest* request,
                         v1::Job* response) override {
    auto job = scheduler_->Cancel(request->job_id());
    if (!job.ok()) return ToGrpc(job.status());
    *response = *std::move(job);
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    int64_t after = request->after_sequence();
    bool done = false;
    while (!done && !context->IsCancelled()) {
      auto events = scheduler_->Events(request->job_id(), after, /*wait_ms=*/500, &done);
      if (!events.ok()) return ToGrpc(events.status());
      for (const v1::JobEvent& e : *events) {
        if (!writer->Write(e)) return grpc::Status::CANCELLED;
        after = e.sequence();
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status ListArtifacts(grpc::ServerContext*, const v1::ListArtifactsRequest* request,
                             v1::ListArtifactsResponse* response) override {
    auto artifacts = scheduler_->Artifacts(request->job_id());
    if (!artifacts.ok()) return ToGrpc(artifacts.status());
    *response = *std::move(artifacts);
    return grpc::Status::OK;
  }

 private:
  JobScheduler* scheduler_;
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  explicit WorkerServiceImpl(JobScheduler* scheduler) : scheduler_(scheduler) {}

  grpc::Status RegisterWorker(grpc::ServerContext*, const v1::RegisterWorkerRequest* request,
                              v1::RegisterWorkerResponse* response) override {
    *response = scheduler_->Register(*request);
    return grpc::Status::OK;
  }

  grpc::Status LeaseTask(grpc::ServerContext* context, const v1::LeaseTaskRequest* request,
                         v1::LeaseTaskResponse* response) override {
    const int64_t wait = std::clamp<int64_t>(request->wait_ms(), 0, 30000);
    auto lease = scheduler_->Lease(request->worker_id(), wait);
    if (!lease.ok()) return ToGrpc(lease.status());
    if (*lease) {
      *response->mutable_lease() = **lease;
    }
    return grpc::Status::OK;
  }

  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override {
    auto r = scheduler_->Heartbeat(*request);
    if (!r.ok()) return ToGrpc(r.status());
    *response = *std::move(r);
    return grpc::Status::OK;
  }

  grpc::Status CompleteTask(grpc::ServerContext*, const v1::CompleteTaskRequest* request,
                            v1::CompleteTaskResponse*) override {
    return ToGrpc(scheduler_->Complete(*request));
  }

  grpc::Status FailTask(grpc::ServerContext*, const v1::FailTaskRequest* request,
                        v1::FailTaskResponse*) override {
    return ToGrpc(scheduler_->Fail(*request));
  }

 private:
  JobScheduler* scheduler_;
};

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Start(CoordinatorOptions options) {
  std::unique_ptr<Coordinator> c(new Coordinator());
  if (options.state_dir.empty()) return absl::InvalidArgumentError("state_dir: required");
  std::error_code ec;
  std::filesystem::create_directories(options.state_dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("state_dir: cannot create ", options.state_dir, ": ", ec.message()));
  }
  if (options.store_root.empty()) {
    options.store_root =
        absl::StrCat("file://", std::filesystem::absolute(options.state_dir).string(), "/store");
  }
  options.scheduler.store_root = options.store_root;
  c->options_ = options;
  auto state =
      OpenSqliteStateStore(options.state_dir + "/state.db", options.sqlite_synchronous_full);
  if (!state.ok()) return state.status();
  c->state_ = *std::move(state);
  auto artifacts = OpenArtifactStore(options.store_root);
  if (!artifacts.ok()) return artifacts.status();
  c->artifacts_ = *std::move(artifacts);
  if (!options.metrics_listen.empty()) {
    auto metrics = MetricsExporter::Start(options.metrics_listen, "coordinator");
    if (!metrics.ok()) return metrics.status();
    c->metrics_ = *std::move(metrics);
    c->artifacts_ = InstrumentStore(std::move(c->artifacts_), c->metrics_->registry());
  }
  c->scheduler_ = std::make_unique<JobScheduler>(c->state_.get(), c->artifacts_.get(),
                                                 SystemClock(), options.scheduler);
  if (c->metrics_) {
    c->scheduler_metrics_ =
        std::make_shared<CoordinatorMetrics>(c->metrics_->registry(), c->scheduler_.get());
    c->scheduler_->SetObserver(c->scheduler_metrics_.get());
    c->metrics_->RegisterCollectable(c->scheduler_metrics_);
  }
  if (auto s = c->scheduler_->Recover(); !s.ok()) return s;

  c->job_service_ = std::make_unique<JobServiceImpl>(c->scheduler_.get());
  c->worker_service_ = std::make_unique<WorkerServiceImpl>(c->scheduler_.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, grpc::InsecureServerCredentials(), &c->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(c->job_service_.get());
  builder.RegisterService(c->worker_service_.get());
  if (c->metrics_) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(NewGrpcMetricsInterceptor(c->metrics_->registry()));
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
  c->server_ = builder.BuildAndStart();
  if (!c->server_ || c->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen_address));
  }
  c->expiry_ = std::thread([raw = c.get()] {
    while (!raw->stopping_) {
      raw->scheduler_->ExpireLeases();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  return c;
}

std::string Coordinator::address() const {
  const std::string& listen = options_.listen_address;
  const std::string host = listen.substr(0, listen.rfind(':'));
  return absl::StrCat(host == "0.0.0.0" || host == "[::]" ? "127.0.0.1" : host, ":", port_);
}

std::string Coordinator::metrics_address() const { return metrics_ ? metrics_->address() : ""; }

void Coordinator::Wait() {
  if (server_) server_->Wait();
}

void Coordinator::Shutdown() {
  if (stopping_.exchange(true)) return;
  scheduler_->Shutdown();
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (expiry_.joinable()) expiry_.join();
}

Coordinator::~Coordinator() { Shutdown(); }

}  // namespace squeeze::coordinator
