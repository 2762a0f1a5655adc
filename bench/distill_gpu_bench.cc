// Distillation throughput on one GPU: a Llama-shaped student trained on a larger teacher's soft
// outputs (both randomly initialised at the sizes asked for: throughput does not depend on the
// weights), bf16 weights, sequence 2048. Prints student tokens/s and model FLOPs utilisation;
// bench/distill_gpu.sh runs the transformers reference with the same shapes beside it.
//
//   distill_gpu_bench [--student 1b] [--teacher 3b] [--seq 2048] [--batch 1] [--steps 10]
//                     [--profile]  (GPU time by kernel and by kind over the measured steps)
#ifdef SQUEEZE_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <random>

#include "common/base/flags.h"
#include "common/model/llama_model.h"
#include "common/train/distill.h"
#include "common/train/trainer.h"

namespace {

using squeeze::LlamaConfig;

// Llama 3.2 shapes (1B and 3B), with tied embeddings as those models have.
LlamaConfig Shape(const std::string& name) {
  LlamaConfig c;
  c.vocab_size = 128256;
  c.rope_theta = 500000.0;
  c.max_position_embeddings = 8192;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = true;
  if (name == "3b") {
    c.hidden_size = 3072;
    c.intermediate_size = 8192;
    c.num_hidden_layers = 28;
    c.num_attention_heads = 24;
    c.num_key_value_heads = 8;
    c.head_dim = 128;
  } else {
    c.hidden_size = 2048;
    c.intermediate_size = 8192;
    c.num_hidden_layers = 16;
    c.num_attention_heads = 32;
    c.num_key_value_heads = 8;
    c.head_dim = 64;
  }
  return c;
}

// Matmul FLOPs of one token's forward pass (the embedding lookup is free; the LM head is not),
// plus causal attention scores and values over `seq` positions (counted in full, as PaLM does).
double ForwardFlopsPerToken(const LlamaConfig& c, int64_t seq) {
  const double h = c.hidden_size, q = c.num_attention_heads * c.head_dim,
               kv = c.num_key_value_heads * c.head_dim, f = c.intermediate_size;
  const double per_layer = 2 * (h * q + 2 * h * kv + q * h + 3 * h * f) + 4.0 * seq * q;
  return c.num_hidden_layers * per_layer + 2.0 * h * c.vocab_size;
}

#ifdef SQUEEZE_HAS_CUDA
namespace profiler = torch::autograd::profiler;
namespace profiler_impl = torch::profiler::impl;

const std::set<profiler_impl::ActivityType>& GpuActivities() {
  static const std::set<profiler_impl::ActivityType> kActivities{profiler_impl::ActivityType::CUDA};
  return kActivities;
}

void StartProfiler() {
  const profiler_impl::ProfilerConfig config(profiler_impl::ProfilerState::KINETO);
  profiler::prepareProfiler(config, GpuActivities());
  profiler::enableProfiler(config, GpuActivities());
}

// Device time per kernel name and per kind (matrix products, attention, optimizer, the rest),
// per step.
void PrintProfile(int64_t steps) {
  const auto result = profiler::disableProfiler();
  std::map<std::string, double> by_name, by_kind;
  double total = 0;
  for (const auto& e : result->events()) {
    if (e.deviceType() != c10::DeviceType::CUDA) continue;
    const std::string name(e.name());
    const double ms = e.durationNs() / 1e6 / steps;
    by_name[name] += ms;
    total += ms;
    const char* kind = "other (elementwise, norms, softmax, copies)";
    if (name.find("nvjet") != std::string::npos || name.find("gemm") != std::string::npos ||
        name.find("cutlass") != std::string::npos)
      kind = "matrix products";
    else if (name.find("sdpa") != std::string::npos || name.find("flash") != std::string::npos ||
             name.find("fmha") != std::string::npos)
      kind = "attention";
    else if (name.find("multi_tensor") != std::string::npos ||
             name.find("adam") != std::string::npos)
      kind = "optimizer (multi-tensor)";
    else if (name.find("DistillLoss") != std::string::npos)
      kind = "distillation loss";
    by_kind[kind] += ms;
  }
  std::vector<std::pair<double, std::string>> top;
  for (const auto& [name, ms] : by_name) top.emplace_back(ms, name);
  std::sort(top.rbegin(), top.rend());
  std::printf("device time per step: %.1f ms\n", total);
  for (const auto& [kind, ms] : by_kind) std::printf("  %-45s %7.2f ms\n", kind.c_str(), ms);
  for (size_t i = 0; i < std::min<size_t>(25, top.size()); ++i)
    std::printf("  %7.2f ms  %.110s\n", top[i].first, top[i].second.c_str());
}
#endif

}  // namespace

