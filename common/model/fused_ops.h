// RMSNorm and SwiGLU as single CUDA kernels with their own backward passes (CUDA builds only;
// llama_model.cc uses them where they apply and the composite ATen ops elsewhere). They round as
// the composite ops round, so results match those to within float32 reassociation.
#pragma once

#include <ATen/ATen.h>

namespace squeeze {

// x [..., hidden] and weight [hidden] on one CUDA device with one floating dtype.
bool FusedRmsNormApplies(const at::Tensor& x, const at::Tensor& weight);
at::Tensor FusedRmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);

// silu(gate) * up for same-shaped, same-dtype CUDA tensors.
bool FusedSwiGluApplies(const at::Tensor& gate, const at::Tensor& up);
at::Tensor FusedSwiGlu(const at::Tensor& gate, const at::Tensor& up);

}  // namespace squeeze
