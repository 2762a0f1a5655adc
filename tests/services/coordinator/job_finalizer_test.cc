#include "services/coordinator/job_finalizer.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/base/file_util.h"
#include "gtest/gtest.h"

namespace squeeze::coordinator {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

v1::JobRecord TwoStageJob() {
  v1::JobRecord r;
  r.mutable_job()->set_id("job-a");
  r.mutable_job()->set_tenant("team");
  r.mutable_job()->set_created_unix_ms(1234);
  v1::TaskRecord* eval = r.add_tasks();
  eval->mutable_task()->set_index(0);
  eval->mutable_task()->set_kind("evaluate");
  eval->mutable_task()->set_attempts(1);
  eval->mutable_task()->mutable_result()->mutable_evaluate()->set_perplexity(9.5);
  (*eval->mutable_inputs())["model"] = "file:///models/teacher";
  v1::TaskRecord* quant = r.add_tasks();
  quant->mutable_task()->set_index(1);
  quant->mutable_task()->set_kind("quantize");
  quant->mutable_task()->set_attempts(2);
  quant->set_result_json(R"({"bits": 4})");  // a record from before typed results
  (*quant->mutable_outputs())["model"] = "file:///store/jobs/job-a/stage-1";
  quant->set_checkpoint_uri("file:///store/jobs/job-a/stage-1.ckpt");
  return r;
}

class JobFinalizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("job_finalizer_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    RemoveTree(dir_).IgnoreError();
    fs::create_directories(dir_);
    artifacts_ = *OpenArtifactStore("file://");
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }

  fs::path dir_;
  std::unique_ptr<ArtifactStore> artifacts_;
};

TEST_F(JobFinalizerTest, ReportShowsEveryStageAndTheLastModel) {
  const json report = json::parse(BuildJobReport(TwoStageJob()));
  EXPECT_EQ(report["job"], "job-a");
  EXPECT_EQ(report["tenant"], "team");
  EXPECT_EQ(report["created_unix_ms"], 1234);
  EXPECT_EQ(report["model"], "file:///store/jobs/job-a/stage-1");
  ASSERT_EQ(report["stages"].size(), 2u);
  EXPECT_EQ(report["stages"][0]["kind"], "evaluate");
  EXPECT_DOUBLE_EQ(report["stages"][0]["result"]["perplexity"].get<double>(), 9.5);
  EXPECT_EQ(report["stages"][1]["attempts"], 2);
  EXPECT_EQ(report["stages"][1]["result"]["bits"], 4);
}

TEST_F(JobFinalizerTest, AJobWithoutOutputsReportsItsInputModel) {
  v1::JobRecord r = TwoStageJob();
  r.mutable_tasks()->RemoveLast();
  EXPECT_EQ(json::parse(BuildJobReport(r))["model"], "file:///models/teacher");
}

TEST_F(JobFinalizerTest, WritesTheReportAndItsPageIntoTheJobFolder) {
  const std::string root = "file://" + (dir_ / "store").string();
  JobFinalizer finalizer(artifacts_.get(), root);
  const std::string report = BuildJobReport(TwoStageJob());
  auto artifacts = finalizer.WriteReport("job-a", report);
  ASSERT_TRUE(artifacts.ok()) << artifacts.status();
  ASSERT_EQ(artifacts->size(), 2u);
  EXPECT_EQ((*artifacts)[0].name(), "report");
  EXPECT_EQ((*artifacts)[0].uri(), root + "/jobs/job-a/report.json");
  EXPECT_EQ((*artifacts)[0].size_bytes(), static_cast<int64_t>(report.size()));
  EXPECT_EQ((*artifacts)[0].task_index(), -1);
  EXPECT_EQ((*artifacts)[1].name(), "report_html");
  auto stored = ReadFileToString((dir_ / "store/jobs/job-a/report.json").string());
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(*stored, report);
  auto page = ReadFileToString((dir_ / "store/jobs/job-a/report.html").string());
  ASSERT_TRUE(page.ok());
  EXPECT_NE(page->find("job-a"), std::string::npos);
}

TEST_F(JobFinalizerTest, AReportThatCannotBeWrittenIsAnError) {
  // The store root is a file, so nothing can be created under it.
  std::ofstream((dir_ / "blocker").string()) << "x";
  JobFinalizer finalizer(artifacts_.get(), "file://" + (dir_ / "blocker").string());
  EXPECT_FALSE(finalizer.WriteReport("job-a", BuildJobReport(TwoStageJob())).ok());
}

TEST_F(JobFinalizerTest, DeletingCheckpointsIsIdempotent) {
  const fs::path ckpt = dir_ / "store/jobs/job-a/stage-1.ckpt";
  fs::create_directories(ckpt);  // a checkpoint is a directory artifact
  std::ofstream((ckpt / "layer-0.safetensors").string()) << "state";
  ASSERT_TRUE(fs::exists(ckpt));
  v1::JobRecord r = TwoStageJob();
  r.mutable_tasks(1)->set_checkpoint_uri("file://" + ckpt.string());
  const std::vector<std::string> uris = CheckpointUris(r);
  ASSERT_EQ(uris.size(), 1u);  // the evaluate task has none
  JobFinalizer finalizer(artifacts_.get(), "file://" + (dir_ / "store").string());
  const absl::Status deleted = finalizer.DeleteCheckpoints(uris);
  ASSERT_TRUE(deleted.ok()) << deleted;
  EXPECT_FALSE(fs::exists(ckpt));
  EXPECT_TRUE(finalizer.DeleteCheckpoints(uris).ok());  // already gone
}

}  // namespace
}  // namespace squeeze::coordinator
