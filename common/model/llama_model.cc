#include "common/model/llama_model.h"

#include "common/model/layer_checkpoint.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <tuple>

#include <ATen/CPUGeneratorImpl.h>
#include "absl/strings/str_cat.h"
#include "common/model/torch_compat.h"
#include "common/tensor/torch_tensor.h"
#ifdef SQUEEZE_HAS_CUDA_KERNELS
#include "common/model/fused_ops.h"
#endif

namespace squeeze {
namespace {

constexpr char kLayerPrefix[] = "model.layers.";

std::string LayerName(int64_t i, absl::string_view suffix) {
  return absl::StrCat(kLayerPrefix, i, ".", suffix);
}

// [b, s, n*d] -> [b, n, s, d]
at::Tensor SplitHeads(const at::Tensor& x, int64_t heads, int64_t head_dim) {
  return x.view({x.size(0), x.size(1), heads, head_dim}).transpose(1, 2);
}

// The half-split rotation of the Hugging Face layout: (x1, x2) -> (-x2, x1).
at::Tensor RotateHalf(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
}

at::Tensor ApplyRotary(const at::Tensor& x, const RotaryTables& rope) {
  return x * rope.cos + RotateHalf(x) * rope.sin;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string out;
  for (int64_t d : shape) absl::StrAppend(&out, out.empty() ? "" : ", ", d);
  return absl::StrCat("[", out, "]");
}

// A stored tensor as a float tensor; other dtypes are an error naming the file and tensor.
absl::StatusOr<at::Tensor> ReadFloatTensor(const CheckpointReader& weights,
                                           const std::string& name) {
  auto view = weights.Get(name);
  if (!view.ok()) return view.status();
  const DType stored = view->info->dtype;
  if (stored != DType::kF32 && stored != DType::kF16 && stored != DType::kBF16 &&
      stored != DType::kF64) {
    return absl::InvalidArgumentError(absl::StrCat(weights.FileOf(name), ": tensor \"", name,
                                                   "\": dtype ", DTypeName(stored),
                                                   " is not a floating-point type"));
  }
  return ToTorch(*view);
}

// Fills decoder layer `i` through `load(name, shape, out)`, every shape from the config.
absl::Status LoadLayerTensors(
    const LlamaConfig& c, int64_t i,
    const std::function<absl::Status(const std::string&, std::vector<int64_t>, at::Tensor&)>& load,
    DecoderLayer& layer) {
  const int64_t h = c.hidden_size;
  if (auto s = load(LayerName(i, "input_layernorm.weight"), {h}, layer.input_layernorm); !s.ok())
    return s;
  if (auto s = load(LayerName(i, "post_attention_layernorm.weight"), {h},
                    layer.post_attention_layernorm);
      !s.ok()) {
    return s;
  }
  if (c.sandwich_norms()) {
    if (auto s = load(LayerName(i, "pre_feedforward_layernorm.weight"), {h},
                      layer.pre_feedforward_layernorm);
        !s.ok())
      return s;
    if (auto s = load(LayerName(i, "post_feedforward_layernorm.weight"), {h},
                      layer.post_feedforward_layernorm);
        !s.ok())
      return s;
  }
  if (c.qk_norm()) {
    if (auto s = load(LayerName(i, "self_attn.q_norm.weight"), {c.head_dim}, layer.q_norm); !s.ok())
      return s;
    if (auto s = load(LayerName(i, "self_attn.k_norm.weight"), {c.head_dim}, layer.k_norm); !s.ok())
      return s;
  }
  const std::vector<LinearShape> shapes = DecoderLinearShapes(c);
  auto linears = layer.Linears();
  for (size_t j = 0; j < linears.size(); ++j) {
    const LinearShape& shape = shapes[j];
    Linear& linear = *linears[j].second;
    const std::string base = LayerName(i, shape.name);
    if (auto s = load(base + ".weight", {shape.out, shape.in}, linear.weight); !s.ok()) return s;
    if (shape.bias) {
      if (auto s = load(base + ".bias", {shape.out}, linear.bias); !s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

// The tensor loader of FromTensors: shape-checked against `shape`, converted to dtype on device.
auto ShapeCheckedLoader(const LlamaModel::TensorSource& source, at::ScalarType dtype,
                        at::Device device,
                        const std::function<std::string(const std::string&)>& where) {
  return [&source, dtype, device, &where](const std::string& name, std::vector<int64_t> shape,
                                          at::Tensor& out) -> absl::Status {
    auto t = source(name);
    if (!t.ok()) return t.status();
    if (t->sizes().vec() != shape) {
      const std::string origin = where ? where(name) : "";
      return absl::InvalidArgumentError(absl::StrCat(
          origin, origin.empty() ? "" : ": ", "tensor \"", name, "\": shape ",
          ShapeString(t->sizes().vec()), " but config.json implies ", ShapeString(shape)));
    }
    out = t->to(device, dtype);
    // Non-finite weights would surface much later as a NaN perplexity; name the tensor now.
    if (out.is_floating_point() && !at::isfinite(out).all().item<bool>()) {
      const std::string origin = where ? where(name) : "";
      return absl::InvalidArgumentError(absl::StrCat(origin, origin.empty() ? "" : ": ",
                                                     "tensor \"", name, "\" holds NaN or Inf"));
    }
    return absl::OkStatus();
  };
}

}  // namespace

namespace {

// Where the linear `prefix` ("model.layers.3.self_attn.k_proj") lives in its fused linear.
struct FusedPart {
  std::string fused;  // "model.layers.3.self_attn.qkv_proj"
  int64_t offset = 0;
  int64_t rows = 0;
  size_t index = 0;  // among the parts
  size_t count = 0;
};

std::optional<FusedPart> FindFusedPart(const LlamaConfig& c, const std::string& prefix) {
  const std::vector<FusedLinear> fused = FusedLinears(c);
  if (fused.empty()) return std::nullopt;
  const size_t dot = prefix.find('.', prefix.find("layers.") + 7);
  if (prefix.rfind("model.layers.", 0) != 0 || dot == std::string::npos) return std::nullopt;
  const std::string layer = prefix.substr(0, dot + 1), linear = prefix.substr(dot + 1);
  const std::vector<LinearShape> shapes = DecoderLinearShapes(c);
  auto rows_of = [&](const std::string& name) {
    for (const LinearShape& l : shapes)
      if (name == l.name) return l.out;
    return int64_t{0};
  };
  for (const FusedLinear& f : fused) {
    int64_t offset = 0;
    for (size_t i = 0; i < f.parts.size(); ++i) {
      if (linear == f.parts[i])
        return FusedPart{layer + f.name, offset, rows_of(linear), i, f.parts.size()};
      offset += rows_of(f.parts[i]);
    }
  }
  return std::nullopt;
}

// "model.layers.3.self_attn.k_proj.qweight" -> {"model.layers.3.self_attn.k_proj", ".qweight"}
std::pair<std::string, std::string> SplitField(const std::string& name) {
  const size_t dot = name.rfind('.');
  return {name.substr(0, dot), name.substr(dot)};
}

}  // namespace

LlamaModel::TensorSource SplitFusedSource(const LlamaConfig& config,
                                          LlamaModel::TensorSource stored) {
  if (FusedLinears(config).empty()) return stored;
  struct Last {
    std::string name;
    at::Tensor tensor;
  };
  auto last = std::make_shared<Last>();
  return [config, stored = std::move(stored),
          last](const std::string& name) -> absl::StatusOr<at::Tensor> {
    const auto [prefix, field] = SplitField(name);
    const std::optional<FusedPart> part = FindFusedPart(config, prefix);
    if (!part || (field != ".weight" && field != ".bias")) return stored(name);
    const std::string fused = part->fused + field;
    if (last->name != fused) {
      auto t = stored(fused);
      if (!t.ok()) return t.status();
      last->name = fused;
      last->tensor = *t;
    }
    if (last->tensor.dim() < 1 || last->tensor.size(0) < part->offset + part->rows) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor \"", fused, "\": ", last->tensor.dim() < 1 ? 0 : last->tensor.size(0),
          " rows, too few for its parts (", name, " ends at row ", part->offset + part->rows, ")"));
    }
    return last->tensor.narrow(0, part->offset, part->rows).contiguous();
  };
}

absl::Status FuseStoredTensors(const LlamaConfig& config,
                               std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  if (FusedLinears(config).empty()) return absl::OkStatus();
  // Parts by fused name and field, in part order; each fused tensor goes where its first part was.
  std::map<std::string, std::vector<at::Tensor>> parts;
  std::vector<std::pair<std::string, at::Tensor>> out;
  std::vector<std::string> order;
  for (auto& [name, t] : tensors) {
    const auto [prefix, field] = SplitField(name);
    const std::optional<FusedPart> part = FindFusedPart(config, prefix);
    if (!part) {
      out.emplace_back(name, t);
      continue;
    }
    const std::string fused = part->fused + field;
    auto& list = parts[fused];
    if (list.empty()) {
      list.resize(part->count);
      out.emplace_back(fused, at::Tensor());
    }
    list[part->index] = t;
  }
  for (auto& [name, t] : out) {
    if (t.defined()) continue;
    const std::vector<at::Tensor>& list = parts.at(name);
    for (const at::Tensor& p : list) {
      if (!p.defined())
        return absl::InvalidArgumentError(absl::StrCat(name, ": a part of it is missing"));
    }
    const std::string field = SplitField(name).second;
    if (field == ".g_idx") {
      // One input for all parts: their column-to-group maps must agree.
      for (const at::Tensor& p : list) {
        if (!at::equal(p, list[0]))
          return absl::InvalidArgumentError(absl::StrCat(name, ": the parts' g_idx differ"));
      }
      t = list[0];
    } else {
      // GPTQ tensors are [in-ish, out]; dense weights and biases are [out, ...].
      const bool by_column = field == ".qweight" || field == ".qzeros" || field == ".scales";
      t = at::cat(list, by_column ? 1 : 0);
    }
  }
  tensors = std::move(out);
  return absl::OkStatus();
}

absl::StatusOr<DecoderLayer> LoadDecoderLayer(const LlamaConfig& config, int64_t index,
                                              const CheckpointReader& weights, at::ScalarType dtype,
                                              at::Device device) {
  return LoadDecoderLayer(
      config, index, [&](const std::string& name) { return ReadFloatTensor(weights, name); },
      [&](const std::string& name) { return weights.FileOf(name); }, dtype, device);
}

absl::StatusOr<DecoderLayer> LoadDecoderLayer(
    const LlamaConfig& config, int64_t index, const LlamaModel::TensorSource& stored,
    const std::function<std::string(const std::string&)>& where, at::ScalarType dtype,
    at::Device device) {
  const LlamaModel::TensorSource source = SplitFusedSource(config, stored);
  DecoderLayer layer;
  if (auto s =
          LoadLayerTensors(config, index, ShapeCheckedLoader(source, dtype, device, where), layer);
      !s.ok())
    return s;
  return layer;
}

at::Tensor QuantizeActivations(const at::Tensor& x, const ActivationQuant& quant) {
  if (quant.kind == ActivationQuant::Kind::kNone) return x;
  const double qmax = static_cast<double>((1 << (quant.bits - 1)) - 1);  // 127
  const at::Tensor xf = x.to(at::kFloat);
  at::Tensor scale;
  if (quant.kind == ActivationQuant::Kind::kDynamicPerToken) {
    scale = xf.abs().amax(-1, /*keepdim=*/true).clamp_min(1e-8) / qmax;
  } else {
    scale = quant.scale.to(x.device(), at::kFloat).clamp_min(1e-8);
  }
  // Static scales can be exceeded at run time: values clip to the grid's ends, as INT8 kernels'
  // saturating conversion does.
  return (xf / scale).round().clamp(-qmax - 1, qmax).mul(scale).to(x.scalar_type());
}

at::Tensor Linear::Forward(const at::Tensor& x) const {
  const at::Tensor in = QuantizeActivations(x, input_quant);
  // A packed weight is expanded for this product only; with gradient checkpointing it is expanded
  // again in the backward pass instead of being kept.
  at::Tensor y =
      at::linear(in, weight.defined() ? weight : packed->Dequantize(in.scalar_type()), bias);
  if (!lora.defined()) return y;
  const at::Tensor d =
      lora.dropout > 0 && at::GradMode::is_enabled() ? at::dropout(x, lora.dropout, true) : x;
  // Float32 adapters meet bf16 activations: cast here (a no-op under autocast), differentiably.
  const at::Tensor down = at::linear(d, lora.a.to(d.scalar_type()));
  return y + at::linear(down, lora.b.to(d.scalar_type())) * lora.scale;
}

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps) {
#ifdef SQUEEZE_HAS_CUDA_KERNELS
  if (FusedRmsNormApplies(x, weight)) return FusedRmsNorm(x, weight, eps);
#endif
  return RmsNormComposite(x, weight, eps);
}

at::Tensor RmsNormComposite(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor xf = x.to(at::kFloat);
  at::Tensor var = xf.pow(2).mean(-1, /*keepdim=*/true);
  xf = xf * at::rsqrt(var + eps);
  return weight * xf.to(x.scalar_type());
}

at::Tensor SwiGlu(const at::Tensor& gate, const at::Tensor& up) {
#ifdef SQUEEZE_HAS_CUDA_KERNELS
  if (FusedSwiGluApplies(gate, up)) return FusedSwiGlu(gate, up);
#endif
  return SwiGluComposite(gate, up);
}

at::Tensor SwiGluComposite(const at::Tensor& gate, const at::Tensor& up) {
  return at::silu(gate) * up;
}

at::Tensor ModelRmsNorm(const LlamaConfig& config, const at::Tensor& x, const at::Tensor& weight) {
  if (!config.norm_plus_one()) return RmsNorm(x, weight, config.rms_norm_eps);
  at::Tensor xf = x.to(at::kFloat);
  xf = xf * at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + config.rms_norm_eps);
  return (xf * (weight.to(at::kFloat) + 1.0)).to(x.scalar_type());
}

