#include "services/coordinator/coordinator.h"
#include "services/coordinator/input_policy.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/base/file_util.h"
#include "common/base/log.h"
#include "common/base/status_macros.h"
#include "common/metrics/grpc_server_metrics.h"
#include "common/metrics/metrics_exporter.h"
#include "common/metrics/store_metrics.h"
#include "common/recipe/recipe.h"
#include "common/rpc/authenticator.h"
#include "common/rpc/error_details.h"
#include "common/rpc/reflection_service.h"
#include "services/coordinator/artifact_access.h"
#include "services/coordinator/coordinator_metrics.h"
#include "services/coordinator/leader_lease.h"
#include "squeeze/v1/jobs.grpc.pb.h"
#include "squeeze/v1/worker.grpc.pb.h"

namespace squeeze::coordinator {
namespace {

constexpr const char* kJobServiceName = "squeeze.v1.JobService";
constexpr const char* kWorkerServiceName = "squeeze.v1.WorkerService";

// Who is calling. Without an authenticator (the embedded default) everyone is an admin.
absl::StatusOr<Principal> Caller(grpc::ServerContext* context, const Authenticator* auth,
                                 const char* method) {
  if (auth == nullptr) return Principal{"", Role::kAdmin};
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  const absl::string_view value = it == metadata.end()
                                      ? absl::string_view()
                                      : absl::string_view(it->second.data(), it->second.size());
  auto who = auth->Authenticate(value, absl::ToUnixSeconds(absl::Now()));
  if (!who.ok()) {
    SQ_LOG(WARNING) << "auth: " << method << " from " << context->peer() << ": "
                    << who.status().message();
  }
  return who;
}

// Users act on their tenant's jobs only; an admin on all. Workers do not use the JobService.
absl::StatusOr<Principal> JobCaller(grpc::ServerContext* context, const Authenticator* auth,
                                    const char* method) {
  auto who = Caller(context, auth, method);
  if (who.ok() && who->role == Role::kWorker) {
    SQ_LOG(WARNING) << "auth: " << method << " from " << context->peer()
                    << ": worker credentials used on the job API";
    return absl::PermissionDeniedError("worker credentials cannot use the job API");
  }
  return who;
}

}  // namespace

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(JobScheduler* scheduler, ArtifactStore* artifacts, const Authenticator* auth,
                 RecipeLimits recipe_limits, TenantInputPolicy inputs)
      : scheduler_(scheduler),
        artifacts_(artifacts),
        auth_(auth),
        recipe_limits_(recipe_limits),
        inputs_(std::move(inputs)) {}

