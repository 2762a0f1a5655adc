#include "common/compress/awq_layer.h"

#include <ATen/Context.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <map>

#include "common/compress/scale_folding.h"

namespace squeeze {
namespace {

// Lets cuBLAS run float32 matmuls on TF32 tensor cores while alive, and restores the setting.
// The searches rank candidates by 4-bit rounding errors (a few percent of the output); TF32's
// 10-bit mantissa is far below that, and the MLP block's three matmuls per alpha ran 8x slower in
// full float32 (Llama-3-8B shapes on an H200: 18 s a layer). The setting is the process's; a
// worker process runs one task.
class Tf32Matmuls {
 public:
  explicit Tf32Matmuls(bool enable) : saved_(at::globalContext().allowTF32CuBLAS()) {
    if (enable) at::globalContext().setAllowTF32CuBLAS(true);
  }
  ~Tf32Matmuls() { at::globalContext().setAllowTF32CuBLAS(saved_); }
  Tf32Matmuls(const Tf32Matmuls&) = delete;
  Tf32Matmuls& operator=(const Tf32Matmuls&) = delete;

 private:
  const bool saved_;
};

at::Tensor Flat(const at::Tensor& t) { return t.reshape({-1, t.size(-1)}).to(at::kFloat); }

// The layer's output, a few windows at a time (the MLP's activations of every window at once
// would be the largest tensor of the whole run).
at::Tensor RunLayer(const LlamaConfig& c, const DecoderLayer& layer, const at::Tensor& h,
                    const RotaryTables& rope, int64_t index) {
  std::vector<at::Tensor> parts;
  for (int64_t b = 0; b < h.size(0); b += 16)
    parts.push_back(layer.Forward(c, h.slice(0, b, b + 16), rope, index));
  return at::cat(parts, 0);
}

// fn over slices of `x`'s windows (dim 0), concatenated: a block's intermediate activations
// (the MLP's are 3.5x wider than its output) exist for a few windows at a time.
template <typename Fn>
at::Tensor OverWindows(const at::Tensor& x, Fn fn) {
  constexpr int64_t kWindows = 8;
  std::vector<at::Tensor> parts;
  for (int64_t b = 0; b < x.size(0); b += kWindows)
    parts.push_back(fn(x.slice(0, b, b + kWindows)));
  return at::cat(parts, 0);
}

}  // namespace

// The work of AwqQuantizeDecoderLayer on a float32 layer and float32 rotary tables; `hidden` is
// the layer's input over every calibration window.
static absl::StatusOr<std::vector<AwqLinear>> AwqQuantizeFloatLayer(
    const LlamaConfig& c, DecoderLayer& layer, const at::Tensor& hidden, const RotaryTables& rope,
    int64_t index, const AwqOptions& o) {
  c10::NoGradGuard no_grad;
  // The searches run on evenly spaced windows, at most search_windows of them: each evaluates
  // the group's block once per alpha, which dominates AWQ's cost. Only they are made float32.
  const int64_t windows = hidden.size(0);
  const int64_t step = std::max<int64_t>(1, windows / std::max<int64_t>(1, o.search_windows));
  const at::Tensor h = hidden.slice(0, 0, windows, step)
                           .slice(0, 0, o.search_windows)
                           .to(layer.q_proj.weight.device(), at::kFloat);
  // The float layer's inputs of each group.
  const at::Tensor x_qkv = layer.AttentionInput(c, h);
  const at::Tensor attention = layer.AttentionCore(c, index, x_qkv, rope);
  const at::Tensor residual = layer.AttentionResidual(c, h, layer.o_proj.Forward(attention));
  const at::Tensor x_mlp = layer.MlpInput(c, residual);
  const at::Tensor activation = layer.MlpActivation(c, x_mlp);
  auto part = [&](const char* name) {
    if (o.on_part) o.on_part(name);
  };
  part("awq: search inputs");

  std::map<std::string, double> alpha, error;
  std::map<std::string, at::Tensor> inputs;  // each linear's input, after the folded scales
  // The group of `names` reads `x` (flat) and took the scales `s`.
  auto record = [&](std::initializer_list<const char*> names, const at::Tensor& x,
                    const AwqScales& s) {
    const at::Tensor scaled = x / s.scales;
    for (const char* n : names) {
      alpha[n] = s.alpha;
      error[n] = s.error;
      inputs[n] = scaled;
    }
  };
  // A single linear whose input is `producer`'s output: the scales divide producer's rows.
  auto scale_after_linear = [&](Linear& producer, Linear& consumer, const char* name,
                                const at::Tensor& x) -> absl::Status {
    auto s = SearchAwqScales(x, {consumer.weight}, o);
    if (!s.ok()) return s.status();
    ScaleOutputs(producer, s->scales);
    ScaleInputs(consumer, s->scales);
    record({name}, x, *s);
    return absl::OkStatus();
  };
  // q/k/v: the attention is the block.
  {
    auto s = SearchAwqScales(
        Flat(x_qkv), {layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight}, o,
        [&](const std::vector<at::Tensor>& w) {
          DecoderLayer trial = layer;
          trial.q_proj.weight = w[0];
          trial.k_proj.weight = w[1];
          trial.v_proj.weight = w[2];
          return OverWindows(
              x_qkv, [&](const at::Tensor& x) { return trial.AttentionCore(c, index, x, rope); });
        });
    if (!s.ok()) return s.status();
    FoldIntoNorm(c, layer.input_layernorm, s->scales);
    for (Linear* l : {&layer.q_proj, &layer.k_proj, &layer.v_proj}) ScaleInputs(*l, s->scales);
    record({"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}, Flat(x_qkv), *s);
    part("awq: scales q/k/v");
  }
  // o_proj: only when v_proj's rows are its inputs one to one.
  inputs["self_attn.o_proj"] = Flat(attention);
  if (c.num_key_value_heads == c.num_attention_heads) {
    if (auto s =
            scale_after_linear(layer.v_proj, layer.o_proj, "self_attn.o_proj", Flat(attention));
        !s.ok())
      return s;
    part("awq: scales o");
  }
  // gate/up: the MLP is the block.
  {
    auto s = SearchAwqScales(Flat(x_mlp), {layer.gate_proj.weight, layer.up_proj.weight}, o,
                             [&](const std::vector<at::Tensor>& w) {
                               return OverWindows(x_mlp, [&](const at::Tensor& x) {
                                 return layer.down_proj.Forward(GatedActivation(
                                     c, at::matmul(x, w[0].t()), at::matmul(x, w[1].t())));
                               });
                             });
    if (!s.ok()) return s.status();
    FoldIntoNorm(c, MlpInputNorm(c, layer), s->scales);
    for (Linear* l : {&layer.gate_proj, &layer.up_proj}) ScaleInputs(*l, s->scales);
    record({"mlp.gate_proj", "mlp.up_proj"}, Flat(x_mlp), *s);
    part("awq: scales gate/up");
  }
  // down_proj, its scale folded into up_proj's rows (the activation is linear in up's output).
  if (auto s =
          scale_after_linear(layer.up_proj, layer.down_proj, "mlp.down_proj", Flat(activation));
      !s.ok())
    return s;
  part("awq: scales down");

  std::vector<AwqLinear> out;
  for (auto& [name, linear] : layer.Linears()) {
    at::Tensor w = linear->weight.to(at::kFloat);
    if (o.clip && name != "self_attn.q_proj" && name != "self_attn.k_proj") {
      auto max_abs = SearchAwqClip(inputs.at(name), w, o);
      if (!max_abs.ok()) return max_abs.status();
      w = ClipWeight(w, *max_abs, o.quant.group_size);
      part("awq: clip");
    }
    auto q = QuantizeRtn(w, o.quant);
    if (!q.ok()) return q.status();
    linear->weight = q->Dequantize().to(linear->weight.device(), linear->weight.scalar_type());
    out.push_back({name, *std::move(q), alpha.count(name) ? alpha.at(name) : 0.0,
                   error.count(name) ? error.at(name) : 0.0});
    part("awq: round");
  }
  return out;
}

absl::StatusOr<std::vector<AwqLinear>> AwqQuantizeDecoderLayer(const LlamaConfig& c,
                                                               DecoderLayer& layer,
                                                               at::Tensor& hidden,
                                                               const RotaryTables& rope,
                                                               int64_t index, const AwqOptions& o) {
  // The searches compare small output errors: they run in float32 whatever the layer computes
  // in, and the layer gets its results back in its own dtype.
  const at::ScalarType dtype = layer.q_proj.weight.scalar_type();
  const at::Device device = layer.q_proj.weight.device();
  // The next layer's inputs: this layer's output over every window, computed as the model runs
  // (in its own dtype, before any scaling), as GPTQ's forward is. In float32 every window would
  // cost 4x the searches' windows in memory and twice the time (8B, H200: 18.4 s against 8.0 s).
  const at::Tensor output = RunLayer(c, layer, hidden.to(device, dtype), rope, index);
  if (o.on_part) o.on_part("awq: forward");
  auto as_float = [](const at::Tensor& t) { return t.defined() ? t.to(at::kFloat) : t; };
  const RotaryTables rope_f{as_float(rope.cos), as_float(rope.sin), as_float(rope.local_cos),
                            as_float(rope.local_sin)};
  DecoderLayer work = layer.To(device, at::kFloat);
  const Tf32Matmuls tf32(device.is_cuda());
  auto out = AwqQuantizeFloatLayer(c, work, hidden, rope_f, index, o);
  if (!out.ok()) return out;
  layer = work.To(device, dtype);
  hidden = output.to(hidden.device(), hidden.scalar_type());
  return out;
}

}  // namespace squeeze