at::Tensor GatedActivation(const LlamaConfig& config, const at::Tensor& gate,
                           const at::Tensor& up) {
  if (config.hidden_activation == "gelu_pytorch_tanh") return at::gelu(gate, "tanh") * up;
  return SwiGlu(gate, up);
}

at::Tensor RotaryInverseFrequencies(const LlamaConfig& config, bool local) {
  const int64_t dim = config.head_dim;
  at::Tensor exponents = at::arange(0, dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(dim);
  at::Tensor inv_freq =
      1.0 / at::pow(local ? config.rope_local_theta : config.rope_theta, exponents);
  if (local || !config.rope_scaling) return inv_freq;
  if (config.rope_scaling->rope_type == "linear") return inv_freq / config.rope_scaling->factor;

  // llama3: keep high frequencies, divide low ones by `factor`, blend the band between.
  const RopeScaling& r = *config.rope_scaling;
  const double old_len = static_cast<double>(r.original_max_position_embeddings);
  const double low_freq_wavelen = old_len / r.low_freq_factor;
  const double high_freq_wavelen = old_len / r.high_freq_factor;
  at::Tensor wavelen = 2.0 * M_PI / inv_freq;
  at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / r.factor, inv_freq);
  at::Tensor smooth =
      (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
  at::Tensor smoothed = (1 - smooth) * scaled / r.factor + smooth * scaled;
  at::Tensor medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
  return at::where(medium, smoothed, scaled);
}

at::Tensor DecoderLayer::AttentionCore(const LlamaConfig& c, int64_t layer_index,
                                       const at::Tensor& x, const RotaryTables& rope,
                                       LayerKvCache* cache) const {
  const int64_t b = x.size(0), s = x.size(1);
  at::Tensor q = SplitHeads(q_proj.Forward(x), c.num_attention_heads, c.head_dim);
  at::Tensor k = SplitHeads(k_proj.Forward(x), c.num_key_value_heads, c.head_dim);
  at::Tensor v = SplitHeads(v_proj.Forward(x), c.num_key_value_heads, c.head_dim);
  if (q_norm.defined()) {
    q = ModelRmsNorm(c, q, q_norm);
    k = ModelRmsNorm(c, k, k_norm);
  }
  const bool local = c.LayerLocalRope(layer_index) && rope.local_cos.defined();
  const RotaryTables layer_rope{local ? rope.local_cos : rope.cos,
                                local ? rope.local_sin : rope.sin};
  q = ApplyRotary(q, layer_rope);
  k = ApplyRotary(k, layer_rope);
  const double scale = c.attention_scale();
  const int64_t window = c.LayerWindow(layer_index);
  int64_t past = 0;
  if (cache != nullptr) {
    past = cache->length;
    cache->k.narrow(2, past, s).copy_(k);
    cache->v.narrow(2, past, s).copy_(v);
    cache->length = past + s;
    k = cache->k.narrow(2, 0, past + s);
    v = cache->v.narrow(2, 0, past + s);
  }
  if (c.num_kv_groups() > 1) {
    // Query head j reads key/value head j / groups, as the reference repeat_kv does.
    k = k.repeat_interleave(c.num_kv_groups(), 1);
    v = v.repeat_interleave(c.num_kv_groups(), 1);
  }
  const bool windowed = window > 0 && past + s > window;
  at::Tensor attn;
  if (past == 0 && !windowed) {
    attn = compat::CausalAttention(q, k, v, scale);
  } else {
    // Query i (absolute position past + i) sees keys 0..past + i, and within a sliding window
    // only the last `sliding_window` of them: keys past + i - window < j <= past + i.
    at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).to(at::kFloat) * scale;
    // One new position inside the window (a decoding step) sees every key: no mask to build.
    if (s > 1 || windowed) {
      at::Tensor ones = at::ones({s, past + s}, q.options().dtype(at::kBool));
      at::Tensor hidden = ones.triu(past + 1);
      if (windowed) hidden = hidden.logical_or(ones.tril(past - window));
      scores = scores.masked_fill(hidden, -std::numeric_limits<float>::infinity());
    }
    attn = at::matmul(at::softmax(scores, -1).to(q.scalar_type()), v);
  }
  return attn.transpose(1, 2).reshape({b, s, c.num_attention_heads * c.head_dim});
}

