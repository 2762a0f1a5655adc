// The fused distillation loss as one CUDA kernel (built only with a CUDA libtorch): a block per
// row of logits reads the student's and the teacher's row twice (online softmax statistics, then
// the gradient) and writes the gradient once, in the logits' dtype. See FusedDistillLoss in
// distill.h for the formula.
#pragma once

#include <ATen/ATen.h>

namespace squeeze {

// student [rows, vocab] and teacher [rows, vocab] (same dtype; teacher ignored when alpha is 0),
// labels [rows] int64, all contiguous on one CUDA device. Writes grad [rows, vocab] (student's
// dtype; the gradient of mean-over-rows loss times `grad_scale * rows`), and the per-row
// cross-entropy and T^2-scaled KL into ce_rows and kd_rows [rows] float32.
void DistillLossRowsCuda(const at::Tensor& student, const at::Tensor& teacher,
                         const at::Tensor& labels, double temperature, double alpha,
                         double grad_scale, at::Tensor& grad, at::Tensor& ce_rows,
                         at::Tensor& kd_rows);

}  // namespace squeeze
