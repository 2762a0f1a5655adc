// A Llama-family decoder in libtorch, holding its weights under their Hugging Face names.
//
// Compression works one decoder layer at a time, so the model exposes its pieces: Embed, one
// DecoderLayer::Forward per layer (with an observer that sees the input of every linear layer),
// and Head. Forward() is those pieces in sequence and nothing more, so the per-layer and
// whole-model paths cannot drift apart.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model/llama_config.h"
#include "common/tensor/safetensors.h"

namespace squeeze {

// Sees the input of each linear layer as it is computed. `name` is the module path inside the
// decoder layer: "self_attn.q_proj", "mlp.down_proj", ...
class LinearObserver {
 public:
  virtual ~LinearObserver() = default;
  virtual void OnLinearInput(int64_t layer, absl::string_view name, const at::Tensor& input) = 0;
};

// Symmetric integer quantization of a linear's inputs (W8A8 models): per token, with the scale
// computed at run time from each row's absmax, or per tensor, with a scale calibrated beforehand.
// Forward rounds the inputs to that grid and multiplies in floating point: what an integer kernel
// computes up to its accumulator, so evaluation measures the activations' rounding.
struct ActivationQuant {
  enum class Kind { kNone, kDynamicPerToken, kStaticPerTensor };
  Kind kind = Kind::kNone;
  int bits = 8;
  at::Tensor scale;  // [1] float32, static only
};

// `x` rounded to `quant`'s grid (returned as it is for kNone), in x's dtype.
at::Tensor QuantizeActivations(const at::Tensor& x, const ActivationQuant& quant);

// A linear weight held in a compact stored form (the frozen 4-bit base under trained adapters) and
// expanded only while its layer runs, so that a model's resident memory is its stored size.
class PackedLinearWeight {
 public:
  virtual ~PackedLinearWeight() = default;
  // The weight [out, in] in `dtype`, on the device the packed tensors are on.
  virtual at::Tensor Dequantize(at::ScalarType dtype) const = 0;
  virtual int64_t out_features() const = 0;
  virtual int64_t in_features() const = 0;
  // Bytes the packed form holds (codes and scales).
  virtual int64_t StorageBytes() const = 0;
  virtual std::shared_ptr<const PackedLinearWeight> To(at::Device device) const = 0;
};

// A low-rank adapter (LoRA, Hu et al. 2021) beside a frozen weight:
//   y = W x + scale * B (A dropout(x)),  scale = alpha / rank,
// with A [rank, in] and B [out, rank] trained in float32. Dropout applies while gradients are
// recorded (training), never in evaluation.
struct LoraAdapter {
  at::Tensor a;  // [rank, in]
  at::Tensor b;  // [out, rank]
  double scale = 1.0;
  double dropout = 0.0;
  bool defined() const { return a.defined(); }
};

struct Linear {
  at::Tensor weight;  // [out, in]; undefined when `packed` holds it
  at::Tensor bias;    // [out] or undefined
  ActivationQuant input_quant;
  std::shared_ptr<const PackedLinearWeight> packed;
  LoraAdapter lora;
  at::Tensor Forward(const at::Tensor& x) const;
  int64_t out_features() const {
    return weight.defined() ? weight.size(0) : packed->out_features();
  }
  int64_t in_features() const { return weight.defined() ? weight.size(1) : packed->in_features(); }
};

// The rotary position tables for one sequence length: [seq, head_dim] each, in the model dtype.
// Models whose sliding layers rotate with another base (Gemma-3) carry their tables too.
struct RotaryTables {
  at::Tensor cos;
  at::Tensor sin;
  at::Tensor local_cos;  // undefined when every layer uses cos/sin
  at::Tensor local_sin;
  // Rows [start, start + n): the positions of a decoding step.
  RotaryTables Rows(int64_t start, int64_t n) const;
};

// One layer's keys and values of the positions seen so far, for incremental decoding:
// [batch, kv_heads, capacity, head_dim] each, positions [0, length) filled.
struct LayerKvCache {
  at::Tensor k;
  at::Tensor v;
  int64_t length = 0;
};

class DecoderLayer {
 public:
  at::Tensor input_layernorm;  // [hidden]
  // [hidden]: the MLP's input norm; with sandwich norms (Gemma) the attention output's norm.
  at::Tensor post_attention_layernorm;
  // [hidden], with sandwich norms only: the MLP's input and output norms.
  at::Tensor pre_feedforward_layernorm, post_feedforward_layernorm;
  Linear q_proj, k_proj, v_proj, o_proj;
  Linear gate_proj, up_proj, down_proj;
  at::Tensor q_norm, k_norm;  // [head_dim], Qwen3 and Gemma-3 only (undefined otherwise)