at::Tensor DecoderLayer::AttentionInput(const LlamaConfig& c, const at::Tensor& hidden) const {
  return ModelRmsNorm(c, hidden, input_layernorm);
}

at::Tensor DecoderLayer::AttentionResidual(const LlamaConfig& c, const at::Tensor& hidden,
                                           const at::Tensor& attention_out) const {
  if (c.sandwich_norms()) return hidden + ModelRmsNorm(c, attention_out, post_attention_layernorm);
  return hidden + attention_out;
}

at::Tensor DecoderLayer::MlpInput(const LlamaConfig& c, const at::Tensor& residual) const {
  return ModelRmsNorm(c, residual,
                      c.sandwich_norms() ? pre_feedforward_layernorm : post_attention_layernorm);
}

at::Tensor DecoderLayer::MlpActivation(const LlamaConfig& c, const at::Tensor& x) const {
  return GatedActivation(c, gate_proj.Forward(x), up_proj.Forward(x));
}

at::Tensor DecoderLayer::MlpResidual(const LlamaConfig& c, const at::Tensor& residual,
                                     const at::Tensor& mlp_out) const {
  if (c.sandwich_norms()) return residual + ModelRmsNorm(c, mlp_out, post_feedforward_layernorm);
  return residual + mlp_out;
}

