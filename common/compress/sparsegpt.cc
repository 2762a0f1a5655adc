// SparseGPT (Frantar & Alistarh, 2023, "SparseGPT: Massive Language Models Can Be Accurately
// Pruned in One-Shot"), on the factorization GptqSolver::Prepare makes: the upper Cholesky factor
// U of the damped inverse Hessian. Column j's pruned (or rounded) weights leave an error
// e = (w - q) / U_jj that the columns after it absorb as w_k -= e * U_jk, the optimal update of
// the remaining weights for that column (the OBS update, in GPTQ's lazy-block form).
#include <c10/core/GradMode.h>

#include "absl/strings/str_cat.h"
#include "common/compress/gptq.h"
#ifdef SQUEEZE_HAS_CUDA_KERNELS
#include "common/compress/gptq_cuda.h"
#endif

namespace squeeze {

absl::StatusOr<SparseSolveResult> GptqSolver::SolveSparse(const at::Tensor& weight,
                                                          const SparsityRule& rule, bool quantize,
                                                          int bits) const {
  c10::NoGradGuard no_grad;
  GptqOptions o = options_;
  o.quant.bits = bits;
  if (o.act_order)
    return absl::InvalidArgumentError("act_order: SparseGPT keeps the columns in their order");
  if (auto s = CheckWeight(weight); !s.ok()) return s;
  const int64_t rows = weight.size(0), cols = weight.size(1);
  if (quantize) {
    if (auto s = ValidateGptqOptions(o, cols); !s.ok()) return s;
  }
  if (!(rule.sparsity >= 0.0 && rule.sparsity < 1.0))
    return absl::InvalidArgumentError("sparsity: must be in [0, 1)");
  if (rule.n > 0 && (rule.m <= rule.n || cols % rule.m != 0))
    return absl::InvalidArgumentError(absl::StrCat(
        "pattern ", rule.n, ":", rule.m, ": needs n < m and inputs (", cols, ") a multiple of m"));
  if (rule.keep.defined() && rule.keep.sizes() != weight.sizes())
    return absl::InvalidArgumentError("keep: must have the weight's shape");
  const double maxq = static_cast<double>((1 << o.quant.bits) - 1);
  const int64_t group = o.quant.group_size == -1 ? cols : o.quant.group_size;
  const int64_t groups = cols / group;

  at::Tensor w = WorkingCopy(weight);
  // pruned[i][j]: weight (i, j) is zero in the result.
  at::Tensor pruned = rule.keep.defined() ? rule.keep.to(w.device()).logical_not()
                                          : at::zeros({rows, cols}, w.options().dtype(at::kBool));
  at::Tensor codes =
      quantize ? at::zeros({rows, cols}, w.options().dtype(at::kByte)) : at::Tensor();
  at::Tensor scales = at::zeros({rows, groups}, w.options());
  at::Tensor zeros = at::zeros({rows, groups}, w.options());
  at::Tensor losses = at::zeros({rows}, w.options());
  const at::Tensor diag = hinv_.diagonal();
#ifdef SQUEEZE_HAS_CUDA_KERNELS
  // On CUDA with GPTQ's block of 128, each block is one launch of GPTQ's fused kernel, which
  // also chooses n:m masks (m of 4 or 8) as it reaches them; unstructured and fixed masks are
  // chosen here before the block starts.
  // n:m masks on top of fixed zeros are chosen by the host loop.
  const bool fused = w.is_cuda() && o.block_size == kGptqCudaBlock &&
                     (rule.n == 0 || (!rule.keep.defined() && (rule.m == 4 || rule.m == 8)));
  const at::Tensor group_of_dev =
      fused
          ? at::tensor(group_of_, at::TensorOptions().dtype(at::kLong)).to(at::kInt).to(w.device())
          : at::Tensor();
  at::Tensor err_block = fused ? at::empty({rows, kGptqCudaBlock}, w.options()) : at::Tensor();
  at::Tensor codes_arg = quantize ? codes : at::Tensor();
#endif

  for (int64_t i1 = 0; i1 < cols; i1 += o.block_size) {
    const int64_t i2 = std::min(i1 + o.block_size, cols), count = i2 - i1;
    at::Tensor w1 = w.slice(1, i1, i2).clone();
    at::Tensor err1 = at::zeros_like(w1);
    at::Tensor pruned1 = pruned.slice(1, i1, i2);
    const at::Tensor hinv1 = hinv_.slice(0, i1, i2).slice(1, i1, i2);
    const at::Tensor d1 = diag.slice(0, i1, i2);
    if (rule.n == 0 && rule.sparsity > 0.0) {
      // The block's least salient weights, over all its rows; weights `keep` already drops count
      // first (they rank below every other), so the zeros only grow.
      at::Tensor saliency = (w1.pow(2) / d1.pow(2).unsqueeze(0)).flatten();
      const at::Tensor fixed = pruned1.flatten();
      saliency.masked_fill_(fixed, -1.0);
      const int64_t k =
          std::max(static_cast<int64_t>(static_cast<double>(saliency.numel()) * rule.sparsity),
                   fixed.sum().item<int64_t>());
      if (k > 0) {
        const at::Tensor chosen = std::get<1>(at::topk(saliency, k, 0, /*largest=*/false));
        at::Tensor flat = at::zeros({rows * count}, pruned.options());
        flat.index_fill_(0, chosen, true);
        pruned1.logical_or_(flat.view({rows, count}));
      }
    }
    // Group parameters from the kept weights as the block starts (pruned ones count as 0).
    if (quantize) {
      for (int64_t col = (i1 + group - 1) / group * group; col < i2; col += group) {
        const at::Tensor part =
            w.slice(1, col, col + group).masked_fill(pruned.slice(1, col, col + group), 0.0);
        auto [scale, zero] = ComputeScaleZero(part, o.quant);
        scales.select(1, col / group).copy_(scale);
        zeros.select(1, col / group).copy_(zero);
      }
    }
#ifdef SQUEEZE_HAS_CUDA_KERNELS
    if (fused) {
      SparseBlockOptions sparse;
      sparse.pruned = pruned;
      sparse.n = rule.n;
      sparse.m = rule.m;
      sparse.quantize = quantize;
      GptqSolveBlockCuda(w, hinv_, i1, count, scales, zeros, group_of_dev, maxq, codes_arg,
                         err_block, losses, sparse);
      if (i2 < cols)
        w.slice(1, i2).sub_(
            err_block.slice(1, 0, count).matmul(hinv_.slice(0, i1, i2).slice(1, i2)));
      continue;
    }
#endif
    for (int64_t i = 0; i < count; ++i) {
      const int64_t col = i1 + i;
      if (rule.n > 0 && i % rule.m == 0) {
        // n of the next m inputs of each row, the least salient; fixed zeros first.
        const at::Tensor saliency =
            (w1.slice(1, i, i + rule.m).pow(2) / d1.slice(0, i, i + rule.m).pow(2).unsqueeze(0))
                .masked_fill(pruned1.slice(1, i, i + rule.m), -1.0);
        const at::Tensor chosen = std::get<1>(at::topk(saliency, rule.n, 1, /*largest=*/false));
        pruned1.slice(1, i, i + rule.m).scatter_(1, chosen, true);
      }
      at::Tensor wc = w1.select(1, i);
      const at::Tensor d = hinv1[i][i];
      at::Tensor q = wc.masked_fill(pruned1.select(1, i), 0.0);
      if (quantize) {
        const int64_t g = col / group;
        const at::Tensor scale = scales.select(1, g), zero = zeros.select(1, g);
        at::Tensor c = at::clamp(at::round(q / scale) + zero, 0.0, maxq);
        // A pruned weight is stored as the zero point: exactly 0 once dequantized.
        c = at::where(pruned1.select(1, i), zero, c);
        codes.select(1, col).copy_(c);
        q = scale * (c - zero);
      }
      losses += (wc - q).pow(2) / d.pow(2) / 2;
      const at::Tensor err = (wc - q) / d;
      w1.slice(1, i).sub_(err.unsqueeze(1).matmul(hinv1[i].slice(0, i).unsqueeze(0)));
      w1.select(1, i).copy_(q);
      err1.select(1, i).copy_(err);
    }
    w.slice(1, i1, i2).copy_(w1);
    if (i2 < cols) w.slice(1, i2).sub_(err1.matmul(hinv_.slice(0, i1, i2).slice(1, i2)));
  }

  SparseSolveResult result;
  result.weight = w;
  result.keep = pruned.logical_not();
  result.loss = losses.sum().item<double>();
  if (quantize) {
    result.quantized.spec = o.quant;
    result.quantized.codes = codes;
    result.quantized.scales = scales;
    result.quantized.zeros = zeros;
    result.quantized.g_idx =
        at::div(at::arange(cols, w.options().dtype(at::kLong)), group, "floor").to(at::kInt);
  }
  return result;
}

}  // namespace squeeze
