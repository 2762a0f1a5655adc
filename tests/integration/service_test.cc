// The service with real processes and real gRPC on loopback: a coordinator, workers and
// squeezectl, killed with SIGKILL where the scenario says so.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "common/rpc/error_details.h"
#include "common/store/artifact_store.h"
#include "common/store/s3_client.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/common/store/s3rver_server.h"
#include "tests/integration/service_harness.h"

namespace squeeze::testing {
namespace {

namespace fs = std::filesystem;

// eval -> quantize -> eval on the example teacher, on a slice of the evaluation split.
std::string Recipe(int max_attempts = 3, const std::string& gate = "0.5", int bits = 4,
                   const std::string& method = "rtn") {
  const std::string src = SourceDir();
  const std::string extra = method == "gptq" ? ", calibration_samples: 16" : "";
  return "model: " + src + "/deploy/models/fortunes-teacher\n" + "data: {calibration: " + src +
         "/deploy/data/fortunes/calibration.jsonl, evaluation: [" + src +
         "/deploy/data/fortunes/evaluation.jsonl]}\n" +
         "max_attempts: " + std::to_string(max_attempts) + "\n" +
         "stages:\n"
         "  - evaluate: {max_examples: 16, window: 128, stride: 64}\n"
         "  - quantize: {method: " +
         method + ", bits: " + std::to_string(bits) + ", group_size: 128" + extra +
         "}\n"
         "  - evaluate: {max_examples: 16, window: 128, stride: 64, gate: {min_retention: " +
         gate + "}}\n";
}

TEST(ServiceTest, EndToEndWithTwoWorkersAndSqueezectl) {
  ServiceHarness h("e2e");
  h.StartCoordinator();
  h.StartWorker("a");
  h.StartWorker("b");
  const std::string recipe = h.WriteRecipe("job.yaml", Recipe());
  auto [code, out] =
      RunCommand({Env("SQUEEZECTL_BIN"), "submit", recipe, "--coordinator", h.address(), "--wait"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("SUCCEEDED"), std::string::npos) << out;

  auto [list_code, list_out] =
      RunCommand({Env("SQUEEZECTL_BIN"), "list", "--coordinator", h.address(), "--json"});
  ASSERT_EQ(list_code, 0) << list_out;
  auto jobs = nlohmann::json::parse(list_out)["jobs"];
  ASSERT_EQ(jobs.size(), 1u);
  const std::string id = jobs[0]["id"];
  v1::Job job = h.Get(id);
  EXPECT_EQ(job.state(), v1::SUCCEEDED);
  nlohmann::json report = h.Report(job);
  ASSERT_EQ(report["stages"].size(), 3u);
  EXPECT_GT(report["stages"][0]["result"]["perplexity"].get<double>(), 1.0);
  EXPECT_GT(report["stages"][2]["result"]["retention"].get<double>(), 0.5);
  EXPECT_TRUE(
      fs::exists(fs::path(ArtifactDir(report["model"].get<std::string>(), h.dir() + "/model")) /
                 "model.safetensors.index.json"));

  // Artifacts download, and the health service answers.
  auto [art_code, art_out] = RunCommand({Env("SQUEEZECTL_BIN"), "artifacts", id, "--coordinator",
                                         h.address(), "--download", h.dir() + "/download"});
  ASSERT_EQ(art_code, 0) << art_out;
  EXPECT_TRUE(fs::exists(h.dir() + "/download/report.json"));
  EXPECT_TRUE(fs::exists(h.dir() + "/download/1-model/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(h.dir() + "/download/1-model/model-00001-of-00005.safetensors"));
  auto health = grpc::health::v1::Health::NewStub(
      grpc::CreateChannel(h.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest hc;
  grpc::health::v1::HealthCheckResponse hr;
  ASSERT_TRUE(health->Check(&context, hc, &hr).ok());
  EXPECT_EQ(hr.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  for (const char* service : {"squeeze.v1.JobService", "squeeze.v1.WorkerService"}) {
    grpc::ClientContext per_service;
    hc.set_service(service);
    ASSERT_TRUE(health->Check(&per_service, hc, &hr).ok()) << service;
    EXPECT_EQ(hr.status(), grpc::health::v1::HealthCheckResponse::SERVING) << service;
  }
  // squeezectl health: what probes and scripts call.
  auto [health_code, health_out] = RunCommand({Env("SQUEEZECTL_BIN"), "health", "--coordinator",
                                               h.address(), "--service", "squeeze.v1.JobService"});
  EXPECT_EQ(health_code, 0) << health_out;
  EXPECT_NE(health_out.find("squeeze.v1.JobService: SERVING"), std::string::npos) << health_out;
  auto [down_code, down_out] =
      RunCommand({Env("SQUEEZECTL_BIN"), "health", "--coordinator",
                  "127.0.0.1:" + std::to_string(FreePort()), "--timeout-ms", "500"});
  EXPECT_EQ(down_code, 1) << down_out;
  grpc::ClientContext unknown;
  hc.set_service("squeeze.v1.NoSuchService");
  EXPECT_EQ(health->Check(&unknown, hc, &hr).error_code(), grpc::StatusCode::NOT_FOUND);

  // Reflection v1 answers over the wire.
  auto reflection = grpc::reflection::v1::ServerReflection::NewStub(
      grpc::CreateChannel(h.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext reflect_context;
  auto stream = reflection->ServerReflectionInfo(&reflect_context);
  grpc::reflection::v1::ServerReflectionRequest ask;
  ask.set_list_services("");
  ASSERT_TRUE(stream->Write(ask));
  grpc::reflection::v1::ServerReflectionResponse answer;
  ASSERT_TRUE(stream->Read(&answer));
  std::set<std::string> services;
  for (const auto& sr : answer.list_services_response().service()) services.insert(sr.name());
  EXPECT_TRUE(services.count("squeeze.v1.JobService"));
  ask.set_file_containing_symbol("squeeze.v1.JobService");
  ASSERT_TRUE(stream->Write(ask));
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_GT(answer.file_descriptor_response().file_descriptor_proto_size(), 1);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());

  // GetJob carries each stage's typed result and times; ListArtifacts the sizes.
  ASSERT_EQ(job.tasks_size(), 3);
  EXPECT_GT(job.tasks(0).result().evaluate().perplexity(), 1.0);
  EXPECT_EQ(job.tasks(1).result().quantize().bits(), 4);
  EXPECT_GT(job.tasks(2).result().evaluate().retention(), 0.5);
  for (const v1::Task& t : job.tasks()) {
    EXPECT_EQ(t.progress().completed(), t.progress().total()) << "stage " << t.index();
    EXPECT_GT(t.progress().total(), 0) << "stage " << t.index();
    EXPECT_GE(t.finish_time().seconds(), t.start_time().seconds());
    EXPECT_FALSE(t.has_metrics());
  }
  EXPECT_EQ(job.progress().completed(), 3);
  EXPECT_GT(job.finish_time().seconds(), 0);
  grpc::ClientContext list_context;
  v1::ListArtifactsRequest list;
  list.set_job_id(id);
  v1::ListArtifactsResponse artifacts;
  ASSERT_TRUE(h.jobs().ListArtifacts(&list_context, list, &artifacts).ok());
  for (const v1::Artifact& a : artifacts.artifacts()) {
    EXPECT_GT(a.size_bytes(), 0) << a.name();
    int64_t sum = 0;
    for (const v1::ArtifactFile& f : a.files()) {
      sum += f.size_bytes();
      if (a.task_index() == 1 && a.name() == "model") {
        EXPECT_EQ(f.size_bytes(),
                  static_cast<int64_t>(fs::file_size(h.dir() + "/download/1-model/" + f.name())))
            << f.name();
      }
    }
    EXPECT_EQ(sum, a.size_bytes()) << a.name();
  }
  // A URI that is not one of the job's artifacts is refused, naming the field.
  grpc::ClientContext download_context;
  v1::DownloadArtifactRequest download;
  download.set_job_id(id);
  download.set_uri("file:///etc");
  auto reader = h.jobs().DownloadArtifact(&download_context, download);
  v1::DownloadArtifactResponse piece;
  EXPECT_FALSE(reader->Read(&piece));
  const grpc::Status refused = reader->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ASSERT_EQ(FieldViolations(refused).size(), 1u);
  EXPECT_EQ(FieldViolations(refused)[0].first, "uri");
}

TEST(ServiceTest, WorkerKilledMidTaskAnotherWorkerResumesIt) {
  ServiceHarness h("worker_kill");
  h.StartCoordinator({"--lease-timeout-ms", "2000", "--heartbeat-interval-ms", "200",
                      "--retry-backoff-ms", "100"});
  const int slow = h.StartWorker("slow", {"--step-delay-ms", "1500"});
  v1::Job job = h.Submit(Recipe(3, "0.5", 4, "gptq"));
  // Kill it as soon as the quantize stage reports a layer: progress counts a layer once its
  // checkpoint is stored, so the retry must resume after it.
  h.WaitFor(job.id(), [](const v1::Job& j) {
    return j.tasks(1).state() == v1::TASK_RUNNING && j.tasks(1).progress().completed() >= 1;
  });
  h.KillWorker(slow);
  h.StartWorker("fast");
  v1::Job done = h.WaitFor(job.id(), Finished);
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
  EXPECT_EQ(done.tasks(0).attempts(), 1) << "a finished stage is not run again";
  EXPECT_EQ(done.tasks(1).attempts(), 2);
  EXPECT_EQ(done.tasks(2).attempts(), 1);
  nlohmann::json report = h.Report(done);
  EXPECT_GE(report["stages"][1]["result"]["resumed_from_layer"].get<int>(), 1)
      << "the retry resumed from the layer checkpoint";
  EXPECT_EQ(report["stages"][1]["result"]["format"], "gptq")
      << "restored layers' codes were exported";
  EXPECT_GT(report["stages"][2]["result"]["retention"].get<double>(), 0.95);
}

TEST(ServiceTest, CoordinatorKilledAndRestartedLosesNothing) {
  ServiceHarness h("coordinator_kill");
  const std::vector<std::string> flags = {"--lease-timeout-ms", "5000", "--heartbeat-interval-ms",
                                          "200"};
  h.StartCoordinator(flags);
  h.StartWorker("w", {"--step-delay-ms", "300"});
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(h.Submit(Recipe(), "req-" + std::to_string(i)).id());
  // Killed once the worker is known to hold the lease (its heartbeats carry progress): a kill
  // between the lease's commit and its response reaching the worker is a retry by design (the
  // lease expires unheld), which would make the attempts below 2.
  h.WaitFor(ids[0], [](const v1::Job& j) {
    return j.state() == v1::RUNNING && j.tasks(0).progress().completed() > 0;
  });
  h.KillCoordinator();
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  h.StartCoordinator(flags);
  for (int i = 0; i < 3; ++i) {
    // A client retrying its submission after the crash gets the same job back.
    EXPECT_EQ(h.Submit(Recipe(), "req-" + std::to_string(i)).id(), ids[i]);
  }
  for (const std::string& id : ids) {
    v1::Job done = h.WaitFor(id, Finished);
    ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
    for (const v1::Task& t : done.tasks())
      EXPECT_EQ(t.attempts(), 1) << id << " stage " << t.index();
  }
  grpc::ClientContext context;
  v1::ListJobsRequest request;
  v1::ListJobsResponse response;
  ASSERT_TRUE(h.jobs().ListJobs(&context, request, &response).ok());
  EXPECT_EQ(response.jobs_size(), 3);
}

TEST(ServiceTest, DuplicateRequestIdAndCancellation) {
  ServiceHarness h("cancel");
  h.StartCoordinator({"--heartbeat-interval-ms", "200"});
  v1::Job a = h.Submit(Recipe(), "same");
  v1::Job b = h.Submit(Recipe(), "same");
  EXPECT_EQ(a.id(), b.id());
  // No worker yet: a queued job is cancelled at once.
  auto [code, out] =
      RunCommand({Env("SQUEEZECTL_BIN"), "cancel", a.id(), "--coordinator", h.address()});
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(h.Get(a.id()).state(), v1::CANCELLED);

  h.StartWorker("w", {"--step-delay-ms", "1000"});
  v1::Job running = h.Submit(Recipe());
  h.WaitFor(running.id(), [](const v1::Job& j) { return j.state() == v1::RUNNING; });
  std::tie(code, out) =
      RunCommand({Env("SQUEEZECTL_BIN"), "cancel", running.id(), "--coordinator", h.address()});
  ASSERT_EQ(code, 0) << out;
  v1::Job done = h.WaitFor(running.id(), Finished, 30000);
  EXPECT_EQ(done.state(), v1::CANCELLED);
  EXPECT_NE(done.tasks(2).state(), v1::TASK_SUCCEEDED) << "nothing ran after the cancel";
}

TEST(ServiceTest, TaskThatKeepsFailingEndsTheJobWithItsError) {
  ServiceHarness h("failures");
  h.StartCoordinator({"--lease-timeout-ms", "1500", "--heartbeat-interval-ms", "200",
                      "--retry-backoff-ms", "100"});
  // Every attempt dies with its worker; after max_attempts the job fails and says why.
  v1::Job job = h.Submit(Recipe(/*max_attempts=*/2));
  for (int attempt = 1; attempt <= 2; ++attempt) {
    const int w = h.StartWorker("doomed" + std::to_string(attempt), {"--step-delay-ms", "5000"});
    h.WaitFor(job.id(), [&](const v1::Job& j) {
      return j.tasks(0).state() == v1::TASK_RUNNING && j.tasks(0).attempts() == attempt;
    });
    h.KillWorker(w);
  }
  v1::Job failed = h.WaitFor(job.id(), Finished, 30000);
  EXPECT_EQ(failed.state(), v1::FAILED);
  EXPECT_NE(failed.error().find("after 2 attempt(s)"), std::string::npos) << failed.error();
  EXPECT_NE(failed.error().find("lease expired"), std::string::npos) << failed.error();
  auto [code, out] =
      RunCommand({Env("SQUEEZECTL_BIN"), "get", job.id(), "--coordinator", h.address()});
  EXPECT_EQ(code, 0);
  EXPECT_NE(out.find("lease expired"), std::string::npos) << out;

  // A gate that cannot pass fails at once, without retries, and says by how much.
  h.StartWorker("ok");
  v1::Job gated = h.Submit(Recipe(3, "1.0", 2));
  v1::Job done = h.WaitFor(gated.id(), Finished);
  EXPECT_EQ(done.state(), v1::FAILED);
  EXPECT_NE(done.error().find("gate: retention"), std::string::npos) << done.error();
  EXPECT_EQ(done.tasks(2).attempts(), 1);
}

// workers: 2 on a quantize stage: a gang of two worker processes over Gloo splits the calibration
// windows and the linears; rank 0 writes a packed checkpoint that evaluates as well as one rank's.
TEST(ServiceTest, GptqGangOfTwoWorkersQuantizesTogether) {
  ServiceHarness h("gptq_gang");
  h.StartCoordinator();
  for (const char* node : {"a", "b"}) {
    h.StartWorker(node,
                  {"--threads", "1", "--rendezvous", "127.0.0.1:" + std::to_string(FreePort())});
  }
  const std::string src = SourceDir();
  const std::string recipe =
      "model: " + src + "/deploy/models/fortunes-teacher\n" + "data: {calibration: " + src +
      "/deploy/data/fortunes/calibration.jsonl, evaluation: [" + src +
      "/deploy/data/fortunes/evaluation.jsonl]}\n" +
      "stages:\n"
      "  - quantize: {method: gptq, bits: 4, group_size: 128, calibration_samples: 16, "
      "workers: 2}\n"
      "  - evaluate: {max_examples: 32, window: 128, stride: 64}\n";
  v1::Job done = h.WaitFor(h.Submit(recipe).id(), Finished);
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
  nlohmann::json report = h.Report(done);
  EXPECT_EQ(report["stages"][0]["result"]["format"], "gptq");
  EXPECT_EQ(report["stages"][0]["result"]["linears"].size(), 28u);
  EXPECT_GT(report["stages"][0]["result"]["linears"][27]["loss"].get<double>(), 0.0)
      << "rank 0 reports the losses of linears solved on rank 1 too";
  EXPECT_LT(report["stages"][1]["result"]["perplexity"].get<double>(), 5.0);
}

TEST(ServiceTest, GptqJobWritesAPackedCheckpointThatEvaluatesWell) {
  ServiceHarness h("gptq");
  h.StartCoordinator();
  h.StartWorker("w");
  const std::string src = SourceDir();
  v1::Job job = h.Submit(
      "model: " + src + "/deploy/models/fortunes-teacher\n" + "data: {calibration: " + src +
      "/deploy/data/fortunes/calibration.jsonl, evaluation: [" + src +
      "/deploy/data/fortunes/evaluation.jsonl]}\n" +
      "stages:\n"
      "  - evaluate: {max_examples: 32, window: 128, stride: 64}\n"
      "  - quantize: {method: gptq, bits: 4, group_size: 128, act_order: true, "
      "calibration_samples: 16}\n"
      "  - evaluate: {max_examples: 32, window: 128, stride: 64, gate: {min_retention: 0.9}}\n");
  v1::Job done = h.WaitFor(job.id(), Finished);
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
  nlohmann::json report = h.Report(done);
  EXPECT_EQ(report["stages"][1]["result"]["format"], "gptq");
  EXPECT_EQ(report["stages"][1]["result"]["linears"].size(), 28u);  // 7 per layer, 4 layers
  // The evaluation ran on the packed checkpoint: far smaller on disk, nearly the same perplexity.
  EXPECT_LT(report["stages"][2]["result"]["size_bytes"].get<double>(),
            0.5 * report["stages"][0]["result"]["size_bytes"].get<double>());
  EXPECT_GT(report["stages"][2]["result"]["retention"].get<double>(), 0.95);
  const std::string model = ArtifactDir(report["model"].get<std::string>(), h.dir() + "/model");
  EXPECT_TRUE(fs::exists(model + "/model.safetensors.index.json"));  // one shard per layer
  std::ifstream config(model + "/config.json");
  auto qc = nlohmann::json::parse(config)["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "gptq");
  EXPECT_EQ(qc["desc_act"], true);
}

TEST(ServiceTest, CalibrationIsComputedOnceAndReusedByTheNextJob) {
  ServiceHarness h("calibrate");
  h.StartCoordinator();
  h.StartWorker("w");
  const std::string src = SourceDir();
  const std::string recipe = "model: " + src + "/deploy/models/fortunes-teacher\n" +
                             "data: {calibration: " + src +
                             "/deploy/data/fortunes/calibration.jsonl, evaluation: [" + src +
                             "/deploy/data/fortunes/evaluation.jsonl]}\n" +
                             "stages:\n"
                             "  - calibrate: {samples: 16, seq_len: 128}\n"
                             "  - quantize: {method: gptq, bits: 4, group_size: 128}\n"
                             "  - evaluate: {max_examples: 16, window: 128, stride: 64}\n";
  v1::Job first = h.WaitFor(h.Submit(recipe).id(), Finished);
  ASSERT_EQ(first.state(), v1::SUCCEEDED) << first.error();
  v1::Job second = h.WaitFor(h.Submit(recipe).id(), Finished);
  ASSERT_EQ(second.state(), v1::SUCCEEDED) << second.error();
  nlohmann::json a = h.Report(first), b = h.Report(second);
  EXPECT_EQ(a["stages"][0]["result"]["reused"], false);
  EXPECT_EQ(b["stages"][0]["result"]["reused"], true);
  EXPECT_EQ(a["stages"][0]["result"]["key"], b["stages"][0]["result"]["key"]);
  EXPECT_EQ(a["stages"][2]["result"]["perplexity"], b["stages"][2]["result"]["perplexity"])
      << "same calibration, same quantized model";

  // The artifact holds the windows and, per layer, H (symmetric), input norms and absmax.
  grpc::ClientContext context;
  v1::ListArtifactsRequest request;
  request.set_job_id(first.id());
  v1::ListArtifactsResponse response;
  ASSERT_TRUE(h.jobs().ListArtifacts(&context, request, &response).ok());
  std::string dir;
  for (const v1::Artifact& art : response.artifacts()) {
    if (art.name() == "calibration") dir = ArtifactDir(art.uri(), h.dir() + "/calibration");
  }
  ASSERT_FALSE(dir.empty());
  EXPECT_TRUE(fs::exists(dir + "/windows.safetensors"));
  EXPECT_TRUE(fs::exists(dir + "/layer-3.safetensors"));
  EXPECT_GT(fs::file_size(dir + "/layer-3.safetensors"), 4u * 256 * 256) << "holds Hessians";
}

// A whole job with its store in S3 (moto_server): outputs, calibration-free RTN model and the
// report go to the bucket, artifacts download from it, and a tampered blob is caught on read.
TEST(ServiceTest, JobRunsWithItsStoreInS3) {
  ServiceHarness h("s3");
  const int moto_port = FreePort();
  Process moto({"/bin/sh", "-c", "exec moto_server -H 127.0.0.1 -p " + std::to_string(moto_port)},
               h.dir() + "/moto.log");
  const std::string endpoint = "http://127.0.0.1:" + std::to_string(moto_port);
  ::setenv("SQUEEZE_S3_ENDPOINT", endpoint.c_str(), 1);
  ::setenv("AWS_ACCESS_KEY_ID", "testing", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "testing", 1);
  S3Options o;
  o.endpoint = endpoint;
  o.credentials = {"testing", "testing", ""};
  S3Client s3(o);
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    up = s3.CreateBucket("squeeze-it").ok();
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up) << "moto_server did not start";

  h.StartCoordinator({"--store", "s3://squeeze-it/store"});
  h.StartWorker("w");
  // The model itself comes from S3 too: uploaded as an artifact, named by URI in the recipe, and
  // checked at submit from its config and safetensors headers (read by range).
  auto [put_code, put_out] = RunCommand({Env("SQUEEZECTL_BIN"), "store-put",
                                         SourceDir() + "/deploy/models/fortunes-teacher",
                                         "s3://squeeze-it/models/teacher"});
  ASSERT_EQ(put_code, 0) << put_out;
  std::string recipe = Recipe();
  recipe.replace(recipe.find(SourceDir() + "/deploy/models/fortunes-teacher"),
                 (SourceDir() + "/deploy/models/fortunes-teacher").size(),
                 "s3://squeeze-it/models/teacher");
  const std::string bad_model = "model: s3://squeeze-it/models/none\nstages:\n  - quantize: {}\n";
  auto [bad_code, bad_out] =
      RunCommand({Env("SQUEEZECTL_BIN"), "submit", h.WriteRecipe("bad.yaml", bad_model),
                  "--coordinator", h.address()});
  EXPECT_EQ(bad_code, 2) << bad_out;
  EXPECT_NE(bad_out.find("model: "), std::string::npos) << bad_out;
  v1::Job done = h.WaitFor(h.Submit(recipe).id(), Finished);
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();

  grpc::ClientContext context;
  v1::ListArtifactsRequest request;
  request.set_job_id(done.id());
  v1::ListArtifactsResponse response;
  ASSERT_TRUE(h.jobs().ListArtifacts(&context, request, &response).ok());
  std::string model_uri, report_uri;
  for (const v1::Artifact& a : response.artifacts()) {
    if (a.name() == "model") model_uri = a.uri();
    if (a.name() == "report") report_uri = a.uri();
  }
  ASSERT_EQ(model_uri.rfind("s3://squeeze-it/store/jobs/", 0), 0u) << model_uri;
  auto report = s3.GetObject("squeeze-it", report_uri.substr(strlen("s3://squeeze-it/")));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_GT(nlohmann::json::parse(*report)["stages"][2]["result"]["retention"].get<double>(), 0.5);
  auto blobs = s3.List("squeeze-it", "store/blobs/sha256/");
  ASSERT_TRUE(blobs.ok());
  EXPECT_GE(blobs->size(), 3u) << "model, config and evaluation files stored by digest";

  // The quantize stage's layer checkpoints kept their blobs to themselves and took them along
  // when they were deleted: nothing of them is left, and garbage collection finds nothing to
  // delete while keeping every referenced blob (the download below still works).
  auto checkpoint_objects =
      s3.List("squeeze-it", "store/jobs/" + done.id() + "/1-quantize.checkpoint");
  ASSERT_TRUE(checkpoint_objects.ok());
  EXPECT_TRUE(checkpoint_objects->empty()) << checkpoint_objects->front().key;
  auto [gc_code, gc_out] = RunCommand({Env("SQUEEZECTL_BIN"), "store-gc", "--store",
                                       "s3://squeeze-it/store", "--grace-hours", "0", "--json"});
  ASSERT_EQ(gc_code, 0) << gc_out;
  const auto gc = nlohmann::json::parse(gc_out);
  EXPECT_EQ(gc["blobs_deleted"].get<int>(), 0) << gc_out;
  EXPECT_EQ(gc["blobs_deleted"].get<size_t>() + gc["blobs_kept"].get<size_t>(), blobs->size())
      << gc_out;

  auto [code, out] = RunCommand({Env("SQUEEZECTL_BIN"), "artifacts", done.id(), "--coordinator",
                                 h.address(), "--download", h.dir() + "/download"});
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(fs::exists(h.dir() + "/download/1-model/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(h.dir() + "/download/1-model/model-00001-of-00005.safetensors"));
  EXPECT_TRUE(fs::exists(h.dir() + "/download/report.json"));

  // Tamper with every blob: reading the model must fail, naming the blob, and write nothing bad.
  for (const S3ObjectInfo& b : *blobs)
    ASSERT_TRUE(s3.PutObject("squeeze-it", b.key, "tampered").ok());
  std::tie(code, out) = RunCommand({Env("SQUEEZECTL_BIN"), "artifacts", done.id(), "--coordinator",
                                    h.address(), "--download", h.dir() + "/download2"});
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("does not match its digest"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(h.dir() + "/download2/1-model/model-00001-of-00005.safetensors"));
  ::unsetenv("SQUEEZE_S3_ENDPOINT");
}

// A whole job with its store on s3rver, an S3 implementation independent of moto (and stricter
// about signatures): the stages read and write through it, and the model downloads through the
// API, verified.
TEST(ServiceTest, JobRunsWithItsStoreOnS3rver) {
  ::setenv("SQUEEZE_SOURCE_DIR", SourceDir().c_str(), 1);
  ASSERT_TRUE(S3rverServer::Installed()) << "run scripts/install-test-peers.sh";
  S3rverServer s3rver;
  ASSERT_TRUE(s3rver.Ready("squeeze-s3rver")) << "s3rver did not start";
  ServiceHarness h("s3rver");
  ::setenv("SQUEEZE_S3_ENDPOINT", s3rver.endpoint().c_str(), 1);
  ::setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
  h.StartCoordinator({"--store", "s3://squeeze-s3rver/store"});
  h.StartWorker("w");
  v1::Job done = h.WaitFor(h.Submit(Recipe()).id(), Finished);
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
  EXPECT_GT(done.tasks(2).result().evaluate().retention(), 0.5);

  grpc::ClientContext context;
  v1::ListArtifactsRequest request;
  request.set_job_id(done.id());
  v1::ListArtifactsResponse response;
  ASSERT_TRUE(h.jobs().ListArtifacts(&context, request, &response).ok());
  int64_t model_bytes = 0;
  for (const v1::Artifact& a : response.artifacts()) {
    EXPECT_EQ(a.uri().rfind("s3://squeeze-s3rver/store/", 0), 0u) << a.uri();
    if (a.name() == "model") model_bytes = a.size_bytes();
  }
  EXPECT_GT(model_bytes, 1 << 20);
  auto [code, out] = RunCommand({Env("SQUEEZECTL_BIN"), "artifacts", done.id(), "--coordinator",
                                 h.address(), "--download", h.dir() + "/download"});
  ASSERT_EQ(code, 0) << out;
  int64_t downloaded = 0;
  for (const auto& e : fs::directory_iterator(h.dir() + "/download/1-model"))
    downloaded += static_cast<int64_t>(e.file_size());
  EXPECT_EQ(downloaded, model_bytes);
  S3Client s3(s3rver.Options());
  auto blobs = s3.List("squeeze-s3rver", "store/blobs/sha256/");
  ASSERT_TRUE(blobs.ok()) << blobs.status();
  EXPECT_GE(blobs->size(), 3u);
  ::unsetenv("SQUEEZE_S3_ENDPOINT");
}

TEST(ServiceTest, BadInputIsRejectedAtSubmitWithTheField) {
  ServiceHarness h("bad_input");
  h.StartCoordinator();
  const std::string ctl = Env("SQUEEZECTL_BIN");
  struct Case {
    std::string yaml, expect;
  };
  const std::string src = SourceDir();
  const Case cases[] = {
      {"model: " + src + "/deploy/models/fortunes-teacher\nstages:\n  - quantize: {bits: 7}\n",
       "stages[0].quantize.bits: must be one of 2, 3, 4, 8"},
      {"model: /nonexistent/model\nstages:\n  - quantize: {}\n",
       "model: \"/nonexistent/model\" is not a directory"},
      {"model: " + src + "/deploy\nstages:\n  - quantize: {}\n", "model: "},
      {"model: " + src +
           "/deploy/models/fortunes-teacher\ndata: {evaluation: [/no/such.jsonl]}\n"
           "stages:\n  - evaluate: {}\n",
       "data.evaluation[0]"},
      {"model: x\nstages: {oops\n", "not valid YAML"},
  };
  int i = 0;
  for (const Case& c : cases) {
    const std::string recipe = h.WriteRecipe("bad" + std::to_string(i++) + ".yaml", c.yaml);
    auto [code, out] = RunCommand({ctl, "submit", recipe, "--coordinator", h.address()});
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find(c.expect), std::string::npos) << "got: " << out << "want: " << c.expect;
  }
  auto [code, out] = RunCommand({ctl, "get", "job-doesnotexist", "--coordinator", h.address()});
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("not found"), std::string::npos) << out;
  grpc::ClientContext context;
  v1::ListJobsRequest request;
  v1::ListJobsResponse response;
  ASSERT_TRUE(h.jobs().ListJobs(&context, request, &response).ok());
  EXPECT_EQ(response.jobs_size(), 0) << "no job was created from bad input";

  // The same errors through the API carry a google.rpc.BadRequest naming the field.
  grpc::ClientContext submit_context;
  v1::SubmitJobRequest submit;
  submit.set_recipe_yaml(cases[0].yaml);
  v1::SubmitJobResponse submitted;
  const grpc::Status bad = h.jobs().SubmitJob(&submit_context, submit, &submitted);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  auto violations = FieldViolations(bad);
  ASSERT_EQ(violations.size(), 1u) << bad.error_message();
  EXPECT_EQ(violations[0].first, "recipe_yaml.stages[0].quantize.bits");
  grpc::ClientContext list_context;
  request.set_page_size(-1);
  const grpc::Status bad_page = h.jobs().ListJobs(&list_context, request, &response);
  violations = FieldViolations(bad_page);
  ASSERT_EQ(violations.size(), 1u) << bad_page.error_message();
  EXPECT_EQ(violations[0].first, "page_size");
}

}  // namespace
}  // namespace squeeze::testing