at::Tensor DecoderLayer::Forward(const LlamaConfig& c, const at::Tensor& hidden,
                                 const RotaryTables& rope, int64_t layer_index,
                                 LinearObserver* observer, LayerKvCache* cache) const {
  auto observe = [&](absl::string_view name, const at::Tensor& input) {
    if (observer != nullptr) observer->OnLinearInput(layer_index, name, input);
  };
  at::Tensor x = AttentionInput(c, hidden);
  observe("self_attn.q_proj", x);
  observe("self_attn.k_proj", x);
  observe("self_attn.v_proj", x);
  const at::Tensor attn = AttentionCore(c, layer_index, x, rope, cache);
  observe("self_attn.o_proj", attn);
  const at::Tensor h = AttentionResidual(c, hidden, o_proj.Forward(attn));
  x = MlpInput(c, h);
  observe("mlp.gate_proj", x);
  observe("mlp.up_proj", x);
  const at::Tensor act = MlpActivation(c, x);
  observe("mlp.down_proj", act);
  return MlpResidual(c, h, down_proj.Forward(act));
}

std::vector<std::pair<std::string, Linear*>> DecoderLayer::Linears() {
  return {{"self_attn.q_proj", &q_proj}, {"self_attn.k_proj", &k_proj},
          {"self_attn.v_proj", &v_proj}, {"self_attn.o_proj", &o_proj},
          {"mlp.gate_proj", &gate_proj}, {"mlp.up_proj", &up_proj},
          {"mlp.down_proj", &down_proj}};
}

