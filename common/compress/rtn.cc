#include "common/compress/rtn.h"

#include "absl/strings/str_cat.h"

namespace squeeze {

absl::Status ValidateQuantSpec(const QuantSpec& spec, int64_t in_features) {
  if (spec.bits != 2 && spec.bits != 3 && spec.bits != 4 && spec.bits != 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("bits: must be one of 2, 3, 4, 8, got ", spec.bits));
  }
  if (spec.group_size != -1 && (spec.group_size <= 0 || in_features % spec.group_size != 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("group_size: must be -1 or a positive divisor of in_features (", in_features,
                     "), got ", spec.group_size));
  }
  return absl::OkStatus();
}

std::pair<at::Tensor, at::Tensor> ComputeScaleZero(const at::Tensor& w, const QuantSpec& spec) {
  const double maxq = static_cast<double>((1 << spec.bits) - 1);
  at::Tensor xmin = at::clamp_max(std::get<0>(w.min(1)), 0.0);
  at::Tensor xmax = at::clamp_min(std::get<0>(w.max(1)), 0.0);
  if (spec.symmetric) {
    xmax = at::maximum(xmin.abs(), xmax);
    xmin = at::where(xmin < 0, -xmax, xmin);
  }
  // An all-zero row would give scale 0; any range works, pick [-1, 1].
  at::Tensor flat = (xmin == 0).logical_and(xmax == 0);
  xmin = at::where(flat, at::full_like(xmin, -1.0), xmin);
  xmax = at::where(flat, at::full_like(xmax, 1.0), xmax);
  // Scales are stored as float16 (the GPTQ layout): quantize with the value that will be stored,
  // so that the exported model is exactly the one whose errors later columns and layers were
  // compensated for, and a layer rebuilt from its checkpoint is bit-identical. (A scale below
  // float16's smallest subnormal keeps that.)
  at::Tensor scale = ((xmax - xmin) / maxq).to(at::kHalf).to(at::kFloat).clamp_min(5.9604645e-8);
  at::Tensor zero =
      spec.symmetric ? at::full_like(scale, (maxq + 1) / 2) : at::round(-xmin / scale);
  return {scale, zero};
}

at::Tensor QuantizedWeight::Dequantize() const {
  const int64_t out = codes.size(0), in = codes.size(1);
  if (g_idx.defined()) {
    at::Tensor idx = g_idx.to(codes.device(), at::kLong);
    return (codes.to(at::kFloat) - zeros.index_select(1, idx)) * scales.index_select(1, idx);
  }
  const int64_t group = spec.group_size == -1 ? in : spec.group_size;
  at::Tensor q = codes.to(at::kFloat).view({out, in / group, group});
  return ((q - zeros.unsqueeze(-1)) * scales.unsqueeze(-1)).view({out, in});
}

double BitsPerWeight(const QuantSpec& spec, int64_t in_features) {
  const int64_t group = spec.group_size == -1 ? in_features : spec.group_size;
  return spec.bits + (16.0 + spec.bits) / static_cast<double>(group);
}

double QuantizedWeight::BitsPerWeight() const {
  return squeeze::BitsPerWeight(spec, codes.size(1));
}

absl::StatusOr<QuantizedWeight> QuantizeRtn(const at::Tensor& weight, const QuantSpec& spec) {
  if (weight.dim() != 2) return absl::InvalidArgumentError("weight: expected a 2-D tensor");
  if (auto s = ValidateQuantSpec(spec, weight.size(1)); !s.ok()) return s;
  const int64_t out = weight.size(0), in = weight.size(1);
  const int64_t group = spec.group_size == -1 ? in : spec.group_size;
  const double maxq = static_cast<double>((1 << spec.bits) - 1);
  at::Tensor w = weight.detach().to(at::kFloat).reshape({out * (in / group), group});
  auto [scale, zero] = ComputeScaleZero(w, spec);
  at::Tensor q = at::clamp(at::round(w / scale.unsqueeze(1)) + zero.unsqueeze(1), 0.0, maxq);
  QuantizedWeight result;
  result.spec = spec;
  result.codes = q.to(at::kByte).view({out, in});
  result.scales = scale.view({out, in / group});
  result.zeros = zero.view({out, in / group});
  return result;
}

}  // namespace squeeze
