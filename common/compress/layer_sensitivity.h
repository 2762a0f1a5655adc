// How much a linear layer's output moves when it alone is quantized: tr(dW H dW^T) with
// dW = W - RTN(W) and H = 2 X^T X / n its inputs' Hessian proxy, i.e. 2/n times the squared
// output error over the calibration inputs. Mixed precision compares these across widths and
// layers (bit_allocation.h).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "absl/status/statusor.h"
#include "common/compress/bit_allocation.h"
#include "common/compress/rtn.h"

namespace squeeze {

// `weight` [out, in], `hessian` [in, in] (float32, any device).
absl::StatusOr<double> QuantizationSensitivity(const at::Tensor& weight, const at::Tensor& hessian,
                                               const QuantSpec& spec);

// One candidate per width in `bits`: the stored bits of the layer at that width (codes plus the
// per-group scale and zero, BitsPerWeight) and its sensitivity.
absl::StatusOr<std::vector<BitChoice>> WidthCandidates(const at::Tensor& weight,
                                                       const at::Tensor& hessian,
                                                       const std::vector<int>& bits,
                                                       const QuantSpec& base);

}  // namespace squeeze
