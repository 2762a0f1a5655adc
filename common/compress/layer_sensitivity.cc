#include "common/compress/layer_sensitivity.h"

#include <c10/core/GradMode.h>

#include "absl/strings/str_cat.h"

namespace squeeze {

double OutputError(const at::Tensor& weight, const at::Tensor& quantized,
                   const at::Tensor& hessian) {
  c10::NoGradGuard no_grad;
  const at::Tensor w = weight.to(at::kFloat);
  const at::Tensor dw = w - quantized.to(w.device(), at::kFloat);
  return at::sum(at::matmul(dw, hessian.to(w.device(), at::kFloat)) * dw).item<double>();
}

absl::StatusOr<double> QuantizationSensitivity(const at::Tensor& weight, const at::Tensor& hessian,
                                               const QuantSpec& spec) {
  auto errors = ErrorByWidth(weight, hessian, {spec.bits}, spec);
  if (!errors.ok()) return errors.status();
  return errors->at(spec.bits);
}

absl::StatusOr<std::map<int, double>> ErrorByWidth(const at::Tensor& weight,
                                                   const at::Tensor& hessian,
                                                   const std::vector<int>& bits,
                                                   const QuantSpec& base,
                                                   const GptqSolver* solver) {
  c10::NoGradGuard no_grad;
  if (weight.dim() != 2 || hessian.dim() != 2 || hessian.size(0) != weight.size(1) ||
      hessian.size(1) != weight.size(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sensitivity: a [", weight.size(0), ", ", weight.size(1),
                     "] weight needs an [in, in] Hessian, got ", hessian.dim() == 2 ? "" : "not ",
                     "2-D [", hessian.size(0), ", ", hessian.dim() > 1 ? hessian.size(1) : 0, "]"));
  }
  const at::Tensor w = weight.to(at::kFloat);
  const at::Tensor h = hessian.to(w.device(), at::kFloat);
  std::map<int, double> out;
  for (int b : bits) {
    at::Tensor quantized;
    if (solver != nullptr) {
      auto r = solver->Solve(w, b);
      if (!r.ok()) return r.status();
      quantized = r->weight.Dequantize();
    } else {
      QuantSpec spec = base;
      spec.bits = b;
      auto r = QuantizeRtn(w, spec);
      if (!r.ok()) return r.status();
      quantized = r->Dequantize();
    }
    out[b] = OutputError(w, quantized, h);
  }
  return out;
}

}  // namespace squeeze
