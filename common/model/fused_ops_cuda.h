// Raw CUDA launchers for the fused layer ops (built only with a CUDA libtorch); the autograd
// wrappers are in fused_ops.h. All tensors contiguous on one CUDA device, one dtype (float32,
// bfloat16 or float16) unless noted.
#pragma once

#include <ATen/ATen.h>

namespace squeeze {

// Largest hidden size the RMSNorm kernels handle (columns held in registers in the backward).
inline constexpr int64_t kFusedRmsNormMaxHidden = 8192;

// x [rows, hidden], weight [hidden] -> y [rows, hidden], rstd [rows] (float32).
void RmsNormForwardCuda(const at::Tensor& x, const at::Tensor& weight, double eps, at::Tensor& y,
                        at::Tensor& rstd);
// dx [rows, hidden]; dweight_partial [blocks, hidden] float32, summed over blocks by the caller.
// Returns the number of row blocks (dweight_partial's first dimension) for `rows`.
int64_t RmsNormBackwardBlocks(int64_t rows);
void RmsNormBackwardCuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
                         const at::Tensor& rstd, at::Tensor& dx, at::Tensor& dweight_partial);

// out = silu(gate) * up, elementwise.
void SwiGluForwardCuda(const at::Tensor& gate, const at::Tensor& up, at::Tensor& out);
void SwiGluBackwardCuda(const at::Tensor& dout, const at::Tensor& gate, const at::Tensor& up,
                        at::Tensor& dgate, at::Tensor& dup);

}  // namespace squeeze
