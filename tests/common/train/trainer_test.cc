#include "common/train/trainer.h"

#include <unistd.h>

#include <filesystem>

#include "common/base/file_util.h"
#include "common/compress/perplexity.h"
#include "common/model/lora.h"
#include "gtest/gtest.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

std::vector<TextExample> Corpus() {
  ByteTokenizer t;
  std::vector<TextExample> out;
  const char* lines[] = {"the cat sat on the mat. ", "the dog sat on the log. ",
                         "a cat and a dog sat together. "};
  for (int rep = 0; rep < 20; ++rep) {
    for (const char* l : lines) out.push_back({t.Encode(l), ""});
  }
  return out;
}

TrainerOptions Options() {
  TrainerOptions o;
  o.steps = 30;
  o.batch_size = 8;
  o.seq_len = 32;
  o.warmup_steps = 5;
  o.lr = 1e-2;
  return o;
}

TEST(TrainerTest, LearningRateWarmsUpThenDecays) {
  TrainerOptions o = Options();
  o.steps = 110;
  o.warmup_steps = 10;
  o.lr = 1.0;
  o.min_lr_ratio = 0.1;
  EXPECT_NEAR(LearningRateAt(o, 0), 0.1, 1e-12);
  EXPECT_NEAR(LearningRateAt(o, 9), 1.0, 1e-12);
  EXPECT_NEAR(LearningRateAt(o, 10), 1.0, 1e-12);
  EXPECT_NEAR(LearningRateAt(o, 60), 0.55, 1e-12);  // halfway through the cosine
  EXPECT_NEAR(LearningRateAt(o, 110), 0.1, 1e-12);
  EXPECT_GT(LearningRateAt(o, 30), LearningRateAt(o, 31));
}

TEST(TrainerTest, SamplerIsDeterministicPerStep) {
  WindowSampler a(Corpus(), 16, 1), b(Corpus(), 16, 1), c(Corpus(), 16, 2);
  EXPECT_TRUE(at::equal(a.Batch(5, 0, 4), b.Batch(5, 0, 4)));
  EXPECT_FALSE(at::equal(a.Batch(5, 0, 4), a.Batch(6, 0, 4)));
  EXPECT_FALSE(at::equal(a.Batch(5, 0, 4), c.Batch(5, 0, 4)));
  EXPECT_EQ(a.Batch(0, 0, 3).sizes(), (at::IntArrayRef{3, 17}));
}

TEST(TrainerTest, LossFallsOnARepetitiveCorpus) {
  LlamaModel m = LlamaModel::RandomInit(TinyLlamaConfig(), 1);
  WindowSampler sampler(Corpus(), 32, 0);
  std::vector<double> losses;
  TrainerCallbacks cb;
  cb.on_step = [&](const TrainStepStats& s) { losses.push_back(s.loss); };
  CrossEntropyObjective objective;
  Trainer trainer(&m, Options());
  ASSERT_TRUE(trainer.Run(sampler, objective, cb).ok());
  ASSERT_EQ(losses.size(), 30u);
  EXPECT_GT(losses.front(), 5.0);  // ~ln(259) at random init
  EXPECT_LT(losses.back(), 2.5);
}

TEST(TrainerTest, RunInterruptedAfterACheckpointResumesToTheSameWeights) {
  const fs::path dir = fs::temp_directory_path() / ("trainer_test_" + std::to_string(::getpid()));
  RemoveTree(dir).IgnoreError();
  WindowSampler sampler(Corpus(), 32, 0);
  CrossEntropyObjective objective;
  TrainerOptions options = Options();
  options.checkpoint_every = 12;

  TrainerOptions straight_options = options;
  straight_options.checkpoint_dir = (dir / "straight").string();
  LlamaModel straight = LlamaModel::RandomInit(TinyLlamaConfig(), 2);
  ASSERT_TRUE(Trainer(&straight, straight_options).Run(sampler, objective).ok());

  // Stops at step 15, as a crash would: steps 13..15 are lost, the checkpoint of step 12 is not.
  options.checkpoint_dir = (dir / "interrupted").string();
  LlamaModel first = LlamaModel::RandomInit(TinyLlamaConfig(), 2);
  Trainer interrupted(&first, options);
  TrainerCallbacks stop;
  stop.should_stop = [&] { return interrupted.step() >= 15; };
  auto status = interrupted.Run(sampler, objective, stop);
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(interrupted.step(), 15);
  EXPECT_EQ(Trainer::CheckpointStep(options.checkpoint_dir), 12);

  // A new process starts from different weights; the checkpoint overrides them.
  LlamaModel second = LlamaModel::RandomInit(TinyLlamaConfig(), 99);
  Trainer resumed(&second, options);
  ASSERT_TRUE(resumed.Run(sampler, objective).ok());
  EXPECT_EQ(resumed.step(), 30);

  auto a = straight.NamedParameters();
  auto b = second.NamedParameters();
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::allclose(*a[i].second, *b[i].second, 1e-5, 1e-6)) << a[i].first;
  }
  RemoveTree(dir).IgnoreError();
}