std::vector<std::pair<std::string, const Linear*>> DecoderLayer::Linears() const {
  std::vector<std::pair<std::string, const Linear*>> out;
  for (auto& [name, linear] : const_cast<DecoderLayer*>(this)->Linears())
    out.emplace_back(name, linear);
  return out;
}

std::vector<std::pair<std::string, at::Tensor*>> DecoderLayer::Tensors() {
  std::vector<std::pair<std::string, at::Tensor*>> out = {
      {"input_layernorm.weight", &input_layernorm},
      {"post_attention_layernorm.weight", &post_attention_layernorm}};
  if (pre_feedforward_layernorm.defined()) {
    out.emplace_back("pre_feedforward_layernorm.weight", &pre_feedforward_layernorm);
    out.emplace_back("post_feedforward_layernorm.weight", &post_feedforward_layernorm);
  }
  if (q_norm.defined()) {
    out.emplace_back("self_attn.q_norm.weight", &q_norm);
    out.emplace_back("self_attn.k_norm.weight", &k_norm);
  }
  for (auto& [name, linear] : Linears()) {
    if (linear->weight.defined()) out.emplace_back(name + ".weight", &linear->weight);
    if (linear->bias.defined()) out.emplace_back(name + ".bias", &linear->bias);
  }
  return out;
}

namespace {
// Packed weights and adapters follow the layer to `device`; adapters stay float32.
void MoveLinearExtras(DecoderLayer& layer, at::Device device) {
  for (auto& [name, linear] : layer.Linears()) {
    if (linear->packed) linear->packed = linear->packed->To(device);
    if (linear->lora.defined()) {
      linear->lora.a = linear->lora.a.detach().to(device, at::kFloat, false, /*copy=*/true);
      linear->lora.b = linear->lora.b.detach().to(device, at::kFloat, false, /*copy=*/true);
    }
  }
}
}  // namespace

DecoderLayer DecoderLayer::To(at::Device device, at::ScalarType dtype) const {
  DecoderLayer copy = *this;
  for (auto& [name, t] : copy.Tensors())
    *t = t->to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
  MoveLinearExtras(copy, device);
  return copy;
}