  // [batch, seq, hidden] -> [batch, seq, hidden].
  // With `cache`, `hidden` holds the positions after the cached ones (`rope` has their rows only):
  // their keys and values are appended to the cache and attention reads all of it.
  at::Tensor Forward(const LlamaConfig& config, const at::Tensor& hidden, const RotaryTables& rope,
                     int64_t layer_index = 0, LinearObserver* observer = nullptr,
                     LayerKvCache* cache = nullptr) const;
  // The pieces Forward is made of, for callers that run a layer in stages (GPTQ's sequential
  // order). Forward is exactly:
  //   x = AttentionInput(hidden)                      q/k/v's input
  //   a = AttentionCore(x)                            o_proj's input [batch, seq, heads * head_dim]
  //   r = AttentionResidual(hidden, o_proj(a))
  //   y = MlpInput(r)                                 gate/up's input
  //   m = MlpActivation(y)                            down_proj's input, act(gate(y)) * up(y)
  //   out = MlpResidual(r, down_proj(m))
  at::Tensor AttentionInput(const LlamaConfig& config, const at::Tensor& hidden) const;
  // `layer_index` picks the layer's attention kind (window, rotary tables).
  at::Tensor AttentionCore(const LlamaConfig& config, int64_t layer_index, const at::Tensor& normed,
                           const RotaryTables& rope, LayerKvCache* cache = nullptr) const;
  at::Tensor AttentionResidual(const LlamaConfig& config, const at::Tensor& hidden,
                               const at::Tensor& attention_out) const;
  at::Tensor MlpInput(const LlamaConfig& config, const at::Tensor& residual) const;
  at::Tensor MlpActivation(const LlamaConfig& config, const at::Tensor& normed) const;
  at::Tensor MlpResidual(const LlamaConfig& config, const at::Tensor& residual,
                         const at::Tensor& mlp_out) const;

  // The linear layers by their names inside the layer, in "true sequential" order.
  std::vector<std::pair<std::string, Linear*>> Linears();
  std::vector<std::pair<std::string, const Linear*>> Linears() const;
  // Every tensor of the layer under its name inside the layer ("self_attn.q_proj.weight", ...).
  std::vector<std::pair<std::string, at::Tensor*>> Tensors();
  // A copy on another device and/or dtype.
  DecoderLayer To(at::Device device, at::ScalarType dtype) const;
};

class LlamaModel {
 public:
  // Loads config.json and the weights (single file or sharded) of a Hugging Face directory.
  static absl::StatusOr<LlamaModel> Load(const std::string& dir, at::ScalarType dtype = at::kFloat,
                                         at::Device device = at::kCPU);
  // Fetches a tensor by its Hugging Face name (any float dtype, any device).
  using TensorSource = std::function<absl::StatusOr<at::Tensor>(const std::string& name)>;
  // Builds the model from `source`, checking every shape against the config. `where(name)`, when
  // given, names the tensor's origin in errors (a file).
  static absl::StatusOr<LlamaModel> FromTensors(
      const LlamaConfig& config, const TensorSource& source, at::ScalarType dtype,
      at::Device device, const std::function<std::string(const std::string&)>& where = {});
  static absl::StatusOr<LlamaModel> FromCheckpoint(const LlamaConfig& config,
                                                   const CheckpointReader& weights,
                                                   at::ScalarType dtype, at::Device device);
  // Normal(0, 0.02) weights, unit norms, zero biases; deterministic for a seed.
  static LlamaModel RandomInit(const LlamaConfig& config, uint64_t seed,
                               at::ScalarType dtype = at::kFloat, at::Device device = at::kCPU);

  // Overwrites every parameter in place (keeping tensor identity, which optimizers rely on) with
  // the same-named tensor of `weights`; shapes must match.
  absl::Status CopyWeightsFrom(const CheckpointReader& weights);

  // Writes config.json and model.safetensors (sharded above `max_shard_bytes` when > 0).
  absl::Status Save(const std::string& dir, at::ScalarType dtype,
                    uint64_t max_shard_bytes = 0) const;

  const LlamaConfig& config() const { return config_; }
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  DecoderLayer& layer(int64_t i) { return layers_[i]; }
  const DecoderLayer& layer(int64_t i) const { return layers_[i]; }
  at::ScalarType dtype() const { return embed_tokens_.scalar_type(); }
  at::Device device() const { return embed_tokens_.device(); }

  // ids [batch, seq] (int64) -> hidden [batch, seq, hidden].
  at::Tensor Embed(const at::Tensor& ids) const;
  RotaryTables Rotary(int64_t seq_len, at::Device device, at::ScalarType dtype) const;
  // Final norm and LM head: hidden [batch, seq, hidden] -> logits [batch, seq, vocab].
  at::Tensor Head(const at::Tensor& hidden) const;
  // The whole model: ids -> logits.
  at::Tensor Forward(const at::Tensor& ids) const;
  // The same, also appending each decoder layer's output [batch, seq, hidden] to `layer_outputs`
  // (what hidden-state distillation compares).
  at::Tensor Forward(const at::Tensor& ids, std::vector<at::Tensor>* layer_outputs) const;

  // Decoder layer `layer`'s tensor `name` ("mlp.up_proj.weight"), detached, not copied.
  absl::StatusOr<at::Tensor> LayerTensor(int64_t layer, const std::string& name) const;
  // A model of `config` made from this one: the embeddings, final norm and head are copied, and
  // tensor `name` of the new model's decoder layer `layer` is `layer_tensor(layer, name)`
  // (cutting layers for a student, narrowing them for structured pruning).
  using LayerTensorSource =
      std::function<absl::StatusOr<at::Tensor>(int64_t layer, const std::string& name)>;
  absl::StatusOr<LlamaModel> Derive(const LlamaConfig& config,
                                    const LayerTensorSource& layer_tensor) const;