// Adapters on a frozen base: only they train (the base's tensors are untouched), and a run resumed
// from the adapters' checkpoint ends where an uninterrupted one does.
TEST(TrainerTest, AdaptersTrainAloneAndResumeFromTheirCheckpoint) {
  const fs::path dir =
      fs::temp_directory_path() / ("trainer_lora_test_" + std::to_string(::getpid()));
  RemoveTree(dir).IgnoreError();
  WindowSampler sampler(Corpus(), 32, 0);
  CrossEntropyObjective objective;
  TrainerOptions options = Options();
  options.steps = 12;
  options.checkpoint_every = 6;
  LoraOptions lora;
  lora.targets = {"q_proj", "v_proj", "down_proj"};
  lora.rank = 4;
  lora.dropout = 0.1;
  auto adapted = [&](uint64_t adapter_seed) {
    LlamaModel m = LlamaModel::RandomInit(TinyLlamaConfig(), 4);
    LoraOptions o = lora;
    o.seed = adapter_seed;
    EXPECT_TRUE(AttachLoraAdapters(m, o).ok());
    m.set_gradient_checkpointing(true);
    return m;
  };
  const LlamaModel base = LlamaModel::RandomInit(TinyLlamaConfig(), 4);

  TrainerOptions straight_options = options;
  straight_options.checkpoint_dir = (dir / "straight").string();
  LlamaModel straight = adapted(1);
  std::vector<double> losses;
  TrainerCallbacks record;
  record.on_step = [&](const TrainStepStats& s) { losses.push_back(s.loss); };
  ASSERT_TRUE(Trainer(&straight, straight_options).Run(sampler, objective, record).ok());
  EXPECT_LT(losses.back(), losses.front() - 0.1) << "the adapters learn";
  auto frozen = const_cast<LlamaModel&>(base).NamedParameters();
  auto after = straight.NamedParameters();
  ASSERT_EQ(frozen.size(), after.size());
  for (size_t i = 0; i < after.size(); ++i)
    EXPECT_TRUE(at::equal(*frozen[i].second, *after[i].second)) << after[i].first << " moved";
  EXPECT_TRUE(fs::exists(dir / "straight" / "checkpoint" / "adapters.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "straight" / "checkpoint" / "model.safetensors"))
      << "the frozen base is not checkpointed";

  options.checkpoint_dir = (dir / "interrupted").string();
  LlamaModel first = adapted(1);
  Trainer interrupted(&first, options);
  TrainerCallbacks stop;
  stop.should_stop = [&] { return interrupted.step() >= 8; };
  EXPECT_EQ(interrupted.Run(sampler, objective, stop).code(), absl::StatusCode::kCancelled);
  LlamaModel second = adapted(77);  // other adapters: the checkpoint's replace them
  ASSERT_TRUE(Trainer(&second, options).Run(sampler, objective).ok());
  auto a = straight.TrainableParameters();
  auto b = second.TrainableParameters();
  ASSERT_EQ(a.size(), 12u);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(at::allclose(*a[i].second, *b[i].second, 1e-5, 1e-6)) << a[i].first;
  }
  RemoveTree(dir).IgnoreError();
}

}  // namespace
}  // namespace squeeze
