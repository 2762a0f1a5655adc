#include "common/compress/gptq.h"

#include <c10/core/GradMode.h>

#include <cmath>

#include "absl/strings/str_cat.h"

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

absl::StatusOr<GptqResult> QuantizeGptq(const at::Tensor& weight, const at::Tensor& hessian,
                                        const GptqOptions& o) {
  c10::NoGradGuard no_grad;
  if (weight.dim() != 2) return absl::InvalidArgumentError("weight: expected [out, in]");
  const int64_t rows = weight.size(0), cols = weight.size(1);
  if (hessian.dim() != 2 || hessian.size(0) != cols || hessian.size(1) != cols) {
    return absl::InvalidArgumentError(absl::StrCat("hessian: expected [", cols, ", ", cols, "]"));
  }
  if (auto s = ValidateGptqOptions(o, cols); !s.ok()) return s;
  if (!at::isfinite(weight).all().item<bool>())
    return absl::InvalidArgumentError("weight: holds NaN or Inf");
  if (!at::isfinite(hessian).all().item<bool>()) {
    return absl::InvalidArgumentError(
        "hessian: holds NaN or Inf (non-finite calibration activations)");
  }
  const double maxq = static_cast<double>((1 << o.quant.bits) - 1);
  const int64_t group = o.quant.group_size == -1 ? cols : o.quant.group_size;
  const int64_t groups = cols / group;

  at::Tensor w = weight.to(at::kFloat).clone();
  at::Tensor h = hessian.to(w.device(), at::kFloat).clone();
  // Inputs that never fire carry no information: fix their diagonal and drop their weights.
  at::Tensor dead = h.diagonal() == 0;
  h.diagonal().masked_fill_(dead, 1.0);
  w.masked_fill_(dead.unsqueeze(0), 0.0);

  // Static groups: parameters from the unpermuted weight, one set per group of original columns.
  std::vector<std::pair<at::Tensor, at::Tensor>> static_params;
  if (o.static_groups) {
    for (int64_t g = 0; g < groups; ++g) {
      static_params.push_back(ComputeScaleZero(w.slice(1, g * group, (g + 1) * group), o.quant));
    }
  }
  at::Tensor perm, invperm;
  if (o.act_order) {
    perm = at::argsort(h.diagonal(), /*dim=*/0, /*descending=*/true);
    w = w.index_select(1, perm);
    h = h.index_select(0, perm).index_select(1, perm);
    invperm = at::argsort(perm);
  }
  auto hinv_or = InverseCholesky(h, o.damp);
  if (!hinv_or.ok()) return hinv_or.status();
  const at::Tensor hinv = hinv_or->first;

  at::Tensor codes = at::zeros({rows, cols}, w.options());
  at::Tensor scales = at::zeros({rows, groups}, w.options());
  at::Tensor zeros = at::zeros({rows, groups}, w.options());
  at::Tensor losses = at::zeros({rows}, w.options());
  at::Tensor scale, zero;
  // Group of each column in processing (possibly permuted) order.
  std::vector<int64_t> group_of(cols);

  for (int64_t i1 = 0; i1 < cols; i1 += o.block_size) {
    const int64_t i2 = std::min(i1 + o.block_size, cols), count = i2 - i1;
    at::Tensor w1 = w.slice(1, i1, i2).clone();
    at::Tensor err1 = at::zeros_like(w1);
    at::Tensor hinv1 = hinv.slice(0, i1, i2).slice(1, i1, i2);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t col = i1 + i;
      at::Tensor wc = w1.select(1, i);
      const at::Tensor d = hinv1[i][i];
      int64_t g;
      if (o.static_groups) {
        g = (o.act_order ? perm[col].item<int64_t>() : col) / group;
        std::tie(scale, zero) = static_params[g];
      } else {
        g = col / group;
        // Parameters of a group come from its columns as they are when the group starts (with the
        // updates of earlier blocks, not yet those of this block), as in the reference.
        if (col % group == 0)
          std::tie(scale, zero) = ComputeScaleZero(w.slice(1, col, col + group), o.quant);
      }
      group_of[col] = g;
      if (col % group == 0 || o.static_groups) {
        scales.select(1, g).copy_(scale);
        zeros.select(1, g).copy_(zero);
      }
      auto [q, deq] = QuantizeColumn(wc, scale, zero, maxq);
      codes.select(1, col).copy_(q);
      losses += (wc - deq).pow(2) / d.pow(2) / 2;
      at::Tensor err = (wc - deq) / d;
      w1.slice(1, i).sub_(err.unsqueeze(1).matmul(hinv1[i].slice(0, i).unsqueeze(0)));
      err1.select(1, i).copy_(err);
    }
    if (i2 < cols) w.slice(1, i2).sub_(err1.matmul(hinv.slice(0, i1, i2).slice(1, i2)));
  }

  GptqResult result;
  result.loss = losses.sum().item<double>();
  result.damp_used = hinv_or->second;
  result.weight.spec = o.quant;
  at::Tensor g_idx = at::tensor(group_of, at::TensorOptions().dtype(at::kLong)).to(at::kInt);
  if (o.act_order) {
    codes = codes.index_select(1, invperm);
    g_idx = g_idx.index_select(0, invperm.to(at::kCPU));
  }
  result.weight.codes = codes.to(at::kByte);
  result.weight.scales = scales;
  result.weight.zeros = zeros;
  result.weight.g_idx = g_idx.to(codes.device());
  return result;
}

HessianAccumulator::HessianAccumulator(int64_t in_features, at::Device device)
    : h_(at::zeros({in_features, in_features},
                   at::TensorOptions().dtype(at::kFloat).device(device))) {}

void HessianAccumulator::Add(const at::Tensor& inputs) {
  c10::NoGradGuard no_grad;
  at::Tensor x = inputs.reshape({-1, inputs.size(-1)}).to(h_.device(), at::kFloat);
  const int64_t m = x.size(0);
  if (m == 0) return;
  // Running mean of 2 x x^T keeps the scale independent of the number of samples.
  h_.mul_(static_cast<double>(n_) / (n_ + m));
  n_ += m;
  h_.addmm_(x.t(), x, /*beta=*/1.0, /*alpha=*/2.0 / n_);
}

}  // namespace squeeze
