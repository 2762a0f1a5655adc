// The Hugging Face `config.json` of a Llama-family decoder (llama, mistral, qwen2 and qwen3 share
// it; qwen3 adds per-head query/key norms).
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
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  std::string torch_dtype = "float32";
  // The project's byte-level example models mark themselves with this (ids 0..255 are bytes).
  bool byte_tokenizer = false;
  // Fields we do not model (quantization_config, architectures, ...) are kept verbatim here so
  // that a load/save round trip loses nothing.
  std::string extra_json = "{}";

  int64_t num_kv_groups() const { return num_attention_heads / num_key_value_heads; }
  // Qwen3 normalizes every query and key head (RMSNorm over head_dim) before the rotation.
  bool qk_norm() const { return model_type == "qwen3"; }
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

// Every tensor a checkpoint of `config` holds, by Hugging Face name, with its shape.
std::vector<std::pair<std::string, std::vector<int64_t>>> CheckpointTensorShapes(
    const LlamaConfig& config);

// A config.json is a few KB; a larger one is refused rather than read.
constexpr int64_t kMaxConfigBytes = int64_t{1} << 20;

absl::StatusOr<LlamaConfig> LoadLlamaConfig(const std::string& model_dir);
std::string LlamaConfigToJson(const LlamaConfig& config);

}  // namespace squeeze
