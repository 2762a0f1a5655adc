// GPU correctness of training (run on the GPU machine; see README.md): the fused AdamW and the
// fused distillation loss compute on the device what the host computes, and a run resumed from a
// checkpoint on the device continues exactly.
#include <ATen/ATen.h>

#include <filesystem>

#include "common/base/file_util.h"
#include "common/model/llama_model.h"
#include "common/train/distill.h"
#include "common/train/trainer.h"
#include "gtest/gtest.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

class TrainCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  }
};

std::vector<TextExample> Corpus() {
  std::vector<TextExample> out(1);
  for (int i = 0; i < 4000; ++i) out[0].ids.push_back((i * 7 + i / 13) % 300);
  return out;
}

TrainerOptions Options() {
  TrainerOptions o;
  o.steps = 12;
  o.batch_size = 4;
  o.seq_len = 32;
  o.warmup_steps = 2;
  o.lr = 1e-2;
  return o;
}

double MaxDifference(LlamaModel& a, LlamaModel& b) {
  double worst = 0;
  auto pa = a.NamedParameters(), pb = b.NamedParameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    worst = std::max(worst, (pa[i].second->cpu() - pb[i].second->cpu()).abs().max().item<double>());
  }
  return worst;
}

TEST_F(TrainCudaTest, FusedAdamWOnTheDeviceMatchesTheHost) {
  LlamaModel cpu = LlamaModel::RandomInit(TinyLlamaConfig(2, 64, 300), 3);
  LlamaModel gpu = cpu.To(at::Device(at::kCUDA, 0), at::kFloat);
  const WindowSampler sampler(Corpus(), 32, 0);
  CrossEntropyObjective objective;
  std::vector<double> cpu_losses, gpu_losses;
  TrainerCallbacks on_cpu, on_gpu;
  on_cpu.on_step = [&](const TrainStepStats& s) { cpu_losses.push_back(s.loss); };
  on_gpu.on_step = [&](const TrainStepStats& s) { gpu_losses.push_back(s.loss); };
  ASSERT_TRUE(Trainer(&cpu, Options()).Run(sampler, objective, on_cpu).ok());
  ASSERT_TRUE(Trainer(&gpu, Options()).Run(sampler, objective, on_gpu).ok());
  ASSERT_EQ(cpu_losses.size(), gpu_losses.size());
  for (size_t i = 0; i < cpu_losses.size(); ++i) EXPECT_NEAR(cpu_losses[i], gpu_losses[i], 2e-3);
  EXPECT_LT(gpu_losses.back(), gpu_losses.front());
  EXPECT_LT(MaxDifference(cpu, gpu), 2e-3);
}

TEST_F(TrainCudaTest, ResumeOnTheDeviceContinuesExactly) {
  const fs::path dir = fs::temp_directory_path() / "squeeze-train-cuda-resume";
  RemoveTree(dir).IgnoreError();
  const at::Device cuda(at::kCUDA, 0);
  const WindowSampler sampler(Corpus(), 32, 0);
  CrossEntropyObjective objective;
  LlamaModel whole = LlamaModel::RandomInit(TinyLlamaConfig(2, 64, 300), 5).To(cuda, at::kFloat);
  ASSERT_TRUE(Trainer(&whole, Options()).Run(sampler, objective).ok());

  LlamaModel resumed = LlamaModel::RandomInit(TinyLlamaConfig(2, 64, 300), 5).To(cuda, at::kFloat);
  TrainerOptions first = Options();
  first.checkpoint_dir = dir.string();
  first.checkpoint_every = 5;
  TrainerCallbacks stop_at_5;
  int steps = 0;
  stop_at_5.on_step = [&](const TrainStepStats&) { ++steps; };
  stop_at_5.should_stop = [&] { return steps == 5; };
  EXPECT_EQ(Trainer(&resumed, first).Run(sampler, objective, stop_at_5).code(),
            absl::StatusCode::kCancelled);
  LlamaModel restarted =
      LlamaModel::RandomInit(TinyLlamaConfig(2, 64, 300), 99).To(cuda, at::kFloat);
  ASSERT_TRUE(Trainer(&restarted, first).Run(sampler, objective).ok());
  EXPECT_LT(MaxDifference(whole, restarted), 1e-4);
  RemoveTree(dir).IgnoreError();
}

TEST_F(TrainCudaTest, FusedDistillLossInBf16MatchesFloat32Autograd) {
  at::manual_seed(0);
  const int64_t vocab = 128256;
  const at::Tensor s32 = at::randn({2, 64, vocab}) * 3, t32 = at::randn({2, 64, vocab}) * 3;
  const at::Tensor labels = at::randint(0, vocab, {2, 64}, at::kLong);
  const at::Tensor ref_s = s32.clone().set_requires_grad(true);
  const at::Tensor ref =
      at::cross_entropy_loss(ref_s.reshape({-1, vocab}), labels.reshape({-1})) * 0.3 +
      SoftTargetLoss(ref_s, t32, 2.0) * 0.7;
  ref.backward();
  const at::Device cuda(at::kCUDA, 0);
  const at::Tensor s = s32.to(cuda, at::kBFloat16).set_requires_grad(true);
  const DistillLossParts fused =
      FusedDistillLoss(s, t32.to(cuda, at::kBFloat16), labels.to(cuda), 2.0, 0.7, 50);
  fused.loss.backward();
  EXPECT_EQ(s.grad().scalar_type(), at::kBFloat16);
  // bf16 logits carry about 3 significant digits.
  EXPECT_NEAR(fused.loss.item<double>(), ref.item<double>(), 2e-2 * ref.item<double>());
  const at::Tensor g = s.grad().cpu().to(at::kFloat), g_ref = ref_s.grad();
  EXPECT_LT((g - g_ref).norm().item<double>() / g_ref.norm().item<double>(), 2e-2);
}