absl::StatusOr<LlamaModel> LlamaModel::Load(const std::string& dir, at::ScalarType dtype,
                                            at::Device device) {
  auto config = LoadLlamaConfig(dir);
  if (!config.ok()) return config.status();
  auto weights = CheckpointReader::Open(dir);
  if (!weights.ok()) return weights.status();
  return FromCheckpoint(*config, **weights, dtype, device);
}

absl::StatusOr<LlamaModel> LlamaModel::FromCheckpoint(const LlamaConfig& c,
                                                      const CheckpointReader& weights,
                                                      at::ScalarType dtype, at::Device device) {
  return FromTensors(
      c, [&](const std::string& name) { return ReadFloatTensor(weights, name); }, dtype, device,
      [&](const std::string& name) { return weights.FileOf(name); });
}

absl::StatusOr<LlamaModel> LlamaModel::FromTensors(
    const LlamaConfig& c, const TensorSource& source, at::ScalarType dtype, at::Device device,
    const std::function<std::string(const std::string&)>& where) {
  LlamaModel m;
  m.config_ = c;
  m.inv_freq_ = RotaryInverseFrequencies(c);
  if (c.rope_local_theta > 0) m.local_inv_freq_ = RotaryInverseFrequencies(c, /*local=*/true);
  const TensorSource split = SplitFusedSource(c, source);
  const auto load = ShapeCheckedLoader(split, dtype, device, where);
  const int64_t h = c.hidden_size;
  if (auto s = load("model.embed_tokens.weight", {c.vocab_size, h}, m.embed_tokens_); !s.ok())
    return s;
  if (auto s = load("model.norm.weight", {h}, m.norm_); !s.ok()) return s;
  if (c.tie_word_embeddings) {
    m.lm_head_ = m.embed_tokens_;
  } else if (auto s = load("lm_head.weight", {c.vocab_size, h}, m.lm_head_); !s.ok()) {
    return s;
  }
  m.layers_.resize(c.num_hidden_layers);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    if (auto s = LoadLayerTensors(c, i, load, m.layers_[i]); !s.ok()) return s;
  }
  return m;
}

LlamaModel LlamaModel::RandomInit(const LlamaConfig& c, uint64_t seed, at::ScalarType dtype,
                                  at::Device device) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  auto normal = [&](std::vector<int64_t> shape) {
    return at::normal(0.0, 0.02, shape, gen, at::TensorOptions().dtype(at::kFloat))
        .to(device, dtype);
  };
  auto ones = [&](int64_t n) {
    return at::ones({n}, at::TensorOptions().dtype(dtype).device(device));
  };
  auto zeros = [&](int64_t n) {
    return at::zeros({n}, at::TensorOptions().dtype(dtype).device(device));
  };
  // A unit norm: weight 1, or offset 0 where the norm scales by (1 + weight).
  auto unit_norm = [&](int64_t n) { return c.norm_plus_one() ? zeros(n) : ones(n); };
  LlamaModel m;
  m.config_ = c;
  m.inv_freq_ = RotaryInverseFrequencies(c);
  if (c.rope_local_theta > 0) m.local_inv_freq_ = RotaryInverseFrequencies(c, /*local=*/true);
  const int64_t h = c.hidden_size, q_out = c.num_attention_heads * c.head_dim,
                kv_out = c.num_key_value_heads * c.head_dim, f = c.intermediate_size;
  m.embed_tokens_ = normal({c.vocab_size, h});
  m.norm_ = unit_norm(h);
  m.lm_head_ = c.tie_word_embeddings ? m.embed_tokens_ : normal({c.vocab_size, h});
  m.layers_.resize(c.num_hidden_layers);
  for (DecoderLayer& layer : m.layers_) {
    layer.input_layernorm = unit_norm(h);
    layer.post_attention_layernorm = unit_norm(h);
    if (c.sandwich_norms()) {
      layer.pre_feedforward_layernorm = unit_norm(h);
      layer.post_feedforward_layernorm = unit_norm(h);
    }
    if (c.qk_norm()) {
      layer.q_norm = unit_norm(c.head_dim);
      layer.k_norm = unit_norm(c.head_dim);
    }
    layer.q_proj.weight = normal({q_out, h});
    layer.k_proj.weight = normal({kv_out, h});
    layer.v_proj.weight = normal({kv_out, h});
    layer.o_proj.weight = normal({h, q_out});
    layer.gate_proj.weight = normal({f, h});
    layer.up_proj.weight = normal({f, h});
    layer.down_proj.weight = normal({h, f});
    if (c.attention_bias) {
      layer.q_proj.bias = zeros(q_out);
      layer.k_proj.bias = zeros(kv_out);
      layer.v_proj.bias = zeros(kv_out);
      if (c.model_type != "qwen2") layer.o_proj.bias = zeros(h);
    }
    if (c.mlp_bias) {
      layer.gate_proj.bias = zeros(f);
      layer.up_proj.bias = zeros(f);
      layer.down_proj.bias = zeros(h);
    }
  }
  return m;
}

