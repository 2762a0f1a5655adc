#include "common/compress/gptq.h"

#include <c10/core/GradMode.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#ifdef SQUEEZE_HAS_CUDA_KERNELS
#include "common/compress/gptq_cuda.h"
#endif

namespace squeeze {
namespace {

// Quantize one column: codes and the dequantized values.
std::pair<at::Tensor, at::Tensor> QuantizeColumn(const at::Tensor& w, const at::Tensor& scale,
                                                 const at::Tensor& zero, double maxq) {
  at::Tensor q = at::clamp(at::round(w / scale) + zero, 0.0, maxq);
  return {q, scale * (q - zero)};
}

// Upper Cholesky factor of H^-1 (H damped); retries with 10x the damping when H is not positive
// definite, as the reference implementations do.
absl::StatusOr<std::pair<at::Tensor, double>> InverseCholesky(at::Tensor h, double damp) {
  const at::Tensor mean_diag = h.diagonal().mean();
  const int64_t n = h.size(0);
  at::Tensor eye = at::eye(n, h.options());
  for (int attempt = 0; attempt < 10; ++attempt, damp *= 10) {
    at::Tensor damped = h + eye * (mean_diag * damp);
    auto [l, info] = at::linalg_cholesky_ex(damped);
    if (info.item<int64_t>() != 0) continue;
    at::Tensor inv = at::cholesky_inverse(l);
    auto [u, info2] = at::linalg_cholesky_ex(inv, /*upper=*/true);
    if (info2.item<int64_t>() != 0) continue;
    return std::make_pair(u, damp);
  }
  return absl::FailedPreconditionError(
      "hessian: not positive definite even after raising the damping 10 times (are the calibration "
      "inputs all zero?)");
}

}  // namespace

absl::Status ValidateGptqOptions(const GptqOptions& o, int64_t in_features) {
  if (auto s = ValidateQuantSpec(o.quant, in_features); !s.ok()) return s;
  if (!(o.damp > 0 && o.damp < 1)) return absl::InvalidArgumentError("damp: must be in (0, 1)");
  if (o.block_size <= 0) return absl::InvalidArgumentError("block_size: must be positive");
  if (o.static_groups && !o.act_order) {
    return absl::InvalidArgumentError("static_groups: only meaningful with act_order");
  }
  return absl::OkStatus();
}

absl::StatusOr<GptqSolver> GptqSolver::Prepare(const at::Tensor& hessian, const GptqOptions& o) {
  c10::NoGradGuard no_grad;
  if (hessian.dim() != 2 || hessian.size(0) != hessian.size(1))
    return absl::InvalidArgumentError("hessian: expected a square [in, in] matrix");
  const int64_t cols = hessian.size(0);
  if (auto s = ValidateGptqOptions(o, cols); !s.ok()) return s;
  if (!at::isfinite(hessian).all().item<bool>()) {
    return absl::InvalidArgumentError(
        "hessian: holds NaN or Inf (non-finite calibration activations)");
  }
  GptqSolver solver;
  solver.options_ = o;
  at::Tensor h = hessian.to(at::kFloat).clone();
  // Inputs that never fire carry no information: fix their diagonal and drop their weights.
  solver.dead_ = h.diagonal() == 0;
  h.diagonal().masked_fill_(solver.dead_, 1.0);
  const int64_t group = o.quant.group_size == -1 ? cols : o.quant.group_size;
  solver.group_of_.resize(cols);
  std::vector<int64_t> perm_host(cols);
  for (int64_t c = 0; c < cols; ++c) perm_host[c] = c;
  if (o.act_order) {
    solver.perm_ = at::argsort(h.diagonal(), /*dim=*/0, /*descending=*/true);
    h = h.index_select(0, solver.perm_).index_select(1, solver.perm_);
    solver.invperm_ = at::argsort(solver.perm_);
    const at::Tensor p = solver.perm_.to(at::kCPU, at::kLong).contiguous();
    std::copy(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + cols, perm_host.begin());
  }
  // Static groups keep the groups of the original columns; otherwise groups follow the
  // processing order.
  for (int64_t c = 0; c < cols; ++c)
    solver.group_of_[c] = (o.static_groups ? perm_host[c] : c) / group;
  auto hinv = InverseCholesky(h, o.damp);
  if (!hinv.ok()) return hinv.status();
  solver.hinv_ = hinv->first.contiguous();
  solver.damp_used_ = hinv->second;
  return solver;
}

absl::Status GptqSolver::CheckWeight(const at::Tensor& weight) const {
  if (weight.dim() != 2) return absl::InvalidArgumentError("weight: expected [out, in]");
  if (hinv_.size(0) != weight.size(1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weight: ", weight.size(1), " inputs, but the Hessian is for ", hinv_.size(0)));
  }
  if (!at::isfinite(weight).all().item<bool>())
    return absl::InvalidArgumentError("weight: holds NaN or Inf");
  return absl::OkStatus();
}

at::Tensor GptqSolver::WorkingCopy(const at::Tensor& weight) const {
  at::Tensor w = weight.to(hinv_.device(), at::kFloat).clone();
  w.masked_fill_(dead_.unsqueeze(0), 0.0);
  return w;
}

absl::StatusOr<GptqResult> GptqSolver::Solve(const at::Tensor& weight) const {
  return Solve(weight, options_.quant.bits);
}

absl::StatusOr<GptqResult> GptqSolver::Solve(const at::Tensor& weight, int bits) const {
  c10::NoGradGuard no_grad;
  GptqOptions o = options_;
  o.quant.bits = bits;
  if (auto s = ValidateGptqOptions(o, hinv_.size(0)); !s.ok()) return s;
  if (auto s = CheckWeight(weight); !s.ok()) return s;
  const int64_t rows = weight.size(0), cols = weight.size(1);
  const double maxq = static_cast<double>((1 << o.quant.bits) - 1);
  const int64_t group = o.quant.group_size == -1 ? cols : o.quant.group_size;
  const int64_t groups = cols / group;

  at::Tensor w = WorkingCopy(weight);
  at::Tensor scales = at::zeros({rows, groups}, w.options());
  at::Tensor zeros = at::zeros({rows, groups}, w.options());
  // Static groups: parameters from the unpermuted weight, one set per group of original columns.
  if (o.static_groups) {
    for (int64_t g = 0; g < groups; ++g) {
      auto [scale, zero] = ComputeScaleZero(w.slice(1, g * group, (g + 1) * group), o.quant);
      scales.select(1, g).copy_(scale);
      zeros.select(1, g).copy_(zero);
    }
  }
  if (o.act_order) w = w.index_select(1, perm_).contiguous();

  at::Tensor codes = at::zeros({rows, cols}, w.options().dtype(at::kByte));
  at::Tensor losses = at::zeros({rows}, w.options());
  const at::Tensor group_of =
      at::tensor(group_of_, at::TensorOptions().dtype(at::kLong)).to(at::kInt);
#ifdef SQUEEZE_HAS_CUDA_KERNELS
  const bool fused = w.is_cuda() && o.block_size == kGptqCudaBlock;
  const at::Tensor group_of_dev = fused ? group_of.to(w.device()) : at::Tensor();
  at::Tensor err_block = fused ? at::empty({rows, kGptqCudaBlock}, w.options()) : at::Tensor();
#endif

  for (int64_t i1 = 0; i1 < cols; i1 += o.block_size) {
    const int64_t i2 = std::min(i1 + o.block_size, cols), count = i2 - i1;
    // Parameters of a group come from its columns as they are when its block starts (with the
    // updates of earlier blocks, not yet those of this block), as in the reference.
    if (!o.static_groups) {
      for (int64_t col = (i1 + group - 1) / group * group; col < i2; col += group) {
        auto [scale, zero] = ComputeScaleZero(w.slice(1, col, col + group), o.quant);
        scales.select(1, col / group).copy_(scale);
        zeros.select(1, col / group).copy_(zero);
      }
    }
    at::Tensor err1;
#ifdef SQUEEZE_HAS_CUDA_KERNELS
    if (fused) {
      GptqSolveBlockCuda(w, hinv_, i1, count, scales, zeros, group_of_dev, maxq, codes, err_block,
                         losses);
      err1 = err_block.slice(1, 0, count);
    }
#endif
    if (!err1.defined()) {
      at::Tensor w1 = w.slice(1, i1, i2).clone();
      err1 = at::zeros_like(w1);
      const at::Tensor hinv1 = hinv_.slice(0, i1, i2).slice(1, i1, i2);
      for (int64_t i = 0; i < count; ++i) {
        const int64_t col = i1 + i;
        at::Tensor wc = w1.select(1, i);
        const at::Tensor d = hinv1[i][i];
        const int64_t g = group_of_[col];
        auto [q, deq] = QuantizeColumn(wc, scales.select(1, g), zeros.select(1, g), maxq);
        codes.select(1, col).copy_(q);
        losses += (wc - deq).pow(2) / d.pow(2) / 2;
        at::Tensor err = (wc - deq) / d;
        w1.slice(1, i).sub_(err.unsqueeze(1).matmul(hinv1[i].slice(0, i).unsqueeze(0)));
        err1.select(1, i).copy_(err);
      }
    }
    if (i2 < cols) {
      at::Tensor rest = w.slice(1, i2);
      rest.sub_(err1.matmul(hinv_.slice(0, i1, i2).slice(1, i2)));
    }
  }

  GptqResult result;
  result.loss = losses.sum().item<double>();
  result.damp_used = damp_used_;
  result.weight.spec = o.quant;
  at::Tensor g_idx = group_of;
  if (o.act_order) {
    codes = codes.index_select(1, invperm_);
    g_idx = g_idx.index_select(0, invperm_.to(at::kCPU));
  }
  result.weight.codes = codes;
  result.weight.scales = scales;
  result.weight.zeros = zeros;
  result.weight.g_idx = g_idx.to(codes.device());
  return result;
}

absl::StatusOr<GptqResult> QuantizeGptq(const at::Tensor& weight, const at::Tensor& hessian,
                                        const GptqOptions& o) {
  if (weight.dim() != 2) return absl::InvalidArgumentError("weight: expected [out, in]");
  const int64_t cols = weight.size(1);
  if (hessian.dim() != 2 || hessian.size(0) != cols || hessian.size(1) != cols) {
    return absl::InvalidArgumentError(absl::StrCat("hessian: expected [", cols, ", ", cols, "]"));
  }
  // Prepare validates the options and the Hessian, Solve the weight.
  auto solver = GptqSolver::Prepare(hessian.to(weight.device()), o);
  if (!solver.ok()) return solver.status();
  return solver->Solve(weight);
}

HessianAccumulator::HessianAccumulator(int64_t in_features, at::Device device)
    : h_(at::zeros({in_features, in_features},
                   at::TensorOptions().dtype(at::kFloat).device(device))) {}

void HessianAccumulator::Add(const at::Tensor& inputs) {
  c10::NoGradGuard no_grad;
  const int64_t m = inputs.numel() / std::max<int64_t>(1, inputs.size(-1));
  if (m == 0) return;
#ifdef SQUEEZE_HAS_CUDA_KERNELS
  if (h_.is_cuda() && inputs.device() == h_.device() &&
      (inputs.scalar_type() == at::kBFloat16 || inputs.scalar_type() == at::kHalf)) {
    const double keep = static_cast<double>(n_) / (n_ + m);
    n_ += m;
    AccumulateGramCuda(h_, inputs.reshape({-1, inputs.size(-1)}).contiguous(), 2.0 / n_, keep);
    return;
  }
#endif
  at::Tensor x = inputs.reshape({-1, inputs.size(-1)}).to(h_.device(), at::kFloat);
  // Running mean of 2 x x^T keeps the scale independent of the number of samples.
  h_.mul_(static_cast<double>(n_) / (n_ + m));
  n_ += m;
  h_.addmm_(x.t(), x, /*beta=*/1.0, /*alpha=*/2.0 / n_);
}

}  // namespace squeeze
