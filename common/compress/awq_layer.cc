#include "common/compress/awq_layer.h"

#include <c10/core/GradMode.h>

#include <map>

namespace squeeze {
namespace {

// Divides a norm's effective scale by `s`: w / s, or for (1 + w) norms (1 + w) / s - 1.
void FoldIntoNorm(const LlamaConfig& c, at::Tensor& norm, const at::Tensor& s) {
  const at::Tensor sd = s.to(norm.device(), at::kFloat);
  at::Tensor w = norm.to(at::kFloat);
  w = c.norm_plus_one() ? (w + 1.0) / sd - 1.0 : w / sd;
  norm = w.to(norm.scalar_type());
}

// Multiplies the input columns of `linear` by `s`.
void ScaleInputs(Linear& linear, const at::Tensor& s) {
  linear.weight =
      (linear.weight.to(at::kFloat) * s.to(linear.weight.device())).to(linear.weight.scalar_type());
}

// Divides the output rows (and bias) of `linear` by `s`.
void ScaleOutputs(Linear& linear, const at::Tensor& s) {
  const at::Tensor sd = s.to(linear.weight.device());
  linear.weight = (linear.weight.to(at::kFloat) / sd.unsqueeze(1)).to(linear.weight.scalar_type());
  if (linear.bias.defined())
    linear.bias = (linear.bias.to(at::kFloat) / sd).to(linear.bias.scalar_type());
}

at::Tensor Flat(const at::Tensor& t) { return t.reshape({-1, t.size(-1)}).to(at::kFloat); }

}  // namespace

absl::StatusOr<std::vector<AwqLinear>> AwqQuantizeDecoderLayer(const LlamaConfig& c,
                                                               DecoderLayer& layer,
                                                               at::Tensor& hidden,
                                                               const RotaryTables& rope,
                                                               int64_t index, const AwqOptions& o) {
  c10::NoGradGuard no_grad;
  const at::Tensor h = hidden.to(layer.q_proj.weight.device(), at::kFloat);
  // The float layer's inputs of each group and its output.
  const at::Tensor x_qkv = layer.AttentionInput(c, h);
  const at::Tensor attention = layer.AttentionCore(c, index, x_qkv, rope);
  const at::Tensor residual = layer.AttentionResidual(c, h, layer.o_proj.Forward(attention));
  const at::Tensor x_mlp = layer.MlpInput(c, residual);
  const at::Tensor activation = layer.MlpActivation(c, x_mlp);
  const at::Tensor output = layer.MlpResidual(c, residual, layer.down_proj.Forward(activation));

  std::map<std::string, double> alpha;
  std::map<std::string, at::Tensor> inputs;  // each linear's input, after the folded scales
  // q/k/v: the attention is the block.
  {
    auto s = SearchAwqScales(Flat(x_qkv),
                             {layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight}, o,
                             [&](const std::vector<at::Tensor>& w) {
                               DecoderLayer trial = layer;
                               trial.q_proj.weight = w[0];
                               trial.k_proj.weight = w[1];
                               trial.v_proj.weight = w[2];
                               return trial.AttentionCore(c, index, x_qkv, rope);
                             });
    if (!s.ok()) return s.status();
    FoldIntoNorm(c, layer.input_layernorm, s->scales);
    for (Linear* l : {&layer.q_proj, &layer.k_proj, &layer.v_proj}) ScaleInputs(*l, s->scales);
    for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}) {
      alpha[n] = s->alpha;
      inputs[n] = Flat(x_qkv) / s->scales;
    }
  }
  // o_proj: only when v_proj's rows are its inputs one to one.
  inputs["self_attn.o_proj"] = Flat(attention);
  if (c.num_key_value_heads == c.num_attention_heads) {
    auto s = SearchAwqScales(Flat(attention), {layer.o_proj.weight}, o);
    if (!s.ok()) return s.status();
    ScaleOutputs(layer.v_proj, s->scales);
    ScaleInputs(layer.o_proj, s->scales);
    alpha["self_attn.o_proj"] = s->alpha;
    inputs["self_attn.o_proj"] = Flat(attention) / s->scales;
  }
  // gate/up: the MLP is the block.
  {
    auto s = SearchAwqScales(Flat(x_mlp), {layer.gate_proj.weight, layer.up_proj.weight}, o,
                             [&](const std::vector<at::Tensor>& w) {
                               return layer.down_proj.Forward(GatedActivation(
                                   c, at::matmul(x_mlp, w[0].t()), at::matmul(x_mlp, w[1].t())));
                             });
    if (!s.ok()) return s.status();
    FoldIntoNorm(
        c, c.sandwich_norms() ? layer.pre_feedforward_layernorm : layer.post_attention_layernorm,
        s->scales);
    for (Linear* l : {&layer.gate_proj, &layer.up_proj}) ScaleInputs(*l, s->scales);
    for (const char* n : {"mlp.gate_proj", "mlp.up_proj"}) {
      alpha[n] = s->alpha;
      inputs[n] = Flat(x_mlp) / s->scales;
    }
  }
  // down_proj, its scale folded into up_proj's rows (the activation is linear in up's output).
  {
    auto s = SearchAwqScales(Flat(activation), {layer.down_proj.weight}, o);
    if (!s.ok()) return s.status();
    ScaleOutputs(layer.up_proj, s->scales);
    ScaleInputs(layer.down_proj, s->scales);
    alpha["mlp.down_proj"] = s->alpha;
    inputs["mlp.down_proj"] = Flat(activation) / s->scales;
  }

  std::vector<AwqLinear> out;
  for (auto& [name, linear] : layer.Linears()) {
    at::Tensor w = linear->weight.to(at::kFloat);
    if (o.clip && name != "self_attn.q_proj" && name != "self_attn.k_proj") {
      auto max_abs = SearchAwqClip(inputs.at(name), w, o);
      if (!max_abs.ok()) return max_abs.status();
      w = ClipWeight(w, *max_abs, o.quant.group_size);
    }
    auto q = QuantizeRtn(w, o.quant);
    if (!q.ok()) return q.status();
    linear->weight = q->Dequantize().to(linear->weight.device(), linear->weight.scalar_type());
    out.push_back({name, *std::move(q), alpha.count(name) ? alpha.at(name) : 0.0});
  }
  hidden = output.to(hidden.device(), hidden.scalar_type());
  return out;
}

}  // namespace squeeze