int main(int argc, char** argv) {
  squeeze::Flags flags;
  flags.Value("student", "1b")
      .Value("teacher", "3b")
      .Value("seq", "2048")
      .Value("batch", "1")
      .Value("steps", "10")
      .Value("warmup", "3")
      .Value("peak-tflops", "989")
      .Bool("profile");
  if (auto s = flags.Parse({argv + 1, argv + argc}); !s.ok()) {
    std::cerr << "distill_gpu_bench: " << s.message() << "\n";
    return 2;
  }
  if (!at::hasCUDA()) {
    std::cerr << "distill_gpu_bench: needs a CUDA device\n";
    return 2;
  }
  const at::Device device(at::kCUDA, 0);
  const int64_t seq = *flags.GetInt("seq"), batch = *flags.GetInt("batch");
  const int64_t steps = *flags.GetInt("steps"), warmup = *flags.GetInt("warmup");
  const LlamaConfig tc = Shape(*flags.Get("teacher")), sc = Shape(*flags.Get("student"));
  squeeze::LlamaModel teacher = squeeze::LlamaModel::RandomInit(tc, 1, at::kBFloat16, device);
  squeeze::LlamaModel student = squeeze::LlamaModel::RandomInit(sc, 2, at::kBFloat16, device);

  // Random tokens: one long stream the sampler cuts windows from.
  std::vector<squeeze::TextExample> data(1);
  std::mt19937 rng(0);
  for (int64_t i = 0; i < 4 * seq * batch * (steps + warmup); ++i)
    data[0].ids.push_back(static_cast<int32_t>(rng() % tc.vocab_size));
  squeeze::DistillOptions o;
  o.temperature = 2.0;
  o.alpha = 0.5;
  squeeze::DistillationObjective objective(&teacher, o, sc, device);
  squeeze::TrainerOptions to;
  to.steps = warmup + steps;
  to.batch_size = batch;
  to.seq_len = seq;
  to.lr = 1e-4;
  to.warmup_steps = 1;
  std::vector<double> step_seconds;
  [[maybe_unused]] const bool profile = flags.GetBool("profile");  // CUDA builds only
  auto last = std::chrono::steady_clock::now();
  squeeze::TrainerCallbacks callbacks;
  callbacks.on_step = [&](const squeeze::TrainStepStats&) {
    // The trainer reads the loss back every step, so the device is idle here.
    const auto now = std::chrono::steady_clock::now();
    step_seconds.push_back(std::chrono::duration<double>(now - last).count());
    last = now;
#ifdef SQUEEZE_HAS_CUDA
    if (profile && static_cast<int64_t>(step_seconds.size()) == warmup) StartProfiler();
#endif
  };
  squeeze::Trainer trainer(&student, to);
  if (auto s = trainer.Run(squeeze::WindowSampler(data, seq, 0), objective, callbacks); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
#ifdef SQUEEZE_HAS_CUDA
  if (profile) PrintProfile(steps);
#endif
  double seconds = 0;
  for (size_t i = warmup; i < step_seconds.size(); ++i) seconds += step_seconds[i];
  const double tokens_per_second = steps * batch * seq / seconds;
  const double flops_per_token =
      3 * ForwardFlopsPerToken(sc, seq) + ForwardFlopsPerToken(tc, seq);  // student fwd+bwd
  const double mfu = tokens_per_second * flops_per_token / (*flags.GetDouble("peak-tflops") * 1e12);
  double peak_gib = 0;
#ifdef SQUEEZE_HAS_CUDA
  peak_gib = c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].peak /
             double(1ll << 30);
#endif
  std::printf(
      "squeeze distill: student %.2fB, teacher %.2fB, bf16, batch %lld x seq %lld: %.0f student "
      "tokens/s, MFU %.1f%%, peak memory %.1f GiB\n",
      student.NumParameters() / 1e9, teacher.NumParameters() / 1e9, static_cast<long long>(batch),
      static_cast<long long>(seq), tokens_per_second, 100 * mfu, peak_gib);
  std::printf("{\"impl\": \"squeeze\", \"tokens_per_second\": %.1f, \"mfu\": %.4f}\n",
              tokens_per_second, mfu);
  return 0;
}
