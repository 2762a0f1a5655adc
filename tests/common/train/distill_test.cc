// Distillation: the soft-target loss against its definition, students cut from the teacher,
// option checks, and the quality claim on the example teacher (distilled beats labels-only).
#include "common/train/distill.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "common/base/file_util.h"
#include "common/compress/perplexity.h"
#include "common/data/text_dataset.h"
#include "gtest/gtest.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

std::string SourceDir() {
  const char* d = std::getenv("SQUEEZE_SOURCE_DIR");
  return d ? d : ".";
}

TEST(DistillTest, SoftTargetLossIsTSquaredKl) {
  at::manual_seed(0);
  const at::Tensor s = at::randn({2, 3, 5}), t = at::randn({2, 3, 5});
  for (double temperature : {1.0, 2.0, 4.0}) {
    const at::Tensor ps = at::softmax(s / temperature, -1), pt = at::softmax(t / temperature, -1);
    const double kl = (pt * (pt.log() - ps.log())).sum(-1).mean().item<double>();
    EXPECT_NEAR(SoftTargetLoss(s, t, temperature).item<double>(), temperature * temperature * kl,
                1e-5);
  }
  EXPECT_NEAR(SoftTargetLoss(t, t, 2.0).item<double>(), 0.0, 1e-6);
}

// The fused loss against the same objective written with autograd, in value and gradient, in
// one chunk and in chunks of 3 rows (a remainder included).
TEST(DistillTest, FusedLossMatchesAutogradInValueAndGradient) {
  at::manual_seed(4);
  const at::Tensor t = at::randn({2, 5, 11}) * 3, labels = at::randint(0, 11, {2, 5}, at::kLong);
  for (double alpha : {0.0, 0.3, 1.0}) {
    for (int64_t chunk_rows : {0, 3}) {
      const at::Tensor base = at::randn({2, 5, 11}) * 2;
      const at::Tensor s_ref = base.clone().set_requires_grad(true);
      const at::Tensor ce = at::cross_entropy_loss(s_ref.reshape({-1, 11}), labels.reshape({-1}));
      const at::Tensor ref = ce * (1 - alpha) + SoftTargetLoss(s_ref, t, 2.5) * alpha;
      (ref * 0.5).backward();

      const at::Tensor s = base.clone().set_requires_grad(true);
      const DistillLossParts fused =
          FusedDistillLoss(s, alpha > 0 ? t : at::Tensor(), labels, 2.5, alpha, chunk_rows);
      (fused.loss * 0.5).backward();
      SCOPED_TRACE(testing::Message() << "alpha " << alpha << ", chunk " << chunk_rows);
      EXPECT_NEAR(fused.loss.item<double>(), ref.item<double>(), 1e-5);
      EXPECT_NEAR(fused.ce.item<double>(), ce.item<double>(), 1e-5);
      EXPECT_TRUE(at::allclose(s.grad(), s_ref.grad(), 1e-5, 1e-6));
      EXPECT_FALSE(fused.ce.requires_grad());
    }
  }
}

TEST(DistillTest, TopKSoftTargetsMatchTheFullLossWhenKIsTheVocabulary) {
  at::manual_seed(1);
  const at::Tensor s = at::randn({2, 3, 7}), t = at::randn({2, 3, 7});
  const auto [values, indices] = t.topk(7, -1);
  EXPECT_NEAR(SoftTargetLossTopK(s, {values, indices}, 2.0).item<double>(),
              SoftTargetLoss(s, t, 2.0).item<double>(), 1e-5);
  // With fewer tokens the loss is that of the renormalised top of the distribution.
  const auto [v3, i3] = t.topk(3, -1);
  const double partial = SoftTargetLossTopK(s, {v3, i3}, 2.0).item<double>();
  EXPECT_TRUE(std::isfinite(partial));
  EXPECT_GT(partial, 0.0);
  // From a model: [rows, seq, k] values and ids of its largest logits.
  const LlamaModel teacher = LlamaModel::RandomInit(TinyLlamaConfig(2), 3);
  const at::Tensor ids = at::randint(0, 200, {2, 9}, at::kLong);
  const TopKLogits top = TeacherTopK(teacher, ids, 5);
  EXPECT_EQ(top.values.sizes(), (at::IntArrayRef{2, 8, 5}));
  EXPECT_EQ(top.indices.sizes(), (at::IntArrayRef{2, 8, 5}));
  const at::Tensor full = teacher.Forward(ids.slice(1, 0, 8));
  EXPECT_TRUE(at::equal(top.indices.to(at::kLong), std::get<1>(full.topk(5, -1))));
}

