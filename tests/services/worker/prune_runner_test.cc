// The prune runner on a real file store, driven by a typed lease: a 2:4 magnitude prune whose
// output artifact has exactly two zeros in every group of four weights, and targets it does not
// know refused with their field.
#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/base/file_util.h"
#include "common/compress/prune.h"
#include "common/compress/quantized_checkpoint.h"
#include "common/model/llama_model.h"
#include "common/store/artifact_store.h"
#include "gtest/gtest.h"
#include "services/worker/runners/runners.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze::worker {
namespace {

namespace fs = std::filesystem;

class PruneRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("prune_runner_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    RemoveTree(dir_).IgnoreError();
    ASSERT_TRUE(LlamaModel::RandomInit(TinyLlamaConfig(2, 64), 9)
                    .Save((dir_ / "model").string(), at::kFloat)
                    .ok());
    auto store = OpenArtifactStore(root());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }

  std::string root() const { return "file://" + (dir_ / "store").string(); }
  std::string output() const { return root() + "/jobs/j/0-prune"; }

  v1::TaskLease Lease(v1::PruneTarget target, const std::string& out = "",
                      v1::PruneStage::Format format = v1::PruneStage::DENSE) {
    v1::TaskLease lease;
    lease.set_job_id("j");
    lease.set_task_id("j-t0");
    lease.set_kind("prune");
    *lease.mutable_stage()->mutable_prune()->mutable_target() = target;
    lease.mutable_stage()->mutable_prune()->set_format(format);
    v1::CalibrationSample& sample = *lease.mutable_stage()->mutable_prune()->mutable_calibration();
    sample.set_samples(8);
    sample.set_seq_len(32);
    lease.mutable_data()->set_store_root(root());
    // Calibration text in the byte tokenizer's reach (Wanda's norms, SparseGPT's Hessians).
    {
      std::ofstream data(dir_ / "calibration.jsonl");
      for (int i = 0; i < 40; ++i)
        data << "{\"text\": \"calibration line " << i << " with some words to fill a window\"}\n";
    }
    lease.mutable_data()->set_calibration((dir_ / "calibration.jsonl").string());
    (*lease.mutable_inputs())["model"] = (dir_ / "model").string();
    lease.set_output_uri(out.empty() ? output() : out);
    lease.set_checkpoint_uri(lease.output_uri() + ".checkpoint");
    lease.set_world_size(1);
    return lease;
  }

  absl::StatusOr<TaskOutput> Run(v1::PruneTarget target, const std::string& out = "",
                                 v1::PruneStage::Format format = v1::PruneStage::DENSE) {
    fs::create_directories(dir_ / "scratch");
    TaskContext ctx(Lease(target, out, format), store_.get(), (dir_ / "scratch").string(), at::kCPU,
                    0);
    return PruneRunner().Run(ctx);
  }

  fs::path dir_;
  std::unique_ptr<ArtifactStore> store_;
};

