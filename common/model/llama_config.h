// The Hugging Face `config.json` of a Llama-family decoder. llama, mistral, qwen2, qwen3, phi3 and
// gemma3_text share it; the differences are switches here (per-head query/key norms, fused
// projections, Gemma's norms, activation and alternating attention).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace squeeze {

// `rope_scaling` of type "llama3": frequencies below the original context are stretched by
// `factor`, high ones kept, the band between blended smoothly.
// `rope_type` "linear" (Gemma-3's global layers) divides every frequency by `factor` and uses no
// other field.
struct RopeScaling {
  std::string rope_type = "llama3";
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  std::string model_type = "llama";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // defaults to num_attention_heads
  int64_t head_dim = 0;             // defaults to hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  // Each position attends to at most this many positions, itself included (Mistral); 0: all.
  int64_t sliding_window = 0;
  // Per layer, "sliding_attention" or "full_attention" (Gemma-3); empty: every layer is sliding
  // when sliding_window is set.
  std::vector<std::string> layer_types;
  // The rotary base of sliding layers when it differs from rope_theta (Gemma-3's
  // rope_local_base_freq); 0: the same tables for every layer. Sliding layers never scale.
  double rope_local_theta = 0.0;
  // Attention scores are scaled by query_pre_attn_scalar^-1/2 (Gemma); 0: head_dim.
  double query_pre_attn_scalar = 0.0;
  // Logits become cap * tanh(logits / cap) (Gemma-2 style); 0: none.
  double final_logit_softcapping = 0.0;
  // The MLP's gate activation: "silu" (SwiGLU) or "gelu_pytorch_tanh" (GeGLU).
  std::string hidden_activation = "silu";
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  std::string torch_dtype = "float32";
  // The project's byte-level example models mark themselves with this (ids 0..255 are bytes).
  bool byte_tokenizer = false;
  // Fields we do not model (quantization_config, architectures, ...) are kept verbatim here so
  // that a load/save round trip loses nothing.
  std::string extra_json = "{}";

  int64_t num_kv_groups() const { return num_attention_heads / num_key_value_heads; }
  bool gemma() const { return model_type == "gemma3_text"; }
  // Qwen3 and Gemma-3 normalize every query and key head (RMSNorm over head_dim) before the
  // rotation.
  bool qk_norm() const { return model_type == "qwen3" || gemma(); }
  // Gemma's RMSNorm scales by (1 + w), in float32; its weights are stored as offsets from 1.
  bool norm_plus_one() const { return gemma(); }
  // Gemma normalizes the attention and MLP outputs too (post_attention_layernorm on the
  // attention's output, pre/post_feedforward_layernorm around the MLP).
  bool sandwich_norms() const { return gemma(); }
  // Embeddings are multiplied by sqrt(hidden_size) (Gemma); 1 otherwise.
  double embed_scale() const;
  // Positions layer `layer` attends to (itself included); 0: all.
  int64_t LayerWindow(int64_t layer) const;
  // True when layer `layer` rotates with the local tables (rope_local_theta).
  bool LayerLocalRope(int64_t layer) const;
  double attention_scale() const;
};

// Parses and validates; errors name `source` and the field ("config.json: hidden_size: ...").
absl::StatusOr<LlamaConfig> ParseLlamaConfig(absl::string_view json_text, absl::string_view source);
// A decoder layer's linear layers, in true sequential order, with the shapes `config` implies.
struct LinearShape {
  const char* name;  // "self_attn.q_proj"
  int64_t out, in;
  bool bias;
};
std::vector<LinearShape> DecoderLinearShapes(const LlamaConfig& config);

// Linears a checkpoint stores as one, concatenated along the output dimension in this order:
// Phi-3's self_attn.qkv_proj (q, k, v) and mlp.gate_up_proj (gate, up). Empty for other models.
struct FusedLinear {
  const char* name;                // "self_attn.qkv_proj"
  std::vector<const char*> parts;  // "self_attn.q_proj", ... as DecoderLinearShapes names them
};
std::vector<FusedLinear> FusedLinears(const LlamaConfig& config);

// `config` with only the teacher layers `kept` (a student cut from it): per-layer fields follow.
LlamaConfig KeepLayers(const LlamaConfig& config, const std::vector<int64_t>& kept);
// `config` with `layers` decoder layers (a student of a new shape): Gemma's attention pattern is
// laid out again, five sliding layers to one full.
LlamaConfig WithLayerCount(const LlamaConfig& config, int64_t layers);

// Every tensor a checkpoint of `config` holds, by Hugging Face name, with its shape.
std::vector<std::pair<std::string, std::vector<int64_t>>> CheckpointTensorShapes(
    const LlamaConfig& config);

// A config.json is a few KB; a larger one is refused rather than read.
constexpr int64_t kMaxConfigBytes = int64_t{1} << 20;

absl::StatusOr<LlamaConfig> LoadLlamaConfig(const std::string& model_dir);
std::string LlamaConfigToJson(const LlamaConfig& config);

}  // namespace squeeze
