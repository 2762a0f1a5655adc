#include "common/compress/scale_folding.h"

namespace squeeze {

void FoldIntoNorm(const LlamaConfig& c, at::Tensor& norm, const at::Tensor& s) {
  const at::Tensor sd = s.to(norm.device(), at::kFloat);
  at::Tensor w = norm.to(at::kFloat);
  w = c.norm_plus_one() ? (w + 1.0) / sd - 1.0 : w / sd;
  norm = w.to(norm.scalar_type());
}

void ScaleInputs(Linear& linear, const at::Tensor& s) {
  linear.weight =
      (linear.weight.to(at::kFloat) * s.to(linear.weight.device())).to(linear.weight.scalar_type());
}

void ScaleOutputs(Linear& linear, const at::Tensor& s) {
  const at::Tensor sd = s.to(linear.weight.device());
  linear.weight = (linear.weight.to(at::kFloat) / sd.unsqueeze(1)).to(linear.weight.scalar_type());
  if (linear.bias.defined())
    linear.bias = (linear.bias.to(at::kFloat) / sd).to(linear.bias.scalar_type());
}

at::Tensor& MlpInputNorm(const LlamaConfig& c, DecoderLayer& layer) {
  return c.sandwich_norms() ? layer.pre_feedforward_layernorm : layer.post_attention_layernorm;
}

}  // namespace squeeze
