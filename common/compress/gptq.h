// GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative
// Pre-trained Transformers"): quantizes a linear layer's weight one input column at a time and
// spreads each column's rounding error over the columns not yet quantized, weighted by the inverse
// Hessian of the layer's reconstruction loss, H = 2 X^T X / n over calibration inputs X.
#pragma once

#include <ATen/ATen.h>

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

// `weight` [out, in], `hessian` [in, in] (float32, any device). Columns whose Hessian diagonal is
// 0 (inputs never active) are zeroed. Errors name what is wrong (non-finite values, shapes); a
// Hessian that stays indefinite after raising the damping 10 times is an error.
absl::StatusOr<GptqResult> QuantizeGptq(const at::Tensor& weight, const at::Tensor& hessian,
                                        const GptqOptions& options);

// Accumulates H = 2 X^T X / n over batches of inputs X [..., in] (float32, running average).
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
