// 2:4 sparsity's promise measured: a 2:4-sparse weight through cuSPARSELt (libtorch's
// _cslt_compress / _cslt_sparse_mm, the semi-structured sparse GEMM vLLM's 2:4 kernels build on)
// against the same dense bf16 GEMM, for Llama-3-8B's linears as vLLM runs them (q/k/v and gate/up
// fused), at 1, 16, 256 and 2048 tokens. The sparse GEMM computes W x^T ([out, tokens]); tokens
// below 16 are padded to 16, the least it takes. Checks that both give the same product, then
// prints one JSON line per case and a table.
//
//   sparse24_gemm_bench [--iterations 200]
#include <ATen/ATen.h>

#include <cstdio>
#include <exception>
#include <iostream>

#include "bench/cuda_timing.h"

namespace squeeze {
namespace {

// Keeps the 2 largest magnitudes of every 4 consecutive inputs of each row.
at::Tensor TwoOfFour(const at::Tensor& w) {
  const at::Tensor groups = w.reshape({w.size(0), -1, 4});
  const at::Tensor top = std::get<1>(groups.abs().topk(2, -1));
  const at::Tensor keep =
      at::zeros_like(groups, groups.options().dtype(at::kBool)).scatter_(-1, top, true);
  return (groups * keep).reshape(w.sizes());
}

int Main(int argc, char** argv) {
  const int iterations = ParseIterations(argc, argv);
  if (iterations < 0) return 2;
  const at::Device cuda(at::kCUDA);
  struct Row {
    std::string name;
    int64_t tokens;
    double dense, sparse;
  };
  std::vector<Row> rows;
  try {
    for (const LinearShape8B& s : Llama8BFusedLinears()) {
      at::manual_seed(0);
      const at::Tensor w =
          TwoOfFour(at::randn({s.out, s.in}, at::TensorOptions(cuda).dtype(at::kBFloat16)));
      const at::Tensor compressed = at::_cslt_compress(w);
      for (int64_t tokens : {1, 16, 256, 2048}) {
        const int64_t n = std::max<int64_t>(tokens, 16);
        const at::Tensor x = at::randn({n, s.in}, w.options());
        const at::Tensor xt = x.t();  // [in, tokens], column-major
        const at::Tensor dense_out = at::matmul(w, xt);
        const at::Tensor sparse_out = at::_cslt_sparse_mm(compressed, xt);
        const double err = ((sparse_out.to(at::kFloat) - dense_out.to(at::kFloat)).abs().max() /
                            dense_out.to(at::kFloat).abs().max())
                               .item<double>();
        if (err > 2e-2) {
          std::cerr << s.name << " at " << tokens << " tokens: sparse and dense products differ ("
                    << err << ")\n";
          return 1;
        }
        Row r{s.name, tokens, 0, 0};
        r.dense = TimeCudaCalls([&] { at::matmul(w, xt); }, iterations);
        r.sparse = TimeCudaCalls([&] { at::_cslt_sparse_mm(compressed, xt); }, iterations);
        std::printf(
            "{\"linear\": \"%s\", \"out\": %ld, \"in\": %ld, \"tokens\": %ld, \"dense_us\": %.2f, "
            "\"sparse24_us\": %.2f, \"max_rel_diff\": %.2e}\n",
            s.name, static_cast<long>(s.out), static_cast<long>(s.in), static_cast<long>(tokens),
            r.dense * 1e6, r.sparse * 1e6, err);
        rows.push_back(r);
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "cuSPARSELt is not usable here: " << e.what() << "\n";
    return 1;
  }
  std::printf("\n%-14s %7s %12s %14s %9s\n", "linear", "tokens", "dense us", "2:4 sparse us",
              "speedup");
  for (const Row& r : rows) {
    std::printf("%-14s %7ld %12.2f %14.2f %8.2fx\n", r.name.c_str(), static_cast<long>(r.tokens),
                r.dense * 1e6, r.sparse * 1e6, r.dense / r.sparse);
  }
  return 0;
}

}  // namespace
}  // namespace squeeze

int main(int argc, char** argv) { return squeeze::Main(argc, argv); }