  // Every tensor of the model once, under its Hugging Face name (a tied head is not repeated).
  // Linears held packed are not listed (their weights are not tensors of the model).
  std::vector<std::pair<std::string, at::Tensor*>> NamedParameters();
  // What training updates: the adapters' A and B under PEFT's names
  // ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") when any linear has one
  // (the rest is frozen), otherwise NamedParameters().
  std::vector<std::pair<std::string, at::Tensor*>> TrainableParameters();
  bool has_adapters() const;
  // Sets requires_grad on TrainableParameters() only.
  void SetTrainable(bool trainable);
  // Recompute each decoder layer's activations in the backward pass instead of keeping them
  // (gradient checkpointing): activation memory of one layer instead of all of them, for one more
  // forward pass. Applies while gradients are recorded.
  void set_gradient_checkpointing(bool on) { gradient_checkpointing_ = on; }
  int64_t NumParameters() const;
  LlamaModel To(at::Device device, at::ScalarType dtype) const;

 private:
  LlamaConfig config_;
  at::Tensor embed_tokens_;  // [vocab, hidden]
  std::vector<DecoderLayer> layers_;
  at::Tensor norm_;            // [hidden]
  at::Tensor lm_head_;         // [vocab, hidden]; the same tensor as embed_tokens_ when tied
  at::Tensor inv_freq_;        // [head_dim / 2], float32, on CPU
  at::Tensor local_inv_freq_;  // the same for sliding layers with their own base, or undefined
  bool gradient_checkpointing_ = false;
};

// Decoder layer `index` of a checkpoint alone (what streams one layer at a time), in `dtype` on
// `device`, every shape checked against `config`.
// A source of tensors by the names this model uses (one per linear) over a source of stored
// tensors: a part of a fused linear (Phi-3's q_proj inside qkv_proj) is cut from the fused
// tensor, rows [offset, offset + out). Other names pass through. The last fused tensor read is
// kept, so the parts of one fused linear read it once.
LlamaModel::TensorSource SplitFusedSource(const LlamaConfig& config,
                                          LlamaModel::TensorSource stored);

// The inverse for writing: the parts of each fused linear in `tensors` (".weight", ".bias", or a
// GPTQ linear's ".qweight", ".qzeros", ".scales" and ".g_idx") are replaced by the fused tensor,
// concatenated along the output dimension. InvalidArgument when the parts' g_idx differ.
absl::Status FuseStoredTensors(const LlamaConfig& config,
                               std::vector<std::pair<std::string, at::Tensor>>& tensors);

absl::StatusOr<DecoderLayer> LoadDecoderLayer(const LlamaConfig& config, int64_t index,
                                              const CheckpointReader& weights, at::ScalarType dtype,
                                              at::Device device);
// The same from `stored`, tensors by their stored names (fused linears are split here); `where`
// names a tensor's file in errors.
absl::StatusOr<DecoderLayer> LoadDecoderLayer(
    const LlamaConfig& config, int64_t index, const LlamaModel::TensorSource& stored,
    const std::function<std::string(const std::string&)>& where, at::ScalarType dtype,
    at::Device device);

// Computes x * rsqrt(mean(x^2) + eps) in float32 and scales by `weight` in the input dtype, as the
// reference implementation does. On CUDA (CUDA builds) one fused kernel with its own backward;
// RmsNormComposite is the ATen formulation it must match.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight, double eps);
at::Tensor RmsNormComposite(const at::Tensor& x, const at::Tensor& weight, double eps);

// The gated MLP activation silu(gate) * up; fused on CUDA like RmsNorm.
at::Tensor SwiGlu(const at::Tensor& gate, const at::Tensor& up);
at::Tensor SwiGluComposite(const at::Tensor& gate, const at::Tensor& up);

// The model's RMSNorm: RmsNorm, or for Gemma x * rsqrt(mean(x^2) + eps) * (1 + weight), all in
// float32 before the cast back.
at::Tensor ModelRmsNorm(const LlamaConfig& config, const at::Tensor& x, const at::Tensor& weight);

// The MLP's gated activation: SwiGlu, or for Gemma gelu_tanh(gate) * up.
at::Tensor GatedActivation(const LlamaConfig& config, const at::Tensor& gate, const at::Tensor& up);

// Inverse rotary frequencies (float32), including llama3 or linear scaling when configured.
// `local`: those of sliding layers with their own base (rope_local_theta), never scaled.
at::Tensor RotaryInverseFrequencies(const LlamaConfig& config, bool local = false);
// The rotary tables of `config` for `seq_len` positions (LlamaModel::Rotary without a model).
RotaryTables MakeRotaryTables(const LlamaConfig& config, int64_t seq_len, at::Device device,
                              at::ScalarType dtype);

}  // namespace squeeze
