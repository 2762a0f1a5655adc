#include "common/compress/layer_sensitivity.h"

#include <c10/core/GradMode.h>

#include "absl/strings/str_cat.h"

namespace squeeze {

absl::StatusOr<double> QuantizationSensitivity(const at::Tensor& weight, const at::Tensor& hessian,
                                               const QuantSpec& spec) {
  c10::NoGradGuard no_grad;
  if (weight.dim() != 2 || hessian.dim() != 2 || hessian.size(0) != weight.size(1) ||
      hessian.size(1) != weight.size(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sensitivity: a [", weight.size(0), ", ", weight.size(1),
                     "] weight needs an [in, in] Hessian, got ", hessian.dim() == 2 ? "" : "not ",
                     "2-D [", hessian.size(0), ", ", hessian.dim() > 1 ? hessian.size(1) : 0, "]"));
  }
  const at::Tensor w = weight.to(at::kFloat);
  auto q = QuantizeRtn(w, spec);
  if (!q.ok()) return q.status();
  const at::Tensor dw = w - q->Dequantize().to(w.device());
  const at::Tensor h = hessian.to(w.device(), at::kFloat);
  return at::sum(at::matmul(dw, h) * dw).item<double>();
}

absl::StatusOr<std::vector<BitChoice>> WidthCandidates(const at::Tensor& weight,
                                                       const at::Tensor& hessian,
                                                       const std::vector<int>& bits,
                                                       const QuantSpec& base) {
  std::vector<BitChoice> out;
  for (int b : bits) {
    QuantSpec spec = base;
    spec.bits = b;
    auto sensitivity = QuantizationSensitivity(weight, hessian, spec);
    if (!sensitivity.ok()) return sensitivity.status();
    out.push_back({b, BitsPerWeight(spec, weight.size(1)) * static_cast<double>(weight.numel()),
                   *sensitivity});
  }
  return out;
}

}  // namespace squeeze
