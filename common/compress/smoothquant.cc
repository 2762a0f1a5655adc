#include "common/compress/smoothquant.h"

#include "absl/strings/str_cat.h"
#include "common/compress/scale_folding.h"

namespace squeeze {

void InputAbsMaxObserver::OnLinearInput(int64_t /*layer*/, absl::string_view name,
                                        const at::Tensor& input) {
  const at::Tensor m = input.reshape({-1, input.size(-1)}).abs().amax(0).to(at::kFloat);
  auto [it, inserted] = absmax_.try_emplace(std::string(name), m);
  if (!inserted) it->second = at::maximum(it->second, m);
}

at::Tensor SmoothQuantScales(const at::Tensor& x_absmax, const std::vector<at::Tensor>& weights,
                             double alpha) {
  at::Tensor w_absmax;
  for (const at::Tensor& w : weights) {
    const at::Tensor m = w.abs().amax(0).to(x_absmax.device(), at::kFloat);
    w_absmax = w_absmax.defined() ? at::maximum(w_absmax, m) : m;
  }
  const at::Tensor x = x_absmax.to(at::kFloat).clamp_min(1e-5);
  return (x.pow(alpha) / w_absmax.clamp_min(1e-5).pow(1.0 - alpha)).clamp(1e-5, 1e5);
}

absl::Status SmoothDecoderLayer(const LlamaConfig& c, DecoderLayer& layer,
                                const std::map<std::string, at::Tensor>& input_absmax,
                                double alpha) {
  if (alpha < 0.0 || alpha > 1.0)
    return absl::InvalidArgumentError(
        absl::StrCat("smoothquant alpha: must be in [0, 1], got ", alpha));
  for (const char* name : {"self_attn.q_proj", "mlp.gate_proj"}) {
    if (!input_absmax.count(name))
      return absl::InvalidArgumentError(absl::StrCat("smoothquant: no inputs observed for ", name));
  }
  const at::Tensor s_attention =
      SmoothQuantScales(input_absmax.at("self_attn.q_proj"),
                        {layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight}, alpha);
  FoldIntoNorm(c, layer.input_layernorm, s_attention);
  for (Linear* l : {&layer.q_proj, &layer.k_proj, &layer.v_proj}) ScaleInputs(*l, s_attention);
  const at::Tensor s_mlp = SmoothQuantScales(input_absmax.at("mlp.gate_proj"),
                                             {layer.gate_proj.weight, layer.up_proj.weight}, alpha);
  FoldIntoNorm(c, MlpInputNorm(c, layer), s_mlp);
  for (Linear* l : {&layer.gate_proj, &layer.up_proj}) ScaleInputs(*l, s_mlp);
  return absl::OkStatus();
}

}  // namespace squeeze
