// GPTQ's solve on real layer shapes, against the plain PyTorch per-column reference run on the
// same weights and Hessians (bench/gptq_reference.py reads the file this writes). Also measures
// what accumulating the Hessian from bfloat16 inputs (float32 accumulation) costs in
// reconstruction error against an all-float32 Hessian.
//
//   gptq_solver_bench --device cuda --out /tmp/gptq_cases.safetensors [--tokens 32768]
//
// Prints one JSON line per case: shape, our prepare/solve seconds (best of 3), our loss, and the
// reconstruction error tr((W - Q) H (W - Q)^T) with H from bf16 and from fp32 inputs.
#include <ATen/ATen.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>

#include "common/base/flags.h"
#include "common/compress/gptq.h"
#include "common/tensor/safetensors.h"
#include "common/tensor/torch_tensor.h"
#ifdef SQUEEZE_HAS_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace squeeze {
namespace {

void Sync(const at::Device& device) {
#ifdef SQUEEZE_HAS_CUDA
  if (device.is_cuda()) c10::cuda::device_synchronize();
#endif
}

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct Case {
  const char* name;
  int64_t out, in;
};

int Main(int argc, char** argv) {
  Flags flags;
  flags.Value("device", "cuda").Value("out", "").Value("tokens", "32768").Value("repeats", "3");
  std::vector<std::string> args(argv + 1, argv + argc);
  if (auto s = flags.Parse(args); !s.ok()) {
    std::cerr << s << "\n";
    return 2;
  }
  const at::Device device(*flags.Get("device"));
  const int64_t tokens = *flags.GetInt("tokens");
  const int repeats = static_cast<int>(*flags.GetInt("repeats"));
  // Llama-3-8B's linears: attention (q, k/v, o) and MLP (gate/up, down).
  const Case cases[] = {{"self_attn.q_proj", 4096, 4096},
                        {"self_attn.k_proj", 1024, 4096},
                        {"self_attn.o_proj", 4096, 4096},
                        {"mlp.gate_proj", 14336, 4096},
                        {"mlp.down_proj", 4096, 14336}};
  GptqOptions options;
  options.quant = {4, 128, false};
  SafetensorsWriter writer;
  at::manual_seed(0);
  std::map<int64_t, std::pair<at::Tensor, at::Tensor>> hessians;  // by input width
  std::set<int64_t> saved;
  for (const Case& c : cases) {
    if (!hessians.count(c.in)) {
      // Correlated inputs, as activations are: independent noise mixed by a random matrix.
      const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
      const at::Tensor mix = at::eye(c.in, f32) + at::randn({c.in, c.in}, f32) / std::sqrt(c.in);
      HessianAccumulator bf16(c.in, device), fp32(c.in, device);
      for (int64_t done = 0; done < tokens; done += 4096) {
        const at::Tensor x = at::randn({4096, c.in}, f32).matmul(mix);
        bf16.Add(x.to(at::kBFloat16));
        fp32.Add(x);
      }
      hessians[c.in] = {bf16.hessian(), fp32.hessian()};
    }
    const auto& [h_bf16, h_fp32] = hessians.at(c.in);
    const at::Tensor w =
        at::randn({c.out, c.in}, at::TensorOptions().dtype(at::kFloat).device(device)) * 0.02;
    double prepare_best = 1e30, solve_best = 1e30, loss = 0;
    GptqResult result;
    for (int r = 0; r < repeats; ++r) {
      Sync(device);
      auto start = std::chrono::steady_clock::now();
      auto solver = GptqSolver::Prepare(h_bf16, options);
      Sync(device);
      prepare_best = std::min(prepare_best, Since(start));
      start = std::chrono::steady_clock::now();
      auto solved = solver->Solve(w);
      Sync(device);
      solve_best = std::min(solve_best, Since(start));
      if (!solved.ok()) {
        std::cerr << c.name << ": " << solved.status() << "\n";
        return 1;
      }
      result = *std::move(solved);
      loss = result.loss;
    }
    auto reconstruction = [&](const at::Tensor& h, const QuantizedWeight& q) {
      const at::Tensor d = w - q.Dequantize();
      return (d.matmul(h) * d).sum().item<double>();
    };
    auto fp32_solved = QuantizeGptq(w, h_fp32, options);
    nlohmann::json line = {{"case", c.name},
                           {"out", c.out},
                           {"in", c.in},
                           {"prepare_seconds", prepare_best},
                           {"solve_seconds", solve_best},
                           {"loss", loss},
                           {"error_bf16_hessian", reconstruction(h_fp32, result.weight)},
                           {"error_fp32_hessian", reconstruction(h_fp32, fp32_solved->weight)}};
    std::cout << line.dump() << std::endl;
    const std::string name = c.name;
    if (auto s = AddTensor(writer, name + ".weight", w); !s.ok()) return 1;
    if (saved.insert(c.in).second) {
      if (auto s = AddTensor(writer, "hessian." + std::to_string(c.in), h_bf16); !s.ok()) return 1;
    }
  }
  if (flags.Has("out") && !flags.Get("out")->empty()) {
    if (auto s = writer.WriteFile(*flags.Get("out")); !s.ok()) {
      std::cerr << s << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace squeeze

int main(int argc, char** argv) { return squeeze::Main(argc, argv); }