TEST(DistillTest, StudentsCutFromTheTeacherKeepItsLayers) {
  const LlamaModel teacher = LlamaModel::RandomInit(TinyLlamaConfig(4), 1);
  auto all = StudentFromTeacherLayers(teacher, {0, 1, 2, 3});
  ASSERT_TRUE(all.ok()) << all.status();
  const at::Tensor ids = at::randint(0, 200, {2, 16}, at::kLong);
  EXPECT_TRUE(at::allclose(all->Forward(ids), teacher.Forward(ids)));

  EXPECT_EQ(EveryKthLayer(4, 2), (std::vector<int64_t>{0, 2}));
  auto half = StudentFromTeacherLayers(teacher, EveryKthLayer(4, 2));
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(half->num_layers(), 2);
  EXPECT_EQ(half->config().num_hidden_layers, 2);
  EXPECT_TRUE(at::equal(half->layer(1).q_proj.weight, teacher.layer(2).q_proj.weight));
  // A copy: training the student leaves the teacher alone.
  half->layer(1).q_proj.weight.add_(1.0);
  EXPECT_FALSE(at::equal(half->layer(1).q_proj.weight, teacher.layer(2).q_proj.weight));
  EXPECT_EQ(StudentFromTeacherLayers(teacher, {0, 7}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DistillTest, BadOptionsNameTheField) {
  const LlamaConfig teacher = TinyLlamaConfig(4, 32);
  DistillOptions o;
  o.temperature = 0;
  EXPECT_NE(ValidateDistillOptions(o, teacher, teacher).message().find("temperature"),
            absl::string_view::npos);
  o = {};
  o.alpha = 1.5;
  EXPECT_NE(ValidateDistillOptions(o, teacher, teacher).message().find("alpha"),
            absl::string_view::npos);
  o = {};
  LlamaConfig other_vocab = teacher;
  other_vocab.vocab_size = 1000;
  EXPECT_NE(ValidateDistillOptions(o, teacher, other_vocab).message().find("vocabulary"),
            absl::string_view::npos);
  o.hidden_loss = DistillOptions::HiddenLoss::kMse;
  o.hidden_layers = {{0, 1}};
  const LlamaConfig wide = TinyLlamaConfig(2, 64);
  EXPECT_NE(ValidateDistillOptions(o, teacher, wide).message().find("projection"),
            absl::string_view::npos);
  o.projection = true;
  EXPECT_TRUE(ValidateDistillOptions(o, teacher, wide).ok());
  o.hidden_layers = {{5, 1}};
  EXPECT_NE(ValidateDistillOptions(o, teacher, wide).message().find("student layer 5"),
            absl::string_view::npos);
}

TEST(DistillTest, HiddenStateLossTrainsAProjectionThatCheckpoints) {
  const LlamaModel teacher = LlamaModel::RandomInit(TinyLlamaConfig(4, 32), 1);
  LlamaModel student = LlamaModel::RandomInit(TinyLlamaConfig(2, 16), 2);
  DistillOptions o;
  o.hidden_loss = DistillOptions::HiddenLoss::kCosine;
  o.hidden_layers = {{1, 3}};
  o.projection = true;
  ASSERT_TRUE(ValidateDistillOptions(o, teacher.config(), student.config()).ok());
  DistillationObjective objective(&teacher, o, student.config(), at::kCPU);
  ASSERT_EQ(objective.Parameters().size(), 1u);
  EXPECT_EQ(objective.Parameters()[0].sizes(), (at::IntArrayRef{32, 16}));
  const at::Tensor before = objective.Parameters()[0].detach().clone();

  ByteTokenizer tok;
  std::vector<TextExample> data;
  for (int i = 0; i < 20; ++i) data.push_back({tok.Encode("the cat sat on the mat. "), ""});
  WindowSampler sampler(data, 24, 0);
  TrainerOptions to;
  to.steps = 5;
  to.batch_size = 4;
  to.seq_len = 24;
  to.warmup_steps = 1;
  const fs::path dir = fs::temp_directory_path() / ("distill_test_" + std::to_string(::getpid()));
  RemoveTree(dir).IgnoreError();
  to.checkpoint_dir = dir.string();
  Trainer trainer(&student, to);
  ASSERT_TRUE(trainer.Run(sampler, objective).ok());
  EXPECT_GT(objective.last_parts().hidden, 0.0);
  EXPECT_FALSE(at::equal(objective.Parameters()[0], before)) << "the projection was trained";
  // The checkpoint carries it.
  DistillationObjective restored(&teacher, o, student.config(), at::kCPU);
  ASSERT_TRUE(restored.LoadState((dir / "checkpoint").string()).ok());
  EXPECT_TRUE(at::equal(restored.Parameters()[0], objective.Parameters()[0]));
  RemoveTree(dir).IgnoreError();
}

// The quality claim on the example teacher, small enough for CI: a student of half the
// teacher's layers, distilled, evaluates better than the same student trained the same steps on
// labels alone.
TEST(DistillTest, DistilledHalfDepthStudentBeatsLabelsOnly) {
  const std::string model_dir = SourceDir() + "/deploy/models/fortunes-teacher";
  auto teacher = LlamaModel::Load(model_dir, at::kFloat);
  ASSERT_TRUE(teacher.ok()) << teacher.status();
  auto train = LoadTextDatasetForModel(model_dir, teacher->config(),
                                       SourceDir() + "/deploy/data/fortunes/train.jsonl");
  auto eval = LoadTextDatasetForModel(model_dir, teacher->config(),
                                      SourceDir() + "/deploy/data/fortunes/evaluation.jsonl");
  ASSERT_TRUE(train.ok() && eval.ok());
  PerplexityOptions po = FitToModel({}, teacher->config());
  po.max_examples = 150;
  auto run = [&](double alpha) {
    auto student = StudentFromTeacherLayers(*teacher, EveryKthLayer(4, 2));
    EXPECT_TRUE(student.ok());
    DistillOptions o;
    o.alpha = alpha;
    o.temperature = 2.0;
    DistillationObjective objective(&*teacher, o, student->config(), at::kCPU);
    TrainerOptions to;
    to.steps = 40;
    to.batch_size = 8;
    to.seq_len = 128;
    to.lr = 1e-3;
    to.warmup_steps = 4;
    to.seed = 7;
    Trainer trainer(&*student, to);
    EXPECT_TRUE(trainer.Run(WindowSampler(*train, to.seq_len, to.seed), objective).ok());
    return EvaluatePerplexity(*student, *eval, po)->total.perplexity();
  };
  const double teacher_ppl = EvaluatePerplexity(*teacher, *eval, po)->total.perplexity();
  const double labels_only = run(0.0);
  const double distilled = run(0.7);
  std::printf("teacher %.3f, half-depth student: labels only %.3f, distilled %.3f\n", teacher_ppl,
              labels_only, distilled);
  EXPECT_LT(distilled, labels_only);
  EXPECT_GT(distilled, teacher_ppl);
}

}  // namespace
}  // namespace squeeze