TEST_F(PruneRunnerTest, TwoFourMagnitudeLeavesTwoZerosInEveryGroupOfFour) {
  v1::PruneTarget target;
  target.set_method(v1::PruneTarget::MAGNITUDE);
  target.set_pattern(v1::PruneTarget::TWO_FOUR);
  target.set_sparsity(0.5);
  auto out = Run(target);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_TRUE(out->result.has_prune());
  EXPECT_EQ(out->result.prune().method(), "magnitude");
  EXPECT_EQ(out->result.prune().pattern(), "2:4");
  EXPECT_NEAR(out->result.prune().sparsity(), 0.5, 1e-9);
  auto dir = store_->LocalDirectory(output(), (dir_ / "read").string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto pruned = LlamaModel::Load(*dir);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  for (int64_t l = 0; l < pruned->num_layers(); ++l) {
    for (auto& [name, linear] : pruned->layer(l).Linears()) {
      const at::Tensor zeros = (linear->weight == 0).reshape({linear->weight.size(0), -1, 4});
      EXPECT_TRUE(zeros.sum(-1).eq(2).all().item<bool>()) << "layer " << l << " " << name;
    }
  }
}

TEST_F(PruneRunnerTest, UnknownMethodOrPatternIsRefused) {
  v1::PruneTarget target;
  target.set_method(static_cast<v1::PruneTarget::Method>(9));
  target.set_pattern(v1::PruneTarget::UNSTRUCTURED);
  target.set_sparsity(0.5);
  auto method = Run(target);
  ASSERT_FALSE(method.ok());
  EXPECT_NE(method.status().message().find("prune method 9"), std::string::npos) << method.status();
  target.set_method(v1::PruneTarget::MAGNITUDE);
  target.set_pattern(v1::PruneTarget::PATTERN_UNSPECIFIED);
  auto pattern = Run(target);
  ASSERT_FALSE(pattern.ok());
  EXPECT_NE(pattern.status().message().find("prune pattern 0"), std::string::npos)
      << pattern.status();
  EXPECT_FALSE(*store_->Exists(output()));
}

// SparseGPT as a prune stage: the n:m pattern exactly, and at 50% unstructured a model whose
// outputs on the calibration text stay closer to the original's than magnitude pruning's do (the
// kept weights were updated to make up for the pruned ones).
TEST_F(PruneRunnerTest, SparseGptPrunesToItsPatternAndBeatsMagnitude) {
  v1::PruneTarget target;
  target.set_method(v1::PruneTarget::SPARSEGPT);
  target.set_pattern(v1::PruneTarget::FOUR_EIGHT);
  target.set_sparsity(0.5);
  auto out = Run(target);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->result.prune().method(), "sparsegpt");
  EXPECT_EQ(out->result.prune().pattern(), "4:8");
  EXPECT_NEAR(out->result.prune().sparsity(), 0.5, 1e-9);
  EXPECT_EQ(out->result.prune().pruned_matrices(), 14);
  auto dir = store_->LocalDirectory(output(), (dir_ / "read").string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto pruned = LlamaModel::Load(*dir);
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  for (auto& [name, linear] : pruned->layer(1).Linears()) {
    const at::Tensor zeros = (linear->weight == 0).reshape({linear->weight.size(0), -1, 8});
    EXPECT_TRUE(zeros.sum(-1).eq(4).all().item<bool>()) << name;
  }

  auto original = LlamaModel::Load((dir_ / "model").string());
  ASSERT_TRUE(original.ok());
  // Text like the calibration's (the byte tokenizer: ids are the bytes), where the update was fit.
  const std::string text = "calibration line 41 with some words to fill a window of text";
  std::vector<int64_t> bytes(text.begin(), text.begin() + 48);
  const at::Tensor ids = at::tensor(bytes, at::kLong).view({1, 48});
  const at::Tensor reference = original->Forward(ids);
  auto error = [&](v1::PruneTarget::Method method, const std::string& name) {
    v1::PruneTarget t;
    t.set_method(method);
    t.set_pattern(v1::PruneTarget::UNSTRUCTURED);
    t.set_sparsity(0.5);
    auto result = Run(t, root() + "/jobs/j/" + name);
    EXPECT_TRUE(result.ok()) << result.status();
    auto local = store_->LocalDirectory(root() + "/jobs/j/" + name, (dir_ / name).string());
    EXPECT_TRUE(local.ok());
    auto model = LlamaModel::Load(*local);
    EXPECT_TRUE(model.ok());
    EXPECT_NEAR(LinearSparsity(*model), 0.5, 0.01) << name;
    return ((model->Forward(ids) - reference).norm() / reference.norm()).item<double>();
  };
  const double sparsegpt = error(v1::PruneTarget::SPARSEGPT, "sparsegpt");
  const double magnitude = error(v1::PruneTarget::MAGNITUDE, "magnitude");
  EXPECT_LT(sparsegpt, 0.8 * magnitude)
      << "relative logit error: sparsegpt " << sparsegpt << ", magnitude " << magnitude;
}

// 2:4 written in compressed-tensors' sparse-24-bitmask layout: the project's loader reads back the
// model the dense output holds.
TEST_F(PruneRunnerTest, TwoFourIsWrittenInTheSparseBitmaskLayout) {
  v1::PruneTarget target;
  target.set_method(v1::PruneTarget::SPARSEGPT);
  target.set_pattern(v1::PruneTarget::TWO_FOUR);
  target.set_sparsity(0.5);
  auto dense = Run(target, root() + "/jobs/j/dense");
  ASSERT_TRUE(dense.ok()) << dense.status();
  auto sparse = Run(target, root() + "/jobs/j/sparse", v1::PruneStage::SPARSE_24_BITMASK);
  ASSERT_TRUE(sparse.ok()) << sparse.status();
  EXPECT_EQ(sparse->result.prune().format(), "sparse_24_bitmask");
  auto dense_dir = store_->LocalDirectory(root() + "/jobs/j/dense", (dir_ / "d").string());
  auto sparse_dir = store_->LocalDirectory(root() + "/jobs/j/sparse", (dir_ / "s").string());
  ASSERT_TRUE(dense_dir.ok() && sparse_dir.ok());
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(*sparse_dir) /
                                      "model-00001-of-00003.safetensors"));
  auto a = LoadModel(*dense_dir);
  auto b = LoadModel(*sparse_dir);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status();
  // Every linear holds 2 of every 4; the model is the dense output's but for float16's rounding,
  // which the later layers were pruned on (so their masks may differ in a few places).
  for (int64_t l = 0; l < 2; ++l) {
    for (auto& [name, linear] : b->layer(l).Linears()) {
      const at::Tensor zeros = (linear->weight == 0).reshape({linear->weight.size(0), -1, 4});
      EXPECT_TRUE(zeros.sum(-1).eq(2).all().item<bool>()) << name;
    }
  }
  const at::Tensor ids = at::arange(32, 80, at::kLong).view({1, 48});
  const at::Tensor reference = LlamaModel::Load((dir_ / "model").string())->Forward(ids);
  auto error = [&](const LlamaModel& m) {
    return ((m.Forward(ids) - reference).norm() / reference.norm()).item<double>();
  };
  EXPECT_NEAR(error(*b), error(*a), 0.2 * error(*a)) << "as far from the original as dense";
  // Only 2:4 fits the layout.
  target.set_pattern(v1::PruneTarget::UNSTRUCTURED);
  auto refused = Run(target, root() + "/jobs/j/refused", v1::PruneStage::SPARSE_24_BITMASK);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("sparse_24_bitmask holds 2:4"), std::string::npos);
}

