// CUDA kernels for GPTQ (CUDA builds only; gptq.cc uses them where they apply and ATen elsewhere).
#pragma once

#include <ATen/ATen.h>

namespace squeeze {

// The columns a fused block kernel call takes at most; GptqOptions::block_size must equal it.
constexpr int64_t kGptqCudaBlock = 128;

// Quantizes columns [i1, i1 + count) of `w` ([rows, cols] float32, contiguous, CUDA) one after
// another, each column's scaled rounding error spread over the block's later columns through
// `hinv` ([cols, cols], the upper Cholesky factor of the damped inverse Hessian), in one launch: a
// thread block owns 32 rows, keeps their block of weights in registers and the block's inverse
// Hessian rows in shared memory. Writes codes[:, i1 + i] (uint8), err[:, i] (float32 [rows,
// kGptqCudaBlock], the scaled errors for the update of the columns after the block) and adds
// each row's loss to losses[rows]. Column c uses scales[:, group_of[c]] and zeros[:, group_of[c]].
//
// SparseGPT in the same kernel (`sparse`): weights marked in `pruned` ([rows, cols] bool,
// contiguous) become 0 (their code the zero point) and spread their whole value as error; with m
// set (4 or 8) the kernel itself marks the n least salient (w^2 / d^2) of every m columns as it
// reaches them, writing `pruned`; without `quantize` the kept weights are not rounded (no codes).
// In this mode the block's final weights (0 where pruned) are written back into `w`.
struct SparseBlockOptions {
  at::Tensor pruned;
  int n = 0, m = 0;
  bool quantize = true;
};
void GptqSolveBlockCuda(const at::Tensor& w, const at::Tensor& hinv, int64_t i1, int64_t count,
                        const at::Tensor& scales, const at::Tensor& zeros,
                        const at::Tensor& group_of, double maxq, at::Tensor& codes, at::Tensor& err,
                        at::Tensor& losses, const SparseBlockOptions& sparse = {});

// h = beta * h + alpha * x^T x for x [m, n] (bfloat16 or float16, contiguous) and h [n, n]
// float32: one cuBLAS GEMM with 16-bit inputs and float32 accumulation and output.
void AccumulateGramCuda(at::Tensor& h, const at::Tensor& x, double alpha, double beta);

}  // namespace squeeze
