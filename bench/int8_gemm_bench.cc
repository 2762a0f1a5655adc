// W8A8's promise measured: INT8 GEMMs (cuBLASLt through libtorch's _int_mm, int32 accumulation)
// against bf16 GEMMs for Llama-3-8B's linears as vLLM runs them (q/k/v and gate/up fused), at 1,
// 16 and 256 tokens. Two INT8 figures: the GEMM alone, and the whole W8A8 linear (per-token
// dynamic quantization of the input, the GEMM, and the int32 -> bf16 rescale by the token and
// channel scales), both composed from ATen ops, so the second is an upper bound on what a fused
// kernel costs. Prints one JSON line per case, then a table.
//
//   int8_gemm_bench [--iterations 200]
#include <ATen/ATen.h>

#include <cstdio>
#include <iostream>

#include "bench/cuda_timing.h"

namespace squeeze {
namespace {

int Main(int argc, char** argv) {
  const int iterations = ParseIterations(argc, argv);
  if (iterations < 0) return 2;
  const at::Device cuda(at::kCUDA);
  struct Row {
    std::string name;
    int64_t tokens, rows;
    double bf16, int8_gemm, int8_linear;
  };
  std::vector<Row> rows;
  for (const LinearShape8B& s : Llama8BFusedLinears()) {
    at::manual_seed(0);
    const at::Tensor w = at::randn({s.out, s.in}, at::TensorOptions(cuda).dtype(at::kBFloat16));
    const at::Tensor w_scale = w.to(at::kFloat).abs().amax(1) / 127.0;  // [out]
    const at::Tensor w_i8 =
        (w.to(at::kFloat) / w_scale.unsqueeze(1)).round().clamp(-128, 127).to(at::kChar);
    const at::Tensor w_i8_t = w_i8.t();  // [in, out], column-major: what cuBLASLt wants
    for (int64_t tokens : {1, 16, 256}) {
      // cuBLASLt's int8 path through _int_mm takes more than 16 rows; fewer tokens are padded
      // to 32 (a tensor-core tile computes them anyway).
      const int64_t m = tokens <= 16 ? 32 : tokens;
      const at::Tensor x = at::randn({tokens, s.in}, w.options());
      const at::Tensor x_padded = at::randn({m, s.in}, w.options());
      const at::Tensor x_i8 = at::randint(-127, 127, {m, s.in}, w.options().dtype(at::kChar));
      Row r{s.name, tokens, m, 0, 0, 0};
      r.bf16 = TimeCudaCalls([&] { at::matmul(x, w.t()); }, iterations);
      r.int8_gemm = TimeCudaCalls([&] { at::_int_mm(x_i8, w_i8_t); }, iterations);
      r.int8_linear = TimeCudaCalls(
          [&] {
            const at::Tensor xf = x_padded.to(at::kFloat);
            const at::Tensor x_scale = xf.abs().amax(1, true).clamp_min(1e-8) / 127.0;
            const at::Tensor q = (xf / x_scale).round().clamp(-128, 127).to(at::kChar);
            const at::Tensor acc = at::_int_mm(q, w_i8_t);
            (acc.to(at::kFloat) * x_scale * w_scale).to(at::kBFloat16);
          },
          iterations);
      std::printf(
          "{\"linear\": \"%s\", \"out\": %ld, \"in\": %ld, \"tokens\": %ld, \"int8_rows\": %ld, "
          "\"bf16_us\": %.2f, \"int8_gemm_us\": %.2f, \"int8_linear_us\": %.2f}\n",
          s.name, static_cast<long>(s.out), static_cast<long>(s.in), static_cast<long>(tokens),
          static_cast<long>(m), r.bf16 * 1e6, r.int8_gemm * 1e6, r.int8_linear * 1e6);
      rows.push_back(r);
    }
  }
  std::printf("\n%-14s %7s %10s %12s %10s %14s %10s\n", "linear", "tokens", "bf16 us",
              "int8 gemm us", "speedup", "W8A8 linear us", "speedup");
  for (const Row& r : rows) {
    std::printf("%-14s %7ld %10.2f %12.2f %9.2fx %14.2f %9.2fx\n", r.name.c_str(),
                static_cast<long>(r.tokens), r.bf16 * 1e6, r.int8_gemm * 1e6, r.bf16 / r.int8_gemm,
                r.int8_linear * 1e6, r.bf16 / r.int8_linear);
  }
  return 0;
}

}  // namespace
}  // namespace squeeze

int main(int argc, char** argv) { return squeeze::Main(argc, argv); }
