// How much a linear layer's output moves when it alone is quantized: tr(dW H dW^T) with
// dW = W - Q(W) and H = 2 X^T X / n its inputs' Hessian proxy, i.e. 2/n times the squared
// output error over the calibration inputs. Mixed precision compares these across widths and
// layers (mixed_precision.h).
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <vector>

#include "absl/status/statusor.h"
#include "common/compress/gptq.h"
#include "common/compress/rtn.h"

namespace squeeze {

// tr(dW H dW^T) for dW = weight - quantized (both [out, in]; H [in, in]; float32).
double OutputError(const at::Tensor& weight, const at::Tensor& quantized,
                   const at::Tensor& hessian);

// The error RTN at `spec` leaves. `weight` [out, in], `hessian` [in, in] (float32, any device).
absl::StatusOr<double> QuantizationSensitivity(const at::Tensor& weight, const at::Tensor& hessian,
                                               const QuantSpec& spec);

// The error at each width in `bits` (the rest of the spec from `base`): what GPTQ leaves when
// `solver` (prepared from `hessian`) is given, what RTN leaves otherwise.
absl::StatusOr<std::map<int, double>> ErrorByWidth(const at::Tensor& weight,
                                                   const at::Tensor& hessian,
                                                   const std::vector<int>& bits,
                                                   const QuantSpec& base,
                                                   const GptqSolver* solver = nullptr);

}  // namespace squeeze