// The CUDA kernel against the host's chunked computation on the same (bf16-rounded) logits, with
// and without the teacher.
TEST_F(TrainCudaTest, FusedDistillLossKernelMatchesTheHostPath) {
  at::manual_seed(1);
  const int64_t vocab = 50000;
  const at::Tensor s = (at::randn({96, vocab}) * 4).to(at::kBFloat16).to(at::kFloat);
  const at::Tensor t = (at::randn({96, vocab}) * 4).to(at::kBFloat16).to(at::kFloat);
  const at::Tensor labels = at::randint(0, vocab, {96}, at::kLong);
  const at::Device cuda(at::kCUDA, 0);
  for (double alpha : {0.0, 0.5, 1.0}) {
    SCOPED_TRACE(testing::Message() << "alpha " << alpha);
    const at::Tensor host_s = s.clone().set_requires_grad(true);
    const DistillLossParts host =
        FusedDistillLoss(host_s, alpha > 0 ? t : at::Tensor(), labels, 3.0, alpha, 7);
    host.loss.backward();
    const at::Tensor dev_s = s.to(cuda).set_requires_grad(true);
    const DistillLossParts dev =
        FusedDistillLoss(dev_s, alpha > 0 ? t.to(cuda) : at::Tensor(), labels.to(cuda), 3.0, alpha);
    dev.loss.backward();
    EXPECT_NEAR(dev.loss.item<double>(), host.loss.item<double>(),
                1e-4 * std::abs(host.loss.item<double>()));
    EXPECT_NEAR(dev.ce.item<double>(), host.ce.item<double>(), 1e-4 * host.ce.item<double>());
    EXPECT_NEAR(dev.kd.item<double>(), host.kd.item<double>(),
                1e-4 + 1e-4 * host.kd.item<double>());
    const at::Tensor g = dev_s.grad().cpu(), g_ref = host_s.grad();
    EXPECT_LT((g - g_ref).abs().max().item<double>(), 1e-4 * g_ref.abs().max().item<double>());
  }
}

// The fused RMSNorm and SwiGLU kernels against the composite ATen ops on the same device: the
// forward pass (bf16 rounds the same way, so at most an ulp apart) and both gradients.
TEST_F(TrainCudaTest, FusedLayerOpsMatchTheCompositeOps) {
  const at::Device cuda(at::kCUDA, 0);
  for (at::ScalarType dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(testing::Message() << "dtype " << dtype);
    const double tol = dtype == at::kFloat ? 1e-5 : 1e-2;
    at::manual_seed(2);
    for (int64_t hidden : {2048, 3072, 100}) {
      const at::Tensor x = (at::randn({3, 37, hidden}) * 2).to(cuda, dtype);
      const at::Tensor w = (at::rand({hidden}) + 0.5).to(cuda, dtype);
      const at::Tensor dy = at::randn({3, 37, hidden}).to(cuda, dtype);
      const at::Tensor xa = x.clone().set_requires_grad(true),
                       wa = w.clone().set_requires_grad(true);
      const at::Tensor xb = x.clone().set_requires_grad(true),
                       wb = w.clone().set_requires_grad(true);
      const at::Tensor fused = RmsNorm(xa, wa, 1e-5), composite = RmsNormComposite(xb, wb, 1e-5);
      EXPECT_TRUE(at::allclose(fused.to(at::kFloat), composite.to(at::kFloat), tol, tol));
      fused.backward(dy);
      composite.backward(dy);
      auto rel = [](const at::Tensor& a, const at::Tensor& b) {
        return ((a.to(at::kFloat) - b.to(at::kFloat)).norm() / b.to(at::kFloat).norm())
            .item<double>();
      };
      EXPECT_LT(rel(xa.grad(), xb.grad()), tol) << hidden;
      EXPECT_LT(rel(wa.grad(), wb.grad()), tol) << hidden;
    }
    const at::Tensor gate = (at::randn({2, 33, 300}) * 3).to(cuda, dtype);
    const at::Tensor up = at::randn({2, 33, 300}).to(cuda, dtype);
    const at::Tensor dout = at::randn({2, 33, 300}).to(cuda, dtype);
    const at::Tensor ga = gate.clone().set_requires_grad(true),
                     ua = up.clone().set_requires_grad(true);
    const at::Tensor gb = gate.clone().set_requires_grad(true),
                     ub = up.clone().set_requires_grad(true);
    const at::Tensor fused = SwiGlu(ga, ua), composite = SwiGluComposite(gb, ub);
    EXPECT_TRUE(at::allclose(fused.to(at::kFloat), composite.to(at::kFloat), tol, tol));
    fused.backward(dout);
    composite.backward(dout);
    EXPECT_TRUE(at::allclose(ga.grad().to(at::kFloat), gb.grad().to(at::kFloat), tol, tol));
    EXPECT_TRUE(at::allclose(ua.grad().to(at::kFloat), ub.grad().to(at::kFloat), tol, tol));
  }
}

}  // namespace
}  // namespace squeeze