  grpc::Status SubmitJob(grpc::ServerContext* context, const v1::SubmitJobRequest* original,
                         v1::SubmitJobResponse* response) override {
    auto who = JobCaller(context, auth_, "SubmitJob");
    if (!who.ok()) return ToGrpcStatus(who.status());
    v1::SubmitJobRequest scoped = *original;
    if (who->role == Role::kUser) {
      if (!scoped.tenant().empty() && scoped.tenant() != who->tenant) {
        return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                            "tenant: your token is for tenant \"" + who->tenant + "\"");
      }
      scoped.set_tenant(who->tenant);
    }
    const v1::SubmitJobRequest* request = &scoped;
    // Everything knowable now is checked now: a job never fails later for a reason we could have
    // told the user at submit time.
    auto recipe = ParseRecipe(request->recipe_yaml(), recipe_limits_);
    if (!recipe.ok()) return ToGrpcStatus(recipe.status(), "recipe_yaml");
    // Before anything is read: a user names only what the tenant may read.
    if (auth_ != nullptr && who->role == Role::kUser) {
      if (auto s = inputs_.Check(*recipe, who->tenant); !s.ok()) {
        SQ_LOG(WARNING) << "auth: SubmitJob from " << context->peer() << ": " << s.message();
        return ToGrpcStatus(s);
      }
    }
    if (auto s = CheckRecipeInputs(*recipe); !s.ok()) return ToGrpcStatus(s, "recipe_yaml");
    if (request->priority() < -1000 || request->priority() > 1000) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "priority: must be between -1000 and 1000");
    }
    auto result = scheduler_->Submit(*request, *recipe);
    if (!result.ok()) return ToGrpcStatus(result.status());
    *response = *std::move(result);
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::Job* response) override {
    auto job = Visible(context, "GetJob", request->job_id());
    if (!job.ok()) return ToGrpcStatus(job.status());
    *response = *std::move(job);
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* original,
                        v1::ListJobsResponse* response) override {
    auto who = JobCaller(context, auth_, "ListJobs");
    if (!who.ok()) return ToGrpcStatus(who.status());
    v1::ListJobsRequest request = *original;
    if (who->role == Role::kUser) request.set_tenant(who->tenant);  // only their own
    auto jobs = scheduler_->List(request);
    if (!jobs.ok()) return ToGrpcStatus(jobs.status());
    *response = *std::move(jobs);
    return grpc::Status::OK;
  }

  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::Job* response) override {
    if (auto visible = Visible(context, "CancelJob", request->job_id()); !visible.ok())
      return ToGrpcStatus(visible.status());
    auto job = scheduler_->Cancel(request->job_id());
    if (!job.ok()) return ToGrpcStatus(job.status());
    *response = *std::move(job);
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext* context, const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    if (auto visible = Visible(context, "WatchJob", request->job_id()); !visible.ok())
      return ToGrpcStatus(visible.status());
    int64_t after = request->after_sequence();
    bool done = false;
    while (!done && !context->IsCancelled()) {
      auto events = scheduler_->Events(request->job_id(), after, /*wait_ms=*/500, &done);
      if (!events.ok()) return ToGrpcStatus(events.status());
      for (const v1::JobEvent& e : *events) {
        if (!writer->Write(e)) return grpc::Status::CANCELLED;
        after = e.sequence();
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status ListArtifacts(grpc::ServerContext* context, const v1::ListArtifactsRequest* request,
                             v1::ListArtifactsResponse* response) override {
    if (auto visible = Visible(context, "ListArtifacts", request->job_id()); !visible.ok())
      return ToGrpcStatus(visible.status());
    auto artifacts = scheduler_->Artifacts(request->job_id());
    if (!artifacts.ok()) return ToGrpcStatus(artifacts.status());
    *response = *std::move(artifacts);
    // Sizes come from the manifests, read here, outside the scheduler's lock. An artifact the
    // store cannot describe now (deleted checkpoints, an unreachable bucket) is still listed.
    for (v1::Artifact& a : *response->mutable_artifacts()) {
      if (auto s = DescribeArtifact(*artifacts_, a); !s.ok()) {
        SQ_LOG(WARNING) << "ListArtifacts " << request->job_id() << ": " << a.uri() << ": "
                        << s.message();
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status DownloadArtifact(grpc::ServerContext* context,
                                const v1::DownloadArtifactRequest* request,
                                grpc::ServerWriter<v1::DownloadArtifactResponse>* writer) override {
    if (auto visible = Visible(context, "DownloadArtifact", request->job_id()); !visible.ok())
      return ToGrpcStatus(visible.status());
    auto artifacts = scheduler_->Artifacts(request->job_id());
    if (!artifacts.ok()) return ToGrpcStatus(artifacts.status());
    // Only the job's own artifacts: the URI is a name within the job, never a path to read.
    const v1::Artifact* artifact = nullptr;
    for (const v1::Artifact& a : artifacts->artifacts())
      if (a.uri() == request->uri()) artifact = &a;
    if (artifact == nullptr) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          absl::StrCat("uri: \"", request->uri(), "\" is not an artifact of job ",
                       request->job_id(), " (ListArtifacts lists them)")));
    }
    return ToGrpcStatus(StreamArtifact(*artifacts_, *artifact, request->file(),
                                       [&](const v1::DownloadArtifactResponse& piece) {
                                         return !context->IsCancelled() && writer->Write(piece);
                                       }));
  }

 private:
  // The job, if the caller may see it. Another tenant's job is NOT_FOUND, exactly like a job that
  // does not exist, so ids of other tenants' jobs cannot be probed.
  absl::StatusOr<v1::Job> Visible(grpc::ServerContext* context, const char* method,
                                  const std::string& job_id) {
    auto who = JobCaller(context, auth_, method);
    if (!who.ok()) return who.status();
    auto job = scheduler_->Get(job_id);
    if (job.ok() && who->role == Role::kUser && job->tenant() != who->tenant) {
      SQ_LOG(WARNING) << "auth: " << method << " from " << context->peer() << ": tenant "
                      << who->tenant << " asked for another tenant's job";
      return absl::NotFoundError(absl::StrCat("job \"", job_id, "\" not found"));
    }
    return job;
  }

  JobScheduler* scheduler_;
  ArtifactStore* artifacts_;
  const Authenticator* auth_;
  const RecipeLimits recipe_limits_;
  const TenantInputPolicy inputs_;
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  WorkerServiceImpl(JobScheduler* scheduler, const Authenticator* auth)
      : scheduler_(scheduler), auth_(auth) {}

  grpc::Status RegisterWorker(grpc::ServerContext* context,
                              const v1::RegisterWorkerRequest* request,
                              v1::RegisterWorkerResponse* response) override {
    if (auto s = IsWorker(context, "RegisterWorker"); !s.ok()) return ToGrpcStatus(s);
    *response = scheduler_->Register(*request);
    return grpc::Status::OK;
  }

  grpc::Status LeaseTask(grpc::ServerContext* context, const v1::LeaseTaskRequest* request,
                         v1::LeaseTaskResponse* response) override {
    if (auto s = IsWorker(context, "LeaseTask"); !s.ok()) return ToGrpcStatus(s);
    const int64_t wait = std::clamp<int64_t>(request->wait_ms(), 0, 30000);
    auto lease = scheduler_->Lease(request->worker_id(), wait);
    if (!lease.ok()) return ToGrpcStatus(lease.status());
    if (*lease) {
      *response->mutable_lease() = **lease;
    }
    return grpc::Status::OK;
  }

  grpc::Status Heartbeat(grpc::ServerContext* context, const v1::HeartbeatRequest* request,
                         v1::HeartbeatResponse* response) override {
    if (auto s = IsWorker(context, "Heartbeat"); !s.ok()) return ToGrpcStatus(s);
    auto r = scheduler_->Heartbeat(*request);
    if (!r.ok()) return ToGrpcStatus(r.status());
    *response = *std::move(r);
    return grpc::Status::OK;
  }

  grpc::Status CompleteTask(grpc::ServerContext* context, const v1::CompleteTaskRequest* request,
                            v1::CompleteTaskResponse*) override {
    if (auto s = IsWorker(context, "CompleteTask"); !s.ok()) return ToGrpcStatus(s);
    return ToGrpcStatus(scheduler_->Complete(*request));
  }

  grpc::Status FailTask(grpc::ServerContext* context, const v1::FailTaskRequest* request,
                        v1::FailTaskResponse*) override {
    if (auto s = IsWorker(context, "FailTask"); !s.ok()) return ToGrpcStatus(s);
    return ToGrpcStatus(scheduler_->Fail(*request));
  }

 private:
  // The worker API takes worker credentials only: roles are exclusive, so an admin's token (a
  // person's) cannot register a machine that would then receive other tenants' tasks.
  absl::Status IsWorker(grpc::ServerContext* context, const char* method) {
    auto who = Caller(context, auth_, method);
    if (!who.ok()) return who.status();
    if (auth_ != nullptr && who->role != Role::kWorker) {
      SQ_LOG(WARNING) << "auth: " << method << " from " << context->peer() << ": "
                      << (who->role == Role::kAdmin ? "admin" : "user")
                      << " credentials used on the worker API";
      return absl::PermissionDeniedError("the worker API needs worker credentials");
    }
    return absl::OkStatus();
  }

  JobScheduler* scheduler_;
  const Authenticator* auth_;
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
  // Metrics first: a standby answers liveness probes on /metrics while it waits.
  if (!options.metrics_listen.empty()) {
    auto metrics = MetricsExporter::Start(options.metrics_listen, "coordinator");
    if (!metrics.ok()) return metrics.status();
    c->metrics_ = *std::move(metrics);
  }
  absl::StatusOr<std::unique_ptr<StateStore>> state;
  if (options.postgres.empty()) {
    state = OpenSqliteStateStore(options.state_dir + "/state.db", options.sqlite_synchronous_full);
  } else {
    if (options.leader_id.empty()) {
      char host[256] = "coordinator";
      ::gethostname(host, sizeof(host));
      options.leader_id = absl::StrCat(host, ":", ::getpid());
      c->options_.leader_id = options.leader_id;
    }
    auto lease = OpenPostgresLeaderLease(options.postgres);
    if (!lease.ok()) return lease.status();
    c->lease_ = *std::move(lease);
    SQ_RETURN_IF_ERROR(c->StandBy());
    state = OpenPostgresStateStore(options.postgres, options.leader_id);
  }
  if (!state.ok()) return state.status();
  c->state_ = *std::move(state);
  auto artifacts = OpenArtifactStore(options.store_root);
  if (!artifacts.ok()) return artifacts.status();
  c->artifacts_ = *std::move(artifacts);
  if (c->metrics_) {
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

  if (!options.auth_tokens_file.empty()) {
    auto auth = Authenticator::LoadFile(options.auth_tokens_file);
    if (!auth.ok()) return auth.status();
    c->auth_ = *std::move(auth);
  }
  c->job_service_ = std::make_unique<JobServiceImpl>(
      c->scheduler_.get(), c->artifacts_.get(), c->auth_.get(), options.recipe_limits,
      TenantInputPolicy(options.store_root, options.tenant_roots));
  c->worker_service_ = std::make_unique<WorkerServiceImpl>(c->scheduler_.get(), c->auth_.get());
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert_file.empty()) {
    auto pem = [](const std::string& path, const char* what) -> absl::StatusOr<std::string> {
      auto text = ReadFileToString(path);
      if (!text.ok()) return absl::NotFoundError(absl::StrCat(what, " ", text.status().message()));
      return text;
    };
    auto cert = pem(options.tls_cert_file, "--tls-cert");
    if (!cert.ok()) return cert.status();
    auto key = pem(options.tls_key_file, "--tls-key");
    if (!key.ok()) return key.status();
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({*key, *cert});
    if (!options.tls_client_ca_file.empty()) {
      // Mutual TLS: only clients with a certificate from this CA get past the handshake.
      auto ca = pem(options.tls_client_ca_file, "--tls-client-ca");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
      ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    credentials = grpc::SslServerCredentials(ssl);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, credentials, &c->port_);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  builder.RegisterService(c->job_service_.get());
  builder.RegisterService(c->worker_service_.get());
  c->reflection_v1_ = std::make_unique<ReflectionV1Service>(std::vector<std::string>{
      kJobServiceName, kWorkerServiceName, "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"});
  builder.RegisterService(c->reflection_v1_.get());
  if (c->metrics_) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> creators;
    creators.push_back(NewGrpcMetricsInterceptor(c->metrics_->registry()));
    builder.experimental().SetInterceptorCreators(std::move(creators));
  }
  c->server_ = builder.BuildAndStart();
  if (!c->server_ || c->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options.listen_address));
  }
  // Health per service, so a probe can ask for the API it needs ("" is the server as a whole).
  if (auto* health = c->server_->GetHealthCheckService()) {
    health->SetServingStatus(kJobServiceName, true);
    health->SetServingStatus(kWorkerServiceName, true);
  }
  c->expiry_ = std::thread([raw = c.get()] {
    while (!raw->stopping_) {
      raw->scheduler_->ExpireLeases();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  if (c->lease_) {
    c->lease_keeper_ = std::thread([raw = c.get()] { raw->KeepLeadership(); });
  }
  // Store I/O (which may retry for seconds) stays off the lease-expiry thread.
  c->releaser_ = std::thread([raw = c.get()] {
    while (!raw->stopping_) {
      raw->scheduler_->ReleaseCheckpoints();
      for (int i = 0; i < 10 && !raw->stopping_; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  return c;
}

absl::Status Coordinator::StandBy() {
  bool announced = false;
  for (;;) {
    auto leads = lease_->TryAcquire(options_.leader_id, options_.leader_lease_ms);
    if (leads.ok() && *leads) break;
    if (options_.stop_standby != nullptr && *options_.stop_standby) {
      return absl::CancelledError("stopped while standing by");
    }
    if (!announced) {
      SQ_LOG(INFO) << "coordinator " << options_.leader_id
                   << ": standing by; another coordinator holds the leader lease"
                   << (leads.ok() ? "" : absl::StrCat(" (", leads.status().message(), ")"));
      announced = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(options_.leader_lease_ms / 4));
  }
  if (announced) {
    SQ_LOG(INFO) << "coordinator " << options_.leader_id << ": now leading";
  }
  return absl::OkStatus();
}

void Coordinator::KeepLeadership() {
  using Clock = std::chrono::steady_clock;
  Clock::time_point renewed = Clock::now();
  const auto ttl = std::chrono::milliseconds(options_.leader_lease_ms);
  while (!stopping_) {
    for (int i = 0; i < 10 && !stopping_; ++i)
      std::this_thread::sleep_for(ttl / 40);  // renews four times per lease
    if (stopping_) return;
    auto leads = lease_->TryAcquire(options_.leader_id, options_.leader_lease_ms);
    if (leads.ok() && *leads) {
      renewed = Clock::now();
      continue;
    }
    // Taken by another, or unknown for as long as the lease lasts: the standby may lead by now.
    // Leaving at once is the only safe answer (the fence already refuses our commits).
    if ((leads.ok() && !*leads) || Clock::now() - renewed > ttl) {
      SQ_LOG(ERROR) << "coordinator " << options_.leader_id << ": lost the leader lease ("
                    << (leads.ok() ? "another coordinator holds it" : leads.status().message())
                    << "); exiting so that only the new leader serves";
      std::_Exit(75);
    }
  }
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
  if (server_) {
    if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(false);
  }
  if (scheduler_) scheduler_->Shutdown();  // absent when stopped while standing by
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (expiry_.joinable()) expiry_.join();
  if (releaser_.joinable()) releaser_.join();
  if (lease_keeper_.joinable()) lease_keeper_.join();
  // A clean stop hands over at once rather than after the lease lapses.
  if (lease_ && state_) lease_->Release(options_.leader_id).IgnoreError();
}

Coordinator::~Coordinator() { Shutdown(); }

}  // namespace squeeze::coordinator