absl::Status LlamaModel::Save(const std::string& dir, at::ScalarType dtype,
                              uint64_t max_shard_bytes) const {
  SafetensorsWriter writer;
  writer.SetMetadata("format", "pt");
  LlamaModel& self = const_cast<LlamaModel&>(*this);  // NamedParameters hands out pointers only
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (auto& [name, t] : self.NamedParameters()) tensors.emplace_back(name, t->to(dtype));
  if (auto s = FuseStoredTensors(config_, tensors); !s.ok()) return s;
  for (const auto& [name, t] : tensors) {
    if (auto s = AddTensor(writer, name, t.contiguous()); !s.ok()) return s;
  }
  if (auto s = WriteCheckpoint(dir, writer, max_shard_bytes); !s.ok()) return s;
  LlamaConfig c = config_;
  c.torch_dtype = dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : "float32";
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  std::ofstream out(path, std::ios::trunc);
  out << LlamaConfigToJson(c);
  if (!out.good()) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::Status LlamaModel::CopyWeightsFrom(const CheckpointReader& weights) {
  c10::NoGradGuard no_grad;
  const TensorSource source = SplitFusedSource(
      config_, [&](const std::string& name) { return ReadFloatTensor(weights, name); });
  for (auto& [name, t] : NamedParameters()) {
    auto loaded = source(name);
    if (!loaded.ok()) return loaded.status();
    if (loaded->sizes() != t->sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          weights.FileOf(name), ": tensor \"", name, "\": shape ",
          ShapeString(loaded->sizes().vec()), ", expected ", ShapeString(t->sizes().vec())));
    }
    t->copy_(*loaded);
  }
  return absl::OkStatus();
}

at::Tensor LlamaModel::Embed(const at::Tensor& ids) const {
  at::Tensor h = at::embedding(embed_tokens_, ids);
  if (config_.embed_scale() == 1.0) return h;
  // The scale is rounded to the model's dtype first, as the reference does.
  return h * at::scalar_tensor(config_.embed_scale(), at::kFloat).to(h.scalar_type());
}

namespace {
RotaryTables RotaryFrom(const at::Tensor& inv_freq, const at::Tensor& local_inv_freq,
                        int64_t seq_len, at::Device device, at::ScalarType dtype) {
  at::Tensor positions = at::arange(seq_len, at::kLong).to(at::kFloat);
  auto tables = [&](const at::Tensor& f) {
    at::Tensor freqs = at::outer(positions, f);  // [seq, head_dim / 2], float32
    at::Tensor emb = at::cat({freqs, freqs}, -1);
    return std::pair{emb.cos().to(device, dtype), emb.sin().to(device, dtype)};
  };
  RotaryTables out;
  std::tie(out.cos, out.sin) = tables(inv_freq);
  if (local_inv_freq.defined()) std::tie(out.local_cos, out.local_sin) = tables(local_inv_freq);
  return out;
}
}  // namespace

RotaryTables RotaryTables::Rows(int64_t start, int64_t n) const {
  RotaryTables out{cos.narrow(0, start, n), sin.narrow(0, start, n)};
  if (local_cos.defined()) {
    out.local_cos = local_cos.narrow(0, start, n);
    out.local_sin = local_sin.narrow(0, start, n);
  }
  return out;
}

RotaryTables LlamaModel::Rotary(int64_t seq_len, at::Device device, at::ScalarType dtype) const {
  return RotaryFrom(inv_freq_, local_inv_freq_, seq_len, device, dtype);
}

RotaryTables MakeRotaryTables(const LlamaConfig& config, int64_t seq_len, at::Device device,
                              at::ScalarType dtype) {
  return RotaryFrom(
      RotaryInverseFrequencies(config),
      config.rope_local_theta > 0 ? RotaryInverseFrequencies(config, true) : at::Tensor(), seq_len,
      device, dtype);
}

at::Tensor LlamaModel::Head(const at::Tensor& hidden) const {
  at::Tensor logits = at::linear(ModelRmsNorm(config_, hidden, norm_), lm_head_);
  if (config_.final_logit_softcapping > 0) {
    const double cap = config_.final_logit_softcapping;
    logits = at::tanh(logits / cap) * cap;
  }
  return logits;
}

at::Tensor LlamaModel::Forward(const at::Tensor& ids) const { return Forward(ids, nullptr); }

