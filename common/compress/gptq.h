// GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative
// Pre-trained Transformers"): quantizes a linear layer's weight one input column at a time and
// spreads each column's rounding error over the columns not yet quantized, weighted by the inverse
// Hessian of the layer's reconstruction loss, H = 2 X^T X / n over calibration inputs X.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "absl/status/statusor.h"
#include "common/compress/rtn.h"

namespace squeeze {

struct GptqOptions {
  QuantSpec quant;
  bool act_order = false;      // columns by descending Hessian diagonal
  bool static_groups = false;  // with act_order: group parameters fixed before permuting
  double damp = 0.01;          // fraction of the mean Hessian diagonal added to the diagonal
  int64_t block_size = 128;    // lazy batch updates
};

struct GptqResult {
  QuantizedWeight weight;  // codes in the original column order, g_idx per column
  double loss = 0.0;       // sum over the layer of (w - q)^2 / [H^-1]_jj / 2, as in the paper
  double damp_used = 0.0;  // the damping that made H positive definite
};

absl::Status ValidateGptqOptions(const GptqOptions& options, int64_t in_features);

// Which weights SparseGPT zeros (Frantar & Alistarh, 2023): the least OBS saliency w^2 / [H^-1]_jj
// first ([H^-1]_jj of the inputs not yet eliminated: the Cholesky factor's diagonal squared),
// either `sparsity` of every block of columns (unstructured; the mask of a block is chosen when the
// block starts, after the updates of the blocks before it) or `n` of every `m` consecutive inputs
// of a row (n:m; 2:4 zeros 2 of 4). A defined `keep` (bool [out, in]) fixes zeros that stay:
// alone it is the whole mask (a GPTQ pass that keeps an already pruned model's zeros); with a
// sparsity or n:m they are chosen first and the rule adds to them (pruning a pruned model further,
// as an iterative schedule does).
struct SparsityRule {
  double sparsity = 0.0;
  int n = 0, m = 0;
  at::Tensor keep;
  bool active() const { return sparsity > 0.0 || n > 0 || keep.defined(); }
};

struct SparseSolveResult {
  at::Tensor weight;  // [out, in] float32: pruned (and dequantized when quantized), exact zeros
  at::Tensor keep;    // [out, in] bool
  QuantizedWeight quantized;  // codes when quantized (pruned weights hold the zero point)
  double loss = 0.0;          // sum of (w - q)^2 / [H^-1]_jj^2 / 2, as GPTQ's
};

// What GPTQ derives from one Hessian alone: the inputs that never fire, the column order
// (act_order), the damping and the upper Cholesky factor of the damped inverse. Linear layers
// that read the same inputs (q/k/v, gate/up) share one, so the factorization is done once.
class GptqSolver {
 public:
  // `hessian` [in, in] float32 on any device. Errors name what is wrong (non-finite values,
  // shapes); a Hessian that stays indefinite after raising the damping 10 times is an error.
  static absl::StatusOr<GptqSolver> Prepare(const at::Tensor& hessian, const GptqOptions& options);
  // `weight` [out, in] on the Hessian's device. Columns of dead inputs are zeroed. On CUDA with
  // block_size 128 each block of columns is one fused kernel; elsewhere ATen column by column.
  absl::StatusOr<GptqResult> Solve(const at::Tensor& weight) const;
  // The same at another width (mixed precision): the factorization does not depend on it.
  absl::StatusOr<GptqResult> Solve(const at::Tensor& weight, int bits) const;
  // SparseGPT: prunes by `rule` while spreading each column's error over the columns after it
  // through the same factor (the OBS update), and with `quantize` also rounds the kept weights
  // (at `bits`) in the same pass: joint sparsity and quantization. Not with act_order. ATen
  // column by column on every device (sparsegpt.cc).
  absl::StatusOr<SparseSolveResult> SolveSparse(const at::Tensor& weight, const SparsityRule& rule,
                                                bool quantize, int bits) const;
  double damp_used() const { return damp_used_; }

 private:
  // OK when `weight` is a finite [out, in] matrix for this Hessian; InvalidArgument naming it.
  absl::Status CheckWeight(const at::Tensor& weight) const;
  // The weight in float32 on the Hessian's device, with the columns of dead inputs zeroed.
  at::Tensor WorkingCopy(const at::Tensor& weight) const;

  GptqOptions options_;
  at::Tensor hinv_;                // upper Cholesky factor of the damped H^-1, in column order
  at::Tensor dead_;                // [in] bool
  at::Tensor perm_, invperm_;      // act_order only
  std::vector<int64_t> group_of_;  // group of each column, in processing order
  double damp_used_ = 0.0;
};

// GptqSolver::Prepare(hessian).Solve(weight).
absl::StatusOr<GptqResult> QuantizeGptq(const at::Tensor& weight, const at::Tensor& hessian,
                                        const GptqOptions& options);

// Accumulates H = 2 X^T X / n over batches of inputs X [..., in] (float32, running average). On
// CUDA, bfloat16/float16 inputs go into the GEMM as they are, accumulated and kept in float32.
class HessianAccumulator {
 public:
  explicit HessianAccumulator(int64_t in_features, at::Device device);
  void Add(const at::Tensor& inputs);
  const at::Tensor& hessian() const { return h_; }
  int64_t samples() const { return n_; }

 private:
  at::Tensor h_;
  int64_t n_ = 0;
};

}  // namespace squeeze
