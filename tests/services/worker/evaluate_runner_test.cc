// The evaluate runner on a real file store: a typed EvaluateResult with retention against the
// baseline in the lease, greedy samples of the recipe's prompts (the generator's own output), and
// a failed gate that stops the stage.
#include <filesystem>
#include <fstream>

#include "common/base/file_util.h"
#include "common/model/generator.h"
#include "common/model/llama_model.h"
#include "common/store/artifact_store.h"
#include "gtest/gtest.h"
#include "services/worker/runners/runners.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze::worker {
namespace {

namespace fs = std::filesystem;

class EvaluateRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("evaluate_runner_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    RemoveTree(dir_).IgnoreError();
    const LlamaConfig c = TinyLlamaConfig(/*layers=*/2, /*hidden=*/64);
    ASSERT_TRUE(LlamaModel::RandomInit(c, 9).Save((dir_ / "model").string(), at::kFloat).ok());
    std::ofstream data(dir_ / "eval.jsonl");
    for (int i = 0; i < 8; ++i)
      data << "{\"text\": \"evaluation line " << i << " with a few words\", \"category\": \""
           << (i % 2 ? "odd" : "even") << "\"}\n";
    auto store = OpenArtifactStore("file://" + (dir_ / "store").string());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }

  v1::TaskLease Lease(const v1::EvaluateStage& stage) const {
    v1::TaskLease lease;
    lease.set_job_id("job-1");
    lease.set_task_id("job-1-t2");
    lease.set_attempt(1);
    lease.set_kind("evaluate");
    *lease.mutable_stage()->mutable_evaluate() = stage;
    lease.mutable_data()->set_store_root("file://" + (dir_ / "store").string());
    lease.mutable_data()->add_evaluation((dir_ / "eval.jsonl").string());
    (*lease.mutable_inputs())["model"] = (dir_ / "model").string();
    lease.set_output_uri("file://" + (dir_ / "store/jobs/job-1/2-evaluate").string());
    lease.set_world_size(1);
    return lease;
  }

  absl::StatusOr<TaskOutput> Run(const v1::TaskLease& lease) {
    fs::create_directories(dir_ / "scratch");
    TaskContext ctx(lease, store_.get(), (dir_ / "scratch").string(), at::kCPU, 0);
    return EvaluateRunner().Run(ctx);
  }

  static v1::EvaluateStage Stage() {
    v1::EvaluateStage e;
    e.set_window(16);
    e.set_stride(8);
    e.set_batch_size(4);
    e.set_dtype(v1::EvaluateStage::FLOAT32);
    return e;
  }

  fs::path dir_;
  std::unique_ptr<ArtifactStore> store_;
};

TEST_F(EvaluateRunnerTest, ReportsRetentionAgainstTheBaselineAndGreedySamples) {
  v1::EvaluateStage stage = Stage();
  stage.mutable_samples()->add_prompts("evaluation line");
  stage.mutable_samples()->add_prompts("xyz");
  stage.mutable_samples()->set_max_new_tokens(6);
  v1::TaskLease lease = Lease(stage);
  lease.mutable_baseline()->set_perplexity(100.0);
  lease.mutable_baseline()->set_size_bytes(1 << 30);
  auto out = Run(lease);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_TRUE(out->result.has_evaluate());
  const v1::EvaluateResult& r = out->result.evaluate();
  EXPECT_GT(r.perplexity(), 1.0);
  EXPECT_GT(r.tokens(), 0);
  EXPECT_EQ(r.categories().size(), 2u);
  ASSERT_TRUE(r.has_retention());
  EXPECT_DOUBLE_EQ(r.retention(), 100.0 / r.perplexity());
  EXPECT_DOUBLE_EQ(r.baseline_perplexity(), 100.0);
  EXPECT_GT(r.compression_ratio(), 1.0);
  EXPECT_FALSE(r.has_gate());

  // The samples are the generator's greedy continuations of the prompts, in order.
  auto model = LlamaModel::Load((dir_ / "model").string());
  ASSERT_TRUE(model.ok());
  ByteTokenizer tokenizer;
  ASSERT_EQ(r.samples_size(), 2);
  for (int i = 0; i < 2; ++i) {
    const std::string& prompt = stage.samples().prompts(i);
    EXPECT_EQ(r.samples(i).prompt(), prompt);
    std::vector<int32_t> ids = {tokenizer.bos_id()};
    for (int32_t id : tokenizer.Encode(prompt)) ids.push_back(id);
    GenerationOptions options;
    options.max_new_tokens = 6;
    options.stop_ids = {tokenizer.eos_id()};
    auto expected = Generate(*model, ids, options);
    ASSERT_TRUE(expected.ok());
    if (expected->stop_reason == "stop token") expected->tokens.pop_back();
    EXPECT_EQ(r.samples(i).completion(), tokenizer.Decode(expected->tokens)) << "prompt " << i;
  }
  // evaluation.json in the store is the same result.
  auto json = store_->ReadArtifactRange(lease.output_uri(), "evaluation.json", 0, -1, nullptr);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_NE(json->find("\"samples\""), std::string::npos);
}

TEST_F(EvaluateRunnerTest, AFailedGateStopsTheStageAndSaysWhy) {
  v1::EvaluateStage stage = Stage();
  stage.mutable_gate()->set_min_retention(0.99);
  v1::TaskLease lease = Lease(stage);
  lease.mutable_baseline()->set_perplexity(1.01);  // far better than a random model
  auto out = Run(lease);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(out.status().message().find("is below min_retention 0.99"), std::string::npos)
      << out.status();
}

}  // namespace
}  // namespace squeeze::worker