at::Tensor LlamaModel::Forward(const at::Tensor& ids,
                               std::vector<at::Tensor>* layer_outputs) const {
  at::Tensor h = Embed(ids);
  const RotaryTables rope = Rotary(ids.size(1), h.device(), h.scalar_type());
  const bool checkpointed = gradient_checkpointing_ && at::GradMode::is_enabled();
  for (int64_t i = 0; i < num_layers(); ++i) {
    if (checkpointed) {
      // The checkpoint node is reached in the backward pass only through an input that requires
      // grad; a frozen embedding's output does not, so it becomes a leaf that does.
      if (!h.requires_grad()) h = h.detach().requires_grad_(true);
      const DecoderLayer* layer = &layers_[i];
      const LlamaConfig* config = &config_;
      h = CheckpointedCall([layer, config, rope,
                            i](const at::Tensor& x) { return layer->Forward(*config, x, rope, i); },
                           h);
    } else {
      h = layers_[i].Forward(config_, h, rope, i);
    }
    if (layer_outputs) layer_outputs->push_back(h);
  }
  return Head(h);
}

absl::StatusOr<at::Tensor> LlamaModel::LayerTensor(int64_t layer, const std::string& name) const {
  if (layer < 0 || layer >= num_layers())
    return absl::NotFoundError(absl::StrCat("no decoder layer ", layer));
  // Tensors() hands out pointers for loading; here they are only read.
  for (auto& [n, t] : const_cast<DecoderLayer&>(layers_[layer]).Tensors()) {
    if (n == name) return t->detach();
  }
  return absl::NotFoundError(absl::StrCat("no tensor ", LayerName(layer, name)));
}

absl::StatusOr<LlamaModel> LlamaModel::Derive(const LlamaConfig& config,
                                              const LayerTensorSource& layer_tensor) const {
  auto source = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
    constexpr size_t kPrefix = sizeof(kLayerPrefix) - 1;
    if (name.rfind(kLayerPrefix, 0) == 0) {
      const size_t dot = name.find('.', kPrefix);
      return layer_tensor(std::stoll(name.substr(kPrefix, dot - kPrefix)), name.substr(dot + 1));
    }
    if (name == "model.embed_tokens.weight") return embed_tokens_.detach().clone();
    if (name == "model.norm.weight") return norm_.detach().clone();
    if (name == "lm_head.weight") return lm_head_.detach().clone();  // the embeddings when tied
    return absl::NotFoundError(absl::StrCat("no tensor ", name));
  };
  return FromTensors(config, source, dtype(), device());
}

std::vector<std::pair<std::string, at::Tensor*>> LlamaModel::NamedParameters() {
  std::vector<std::pair<std::string, at::Tensor*>> out;
  out.emplace_back("model.embed_tokens.weight", &embed_tokens_);
  for (int64_t i = 0; i < num_layers(); ++i) {
    for (auto& [name, t] : layers_[i].Tensors()) out.emplace_back(LayerName(i, name), t);
  }
  out.emplace_back("model.norm.weight", &norm_);
  if (!config_.tie_word_embeddings) out.emplace_back("lm_head.weight", &lm_head_);
  return out;
}

bool LlamaModel::has_adapters() const {
  for (const DecoderLayer& layer : layers_) {
    for (const auto& [name, linear] : layer.Linears())
      if (linear->lora.defined()) return true;
  }
  return false;
}

std::vector<std::pair<std::string, at::Tensor*>> LlamaModel::TrainableParameters() {
  if (!has_adapters()) return NamedParameters();
  std::vector<std::pair<std::string, at::Tensor*>> out;
  for (int64_t i = 0; i < num_layers(); ++i) {
    for (auto& [name, linear] : layers_[i].Linears()) {
      if (!linear->lora.defined()) continue;
      const std::string base = "base_model.model." + LayerName(i, name);
      out.emplace_back(base + ".lora_A.weight", &linear->lora.a);
      out.emplace_back(base + ".lora_B.weight", &linear->lora.b);
    }
  }
  return out;
}

void LlamaModel::SetTrainable(bool trainable) {
  for (auto& [name, t] : TrainableParameters()) t->set_requires_grad(trainable);
  if (config_.tie_word_embeddings) lm_head_ = embed_tokens_;
}

int64_t LlamaModel::NumParameters() const {
  int64_t n = 0;
  for (auto& [name, t] : const_cast<LlamaModel*>(this)->NamedParameters()) n += t->numel();
  return n;
}

LlamaModel LlamaModel::To(at::Device device, at::ScalarType dtype) const {
  LlamaModel copy = *this;
  for (auto& [name, t] : copy.NamedParameters()) {
    *t = t->detach().to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
  }
  if (config_.tie_word_embeddings) copy.lm_head_ = copy.embed_tokens_;
  for (DecoderLayer& layer : copy.layers_) MoveLinearExtras(layer, device);
  return copy;
}

}  // namespace squeeze