// SparseGPT streams layer by layer: a task cancelled after its first layer leaves that layer's
// shard in its checkpoint, and the retry prunes only the rest, writing the model a run without
// the interruption writes.
TEST_F(PruneRunnerTest, SparseGptResumesAfterItsFinishedLayers) {
  v1::PruneTarget target;
  target.set_method(v1::PruneTarget::SPARSEGPT);
  target.set_pattern(v1::PruneTarget::UNSTRUCTURED);
  target.set_sparsity(0.6);
  // The tokenizer and generation files travel with the pruned model.
  std::ofstream(dir_ / "model" / "tokenizer_config.json") << "{\"chat_template\": \"x\"}";
  std::ofstream(dir_ / "model" / "generation_config.json") << "{}";
  auto whole = Run(target, root() + "/jobs/j/whole");
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->result.prune().resumed_from_layer(), 0);
  EXPECT_GT(whole->result.prune().peak_host_memory_bytes(), 0);

  const v1::TaskLease lease = Lease(target, root() + "/jobs/j/interrupted");
  fs::create_directories(dir_ / "scratch");
  {
    // Each step boundary waits 300 ms; the watcher cancels once the first layer is reported,
    // which is once its shard is in the checkpoint (the second may have landed too by then).
    TaskContext ctx(lease, store_.get(), (dir_ / "scratch").string(), at::kCPU, 300);
    std::atomic<bool> done{false};
    std::thread watcher([&] {
      while (!done && ctx.report().snapshot().completed < 1)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      const int64_t reported = ctx.report().snapshot().completed;
      auto stored = store_->Files(lease.checkpoint_uri() + "/shards");
      EXPECT_TRUE(stored.ok()) << stored.status();
      if (stored.ok()) {
        EXPECT_GE(static_cast<int64_t>(stored->size()), reported)
            << "a layer was reported before its shard was in the checkpoint";
      }
      ctx.RequestCancel();
    });
    auto first = PruneRunner().Run(ctx);
    done = true;
    watcher.join();
    ASSERT_EQ(first.status().code(), absl::StatusCode::kCancelled) << first.status();
  }
  EXPECT_FALSE(*store_->Exists(lease.output_uri())) << "no output before the task finishes";
  auto kept = store_->Files(lease.checkpoint_uri() + "/shards");
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_GE(kept->size(), 1u);
  EXPECT_EQ((*kept)[0].name, "model-00001-of-00003.safetensors");

  TaskContext retry(lease, store_.get(), (dir_ / "scratch").string(), at::kCPU, 0);
  auto resumed = PruneRunner().Run(retry);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->result.prune().resumed_from_layer(), static_cast<int64_t>(kept->size()));
  EXPECT_DOUBLE_EQ(resumed->result.prune().sparsity(), whole->result.prune().sparsity());
  EXPECT_FALSE(*store_->Exists(lease.checkpoint_uri())) << "the checkpoint is released";
  auto a = store_->LocalDirectory(root() + "/jobs/j/whole", (dir_ / "a").string());
  auto b = store_->LocalDirectory(lease.output_uri(), (dir_ / "b").string());
  ASSERT_TRUE(a.ok() && b.ok());
  for (const char* name : {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                           "model-00003-of-00003.safetensors", "model.safetensors.index.json",
                           "config.json", "tokenizer_config.json", "generation_config.json"}) {
    EXPECT_EQ(ReadFileToString((fs::path(*a) / name).string()).value_or("a"),
              ReadFileToString((fs::path(*b) / name).string()).value_or("b"))
        << name;
  }
  EXPECT_EQ(ReadFileToString((fs::path(*b) / "tokenizer_config.json").string()).value_or(""),
            "{\"chat_template\": \"x\"}");
}

}  // namespace
}  // namespace squeeze::worker
