// Data through the store: `squeezectl submit --store` uploads the recipe's local data files into
// the job's store (moto_server), and a coordinator and a worker that run in directories of their
// own, after the client's files are gone, run a GPTQ job from the uploaded copies.
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "common/store/s3_client.h"
#include "gtest/gtest.h"
#include "tests/common/store/moto_server.h"
#include "tests/integration/service_harness.h"

namespace squeeze::testing {
namespace {

namespace fs = std::filesystem;

TEST(DataUploadTest, WorkersWithoutTheClientsFilesRunAJobFromUploadedData) {
  ServiceHarness h("data-upload");
  MotoServer moto;
  ASSERT_TRUE(moto.Ready("squeeze-data")) << "moto_server did not start";
  // The coordinator, the worker and squeezectl inherit the endpoint and credentials.
  ::setenv("SQUEEZE_S3_ENDPOINT", moto.endpoint().c_str(), 1);
  ::setenv("AWS_ACCESS_KEY_ID", "testing", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "testing", 1);
  S3Client s3(moto.Options());
  const std::string store = "s3://squeeze-data/store";

  // The model is an artifact in the bucket; the data are the client's own files, named relative
  // to its recipe.
  auto [put_code, put_out] = RunCommand({Env("SQUEEZECTL_BIN"), "store-put",
                                         SourceDir() + "/deploy/models/fortunes-teacher",
                                         "s3://squeeze-data/models/teacher"});
  ASSERT_EQ(put_code, 0) << put_out;
  const fs::path client = fs::path(h.dir()) / "client";
  fs::create_directories(client);
  for (const char* f : {"calibration.jsonl", "evaluation.jsonl"})
    fs::copy_file(fs::path(SourceDir()) / "deploy/data/fortunes" / f, client / f);
  // The model too is the client's own directory: submit uploads it.
  fs::copy(fs::path(SourceDir()) / "deploy/models/fortunes-teacher", client / "teacher");
  {
    std::ofstream(client / "recipe.yaml")
        << "model: teacher\n"
           "data: {calibration: calibration.jsonl, evaluation: [evaluation.jsonl]}\n"
           "stages:\n"
           "  - evaluate: {max_examples: 16, window: 128, stride: 64}\n"
           "  - quantize: {method: gptq, bits: 4, group_size: 128, calibration_samples: 8,\n"
           "               calibration_seq_len: 64}\n"
           "  - evaluate: {max_examples: 16, window: 128, stride: 64, gate: {min_retention: "
           "0.5}}\n";
  }

  // Coordinator and worker each in a directory of their own, neither the client's.
  h.set_working_dir(h.dir() + "/coordinator-cwd");
  h.StartCoordinator({"--store", store});
  h.set_working_dir(h.dir() + "/worker-cwd");
  h.StartWorker("w");
  h.set_working_dir("");

  // A missing data file is named before anything is submitted.
  std::ofstream(client / "bad.yaml") << "model: s3://squeeze-data/models/teacher\n"
                                        "data: {calibration: nowhere.jsonl}\n"
                                        "stages:\n  - quantize: {method: gptq}\n";
  auto [bad_code, bad_out] =
      RunCommand({Env("SQUEEZECTL_BIN"), "submit", (client / "bad.yaml").string(), "--coordinator",
                  h.address(), "--store", store});
  EXPECT_NE(bad_code, 0) << bad_out;
  EXPECT_NE(bad_out.find("data.calibration"), std::string::npos) << bad_out;

  auto [code, out] = RunCommand({Env("SQUEEZECTL_BIN"), "submit", (client / "recipe.yaml").string(),
                                 "--coordinator", h.address(), "--store", store});
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("uploaded data.calibration to " + store + "/data/sha256-"), std::string::npos)
      << out;
  EXPECT_NE(out.find("uploaded model to " + store + "/models/teacher-"), std::string::npos) << out;
  // The job id is the last line (the upload notes go to stderr before it).
  std::string job_id = out;
  while (!job_id.empty() && (job_id.back() == '\n' || job_id.back() == ' ')) job_id.pop_back();
  job_id = job_id.substr(job_id.rfind('\n') + 1);
  ASSERT_FALSE(job_id.empty()) << out;

  // The client's files go away before any task runs a step on them.
  fs::remove_all(client);
  v1::Job done = h.WaitFor(job_id, Finished, 240000);
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
  // The job names the uploaded copies, pinned by their digests.
  EXPECT_TRUE(absl::StrContains(done.recipe_yaml(), store + "/data/sha256-")) << done.recipe_yaml();
  EXPECT_TRUE(absl::StrContains(done.recipe_yaml(), store + "/models/teacher-"))
      << done.recipe_yaml();
  EXPECT_FALSE(absl::StrContains(done.recipe_yaml(), client.string())) << done.recipe_yaml();
  auto uploaded = s3.List("squeeze-data", "store/data/");
  ASSERT_TRUE(uploaded.ok());
  EXPECT_GE(uploaded->size(), 2u) << "a manifest per data file";
}

}  // namespace
}  // namespace squeeze::testing
