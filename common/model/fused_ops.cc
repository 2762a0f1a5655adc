#include "common/model/fused_ops.h"

#include <torch/csrc/autograd/custom_function.h>

#include "common/model/fused_ops_cuda.h"

namespace squeeze {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool FloatingDtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kBFloat16 || t == at::kHalf;
}

class RmsNormFunction : public torch::autograd::Function<RmsNormFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            double eps) {
    const int64_t hidden = x.size(-1);
    const at::Tensor x2 = x.reshape({-1, hidden}).contiguous();
    const at::Tensor w = weight.contiguous();
    at::Tensor y = at::empty_like(x2);
    at::Tensor rstd = at::empty({x2.size(0)}, x2.options().dtype(at::kFloat));
    RmsNormForwardCuda(x2, w, eps, y, rstd);
    ctx->save_for_backward({x2, w, rstd});
    ctx->saved_data["shape"] = x.sizes().vec();
    return y.view(x.sizes());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x2 = saved[0], &w = saved[1], &rstd = saved[2];
    const at::Tensor dy = grad_outputs[0].reshape(x2.sizes()).to(x2.scalar_type()).contiguous();
    at::Tensor dx = at::empty_like(x2);
    at::Tensor partial =
        at::empty({RmsNormBackwardBlocks(x2.size(0)), x2.size(1)}, x2.options().dtype(at::kFloat));
    RmsNormBackwardCuda(dy, x2, w, rstd, dx, partial);
    const auto shape = ctx->saved_data["shape"].toIntVector();
    return {dx.view(shape), partial.sum(0).to(w.scalar_type()), at::Tensor()};
  }
};

class SwiGluFunction : public torch::autograd::Function<SwiGluFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gate, const at::Tensor& up) {
    const at::Tensor g = gate.contiguous(), u = up.contiguous();
    at::Tensor out = at::empty_like(g);
    SwiGluForwardCuda(g, u, out);
    ctx->save_for_backward({g, u});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &g = saved[0], &u = saved[1];
    const at::Tensor dout = grad_outputs[0].to(g.scalar_type()).contiguous();
    at::Tensor dgate = at::empty_like(g), dup = at::empty_like(u);
    SwiGluBackwardCuda(dout, g, u, dgate, dup);
    return {dgate, dup};
  }
};

}  // namespace

bool FusedRmsNormApplies(const at::Tensor& x, const at::Tensor& weight) {
  return x.is_cuda() && weight.device() == x.device() && FloatingDtype(x.scalar_type()) &&
         weight.scalar_type() == x.scalar_type() && weight.dim() == 1 && x.dim() >= 1 &&
         weight.size(0) == x.size(-1) && x.size(-1) <= kFusedRmsNormMaxHidden;
}

at::Tensor FusedRmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  return RmsNormFunction::apply(x, weight, eps);
}

bool FusedSwiGluApplies(const at::Tensor& gate, const at::Tensor& up) {
  return gate.is_cuda() && up.device() == gate.device() && FloatingDtype(gate.scalar_type()) &&
         up.scalar_type() == gate.scalar_type() && up.sizes() == gate.sizes();
}

at::Tensor FusedSwiGlu(const at::Tensor& gate, const at::Tensor& up) {
  return SwiGluFunction::apply(gate, up);
}

}  // namespace squeeze
