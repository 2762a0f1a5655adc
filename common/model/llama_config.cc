#include "common/model/llama_config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/base/file_util.h"

namespace squeeze {
namespace {

using json = nlohmann::json;

absl::Status FieldError(absl::string_view source, absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", field, ": ", what));
}

// Reads an optional field of type T; a present field of the wrong type is an error.
template <typename T>
absl::Status Read(const json& j, const char* field, T& out, absl::string_view source,
                  bool required) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    return required ? FieldError(source, field, "required field is missing") : absl::OkStatus();
  }
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) return FieldError(source, field, "expected true or false");
  } else if constexpr (std::is_integral_v<T>) {
    if (!it->is_number_integer()) return FieldError(source, field, "expected an integer");
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!it->is_number()) return FieldError(source, field, "expected a number");
  } else {
    if (!it->is_string()) return FieldError(source, field, "expected a string");
  }
  out = it->get<T>();
  return absl::OkStatus();
}

constexpr const char* kKnownFields[] = {"model_type",
                                        "vocab_size",
                                        "hidden_size",
                                        "intermediate_size",
                                        "num_hidden_layers",
                                        "num_attention_heads",
                                        "num_key_value_heads",
                                        "head_dim",
                                        "rms_norm_eps",
                                        "rope_theta",
                                        "rope_scaling",
                                        "rope_parameters",
                                        "max_position_embeddings",
                                        "tie_word_embeddings",
                                        "attention_bias",
                                        "mlp_bias",
                                        "bos_token_id",
                                        "eos_token_id",
                                        "torch_dtype",
                                        "squeeze_byte_tokenizer"};

// One rotary parameter object ({rope_type, factor, ...}) into `c`'s scaling; `field` names it in
// errors.
absl::Status ParseRopeScaling(const json& j, const std::string& field, absl::string_view source,
                              LlamaConfig& c) {
  const std::string src = absl::StrCat(source, ": ", field);
  RopeScaling r;
  std::string type = "default";
  if (j.contains("rope_type") && j["rope_type"].is_string()) {
    type = j["rope_type"].get<std::string>();
  } else if (j.contains("type") && j["type"].is_string()) {
    type = j["type"].get<std::string>();
  }
  if (type == "default") return absl::OkStatus();  // the same as no scaling
  if (type == "linear") {
    r.rope_type = "linear";
    if (auto s = Read(j, "factor", r.factor, src, true); !s.ok()) return s;
    if (r.factor <= 0) return FieldError(source, field + ".factor", "must be positive");
    c.rope_scaling = r;
    return absl::OkStatus();
  }
  if (type != "llama3") {
    return FieldError(
        source, field + ".rope_type",
        absl::StrCat("\"", type, "\" is not supported (expected llama3, linear or default)"));
  }
  if (auto s = Read(j, "factor", r.factor, src, true); !s.ok()) return s;
  if (auto s = Read(j, "low_freq_factor", r.low_freq_factor, src, true); !s.ok()) return s;
  if (auto s = Read(j, "high_freq_factor", r.high_freq_factor, src, true); !s.ok()) return s;
  if (auto s = Read(j, "original_max_position_embeddings", r.original_max_position_embeddings, src,
                    true);
      !s.ok()) {
    return s;
  }
  if (r.factor <= 0 || r.low_freq_factor <= 0 || r.high_freq_factor <= r.low_freq_factor ||
      r.original_max_position_embeddings <= 0) {
    return FieldError(source, field,
                      "need factor > 0, 0 < low_freq_factor < high_freq_factor and "
                      "original_max_position_embeddings > 0");
  }
  c.rope_scaling = r;
  return absl::OkStatus();
}

// Gemma-3's alternating attention: five sliding layers, then one full, and so on.
std::vector<std::string> GemmaLayerTypes(int64_t layers, int64_t pattern) {
  std::vector<std::string> out;
  for (int64_t i = 0; i < layers; ++i)
    out.push_back((i + 1) % pattern != 0 ? "sliding_attention" : "full_attention");
  return out;
}

}  // namespace

absl::StatusOr<LlamaConfig> ParseLlamaConfig(absl::string_view text, absl::string_view source) {
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a valid JSON object"));
  }
  LlamaConfig c;
#define SQ_READ(field, required) \
  if (auto s = Read(j, #field, c.field, source, required); !s.ok()) return s
  SQ_READ(model_type, false);
  SQ_READ(vocab_size, true);
  SQ_READ(hidden_size, true);
  SQ_READ(intermediate_size, true);
  SQ_READ(num_hidden_layers, true);
  SQ_READ(num_attention_heads, true);
  SQ_READ(num_key_value_heads, false);
  SQ_READ(head_dim, false);
  SQ_READ(rms_norm_eps, false);
  SQ_READ(rope_theta, false);
  SQ_READ(max_position_embeddings, false);
  SQ_READ(tie_word_embeddings, false);
  SQ_READ(attention_bias, false);
  SQ_READ(mlp_bias, false);
  SQ_READ(torch_dtype, false);
#undef SQ_READ
  // Token ids may be a list (several eos ids); the first is the one we use.
  for (auto [field, out] :
       {std::pair{"bos_token_id", &c.bos_token_id}, std::pair{"eos_token_id", &c.eos_token_id}}) {
    auto it = j.find(field);
    if (it == j.end() || it->is_null()) continue;
    if (it->is_number_integer()) {
      *out = it->get<int64_t>();
    } else if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) {
      *out = (*it)[0].get<int64_t>();
    } else {
      return FieldError(source, field, "expected an integer or a list of integers");
    }
  }
  if (auto s = Read(j, "squeeze_byte_tokenizer", c.byte_tokenizer, source, false); !s.ok())
    return s;

  if (c.model_type == "gemma3") {
    return FieldError(source, "model_type",
                      "\"gemma3\" (text and vision) is not supported; the text model "
                      "(gemma3_text, Gemma3ForCausalLM) is");
  }
  if (c.model_type != "llama" && c.model_type != "mistral" && c.model_type != "qwen2" &&
      c.model_type != "qwen3" && c.model_type != "phi3" && c.model_type != "gemma3_text") {
    return FieldError(source, "model_type",
                      absl::StrCat("\"", c.model_type,
                                   "\" is not supported (expected llama, mistral, qwen2, qwen3, "
                                   "phi3 or gemma3_text)"));
  }
  if (c.gemma()) {
    // Gemma-3's own defaults (Gemma3TextConfig), where a field is absent.
    if (!j.contains("tie_word_embeddings")) c.tie_word_embeddings = true;
    if (!j.contains("rope_theta")) c.rope_theta = 1e6;
    c.hidden_activation = "gelu_pytorch_tanh";
    c.query_pre_attn_scalar = 256;
    c.rope_local_theta = 1e4;
    c.sliding_window = 4096;
    if (auto s = Read(j, "query_pre_attn_scalar", c.query_pre_attn_scalar, source, false); !s.ok())
      return s;
    if (c.query_pre_attn_scalar <= 0)
      return FieldError(source, "query_pre_attn_scalar", "must be positive");
    if (auto s = Read(j, "rope_local_base_freq", c.rope_local_theta, source, false); !s.ok())
      return s;
    if (c.rope_local_theta <= 0)
      return FieldError(source, "rope_local_base_freq", "must be positive");
    if (auto it = j.find("sliding_window"); it != j.end() && !it->is_null()) {
      if (!it->is_number_integer() || it->get<int64_t>() < 1)
        return FieldError(source, "sliding_window", "expected a positive integer");
      c.sliding_window = it->get<int64_t>();
    }
    int64_t pattern = 6;
    if (auto s = Read(j, "sliding_window_pattern", pattern, source, false); !s.ok()) return s;
    if (pattern < 1) return FieldError(source, "sliding_window_pattern", "must be positive");
    if (auto it = j.find("layer_types"); it != j.end() && !it->is_null()) {
      if (!it->is_array())
        return FieldError(source, "layer_types", "expected a list of attention kinds");
      for (size_t i = 0; i < it->size(); ++i) {
        const json& kind = (*it)[i];
        if (!kind.is_string() || (kind != "sliding_attention" && kind != "full_attention")) {
          return FieldError(source, absl::StrCat("layer_types[", i, "]"),
                            "expected \"sliding_attention\" or \"full_attention\"");
        }
        c.layer_types.push_back(kind.get<std::string>());
      }
      if (static_cast<int64_t>(c.layer_types.size()) != c.num_hidden_layers) {
        return FieldError(source, "layer_types",
                          absl::StrCat(c.layer_types.size(), " entries for ", c.num_hidden_layers,
                                       " layers (num_hidden_layers)"));
      }
    } else {
      c.layer_types = GemmaLayerTypes(c.num_hidden_layers, pattern);
    }
    if (auto s = Read(j, "final_logit_softcapping", c.final_logit_softcapping, source, false);
        !s.ok())
      return s;
    if (c.final_logit_softcapping < 0)
      return FieldError(source, "final_logit_softcapping", "must be positive or null");
  }
  // The MLP's activation: every Llama-family model uses SiLU; Gemma uses tanh-approximated GELU.
  for (const char* field : {"hidden_activation", "hidden_act"}) {
    auto it = j.find(field);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_string()) return FieldError(source, field, "expected a string");
    std::string act = it->get<std::string>();
    if (act == "gelu_tanh" || act == "gelu_new") act = "gelu_pytorch_tanh";
    if (act != "silu" && act != "gelu_pytorch_tanh") {
      return FieldError(source, field,
                        absl::StrCat("\"", act,
                                     "\" is not supported (expected silu or "
                                     "gelu_pytorch_tanh)"));
    }
    c.hidden_activation = act;
    break;
  }
  // Soft-capped attention scores need the scores materialized in every kernel; no supported
  // model uses them.
  if (auto it = j.find("attn_logit_softcapping"); it != j.end() && !it->is_null())
    return FieldError(source, "attn_logit_softcapping", "is not supported (expected null)");
  if (c.model_type == "phi3") {
    // Phi-3 rotates the whole head (Phi-4-mini's partial rotation is another model) and has no
    // biases in its fused projections.
    if (auto it = j.find("partial_rotary_factor");
        it != j.end() && !(it->is_number() && it->get<double>() == 1.0))
      return FieldError(source, "partial_rotary_factor", "only 1.0 is supported for phi3");
    if (c.attention_bias || c.mlp_bias)
      return FieldError(source, "attention_bias", "biases are not supported for phi3");
  }
  // Qwen2/3 configs carry sliding-window fields that are off in every released model; a model
  // that turns it on attends differently, so it is refused rather than run wrongly.
  if (auto it = j.find("use_sliding_window"); it != j.end() && it->is_boolean() && it->get<bool>())
    return FieldError(source, "use_sliding_window",
                      "true is not supported (sliding-window attention)");
  if (c.model_type == "qwen2" && !j.contains("attention_bias")) c.attention_bias = true;
  // Mistral attends within a sliding window (`sliding_window`, null: none). Qwen's field of the
  // same name applies only with use_sliding_window, refused above. The field stays in extra_json
  // either way, so a round trip writes it back as it was.
  if (c.model_type == "mistral" || c.model_type == "phi3") {
    if (auto it = j.find("sliding_window"); it != j.end() && !it->is_null()) {
      if (!it->is_number_integer() || it->get<int64_t>() < 1)
        return FieldError(source, "sliding_window", "expected a positive integer or null");
      c.sliding_window = it->get<int64_t>();
    }
  }

  // Bounds far above any real model: a value beyond them is a typo or an attack, and would make
  // shapes (and allocations) that cannot exist.
  auto in_range = [&](const char* field, int64_t v, int64_t max) -> absl::Status {
    if (v <= 0) return FieldError(source, field, absl::StrCat("must be positive, got ", v));
    if (v > max)
      return FieldError(source, field, absl::StrCat("must be at most ", max, ", got ", v));
    return absl::OkStatus();
  };
  for (auto [field, v, max] :
       {std::tuple{"vocab_size", c.vocab_size, int64_t{1} << 22},
        std::tuple{"hidden_size", c.hidden_size, int64_t{1} << 17},
        std::tuple{"intermediate_size", c.intermediate_size, int64_t{1} << 19},
        std::tuple{"num_hidden_layers", c.num_hidden_layers, int64_t{4096}},
        std::tuple{"num_attention_heads", c.num_attention_heads, int64_t{4096}}}) {
    if (auto s = in_range(field, v, max); !s.ok()) return s;
  }
  if (c.max_position_embeddings > (int64_t{1} << 24)) {
    return FieldError(
        source, "max_position_embeddings",
        absl::StrCat("must be at most ", int64_t{1} << 24, ", got ", c.max_position_embeddings));
  }
  if (c.num_key_value_heads == 0) c.num_key_value_heads = c.num_attention_heads;
  if (auto s = in_range("num_key_value_heads", c.num_key_value_heads, 4096); !s.ok()) return s;
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return FieldError(source, "num_key_value_heads",
                      absl::StrCat("must divide num_attention_heads (", c.num_attention_heads,
                                   "), got ", c.num_key_value_heads));
  }
  if (c.head_dim == 0) {
    if (c.hidden_size % c.num_attention_heads != 0) {
      return FieldError(source, "head_dim",
                        "absent, and hidden_size is not a multiple of num_attention_heads");
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  if (c.head_dim <= 0 || c.head_dim % 2 != 0 || c.head_dim > 4096) {
    return FieldError(source, "head_dim",
                      absl::StrCat("must be positive, even and at most 4096, got ", c.head_dim));
  }
  if (c.rms_norm_eps <= 0) return FieldError(source, "rms_norm_eps", "must be positive");
  // Rotary parameters come as top-level rope_theta + rope_scaling (transformers 4.x) or as one
  // rope_parameters object holding rope_theta too (transformers 5.x); accept both. A model with
  // several attention kinds (Gemma-3) has one object per kind there.
  const bool nested = j.contains("rope_parameters") && j["rope_parameters"].is_object();
  const char* rope_field = nested ? "rope_parameters" : "rope_scaling";
  if (auto it = j.find(rope_field); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return FieldError(source, rope_field, "expected an object or null");
    std::string field = rope_field;
    const json* global = &*it;
    if (nested && it->contains("full_attention")) {
      field = "rope_parameters.full_attention";
      global = &(*it)["full_attention"];
      if (!global->is_object()) return FieldError(source, field, "expected an object");
      if (it->contains("sliding_attention")) {
        const json& local = (*it)["sliding_attention"];
        const std::string local_field = "rope_parameters.sliding_attention";
        if (!local.is_object()) return FieldError(source, local_field, "expected an object");
        LlamaConfig scaled;
        if (auto s = ParseRopeScaling(local, local_field, source, scaled); !s.ok()) return s;
        if (scaled.rope_scaling)
          return FieldError(source, local_field + ".rope_type", "only default is supported");
        if (auto s = Read(local, "rope_theta", c.rope_local_theta,
                          absl::StrCat(source, ": ", local_field), false);
            !s.ok())
          return s;
        if (c.rope_local_theta <= 0)
          return FieldError(source, local_field + ".rope_theta", "must be positive");
      }
    }
    if (nested) {
      if (auto s =
              Read(*global, "rope_theta", c.rope_theta, absl::StrCat(source, ": ", field), false);
          !s.ok())
        return s;
    }
    if (auto s = ParseRopeScaling(*global, field, source, c); !s.ok()) return s;
  }
  if (c.rope_theta <= 0) return FieldError(source, "rope_theta", "must be positive");

  json extra = json::object();
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const char* k : kKnownFields) known = known || it.key() == k;
    // Gemma's layer_types is rewritten from the parsed list (a student keeps fewer layers).
    known = known || (c.gemma() && it.key() == "layer_types");
    if (!known) extra[it.key()] = *it;
  }
  c.extra_json = extra.dump();
  return c;
}

std::vector<LinearShape> DecoderLinearShapes(const LlamaConfig& c) {
  const int64_t h = c.hidden_size, q_out = c.num_attention_heads * c.head_dim,
                kv_out = c.num_key_value_heads * c.head_dim, f = c.intermediate_size;
  return {{"self_attn.q_proj", q_out, h, c.attention_bias},
          {"self_attn.k_proj", kv_out, h, c.attention_bias},
          {"self_attn.v_proj", kv_out, h, c.attention_bias},
          {"self_attn.o_proj", h, q_out, c.attention_bias && c.model_type != "qwen2"},
          {"mlp.gate_proj", f, h, c.mlp_bias},
          {"mlp.up_proj", f, h, c.mlp_bias},
          {"mlp.down_proj", h, f, c.mlp_bias}};
}

double LlamaConfig::embed_scale() const {
  return gemma() ? std::sqrt(static_cast<double>(hidden_size)) : 1.0;
}

int64_t LlamaConfig::LayerWindow(int64_t layer) const {
  if (sliding_window <= 0) return 0;
  if (layer_types.empty()) return sliding_window;
  return layer < static_cast<int64_t>(layer_types.size()) &&
                 layer_types[layer] == "sliding_attention"
             ? sliding_window
             : 0;
}

bool LlamaConfig::LayerLocalRope(int64_t layer) const {
  return rope_local_theta > 0 && LayerWindow(layer) > 0;
}

double LlamaConfig::attention_scale() const {
  return 1.0 / std::sqrt(query_pre_attn_scalar > 0 ? query_pre_attn_scalar
                                                   : static_cast<double>(head_dim));
}

LlamaConfig KeepLayers(const LlamaConfig& config, const std::vector<int64_t>& kept) {
  LlamaConfig out = config;
  out.num_hidden_layers = static_cast<int64_t>(kept.size());
  if (!config.layer_types.empty()) {
    out.layer_types.clear();
    for (int64_t l : kept) {
      out.layer_types.push_back(l >= 0 && l < static_cast<int64_t>(config.layer_types.size())
                                    ? config.layer_types[l]
                                    : "full_attention");
    }
  }
  return out;
}

LlamaConfig WithLayerCount(const LlamaConfig& config, int64_t layers) {
  LlamaConfig out = config;
  out.num_hidden_layers = layers;
  if (!config.layer_types.empty()) out.layer_types = GemmaLayerTypes(layers, 6);
  return out;
}

std::vector<FusedLinear> FusedLinears(const LlamaConfig& c) {
  if (c.model_type != "phi3") return {};
  return {{"self_attn.qkv_proj", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}},
          {"mlp.gate_up_proj", {"mlp.gate_proj", "mlp.up_proj"}}};
}

std::vector<std::pair<std::string, std::vector<int64_t>>> CheckpointTensorShapes(
    const LlamaConfig& c) {
  const int64_t h = c.hidden_size;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out = {
      {"model.embed_tokens.weight", {c.vocab_size, h}}, {"model.norm.weight", {h}}};
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, h}});
  const std::vector<FusedLinear> fused = FusedLinears(c);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string layer = absl::StrCat("model.layers.", i, ".");
    out.push_back({layer + "input_layernorm.weight", {h}});
    out.push_back({layer + "post_attention_layernorm.weight", {h}});
    if (c.sandwich_norms()) {
      out.push_back({layer + "pre_feedforward_layernorm.weight", {h}});
      out.push_back({layer + "post_feedforward_layernorm.weight", {h}});
    }
    if (c.qk_norm()) {
      out.push_back({layer + "self_attn.q_norm.weight", {c.head_dim}});
      out.push_back({layer + "self_attn.k_norm.weight", {c.head_dim}});
    }
    // A fused linear is listed where its first part would be; later parts add their rows.
    std::map<std::string, const char*> fused_name;  // part -> its fused linear
    for (const FusedLinear& f : fused)
      for (const char* part : f.parts) fused_name[part] = f.name;
    std::map<std::string, size_t> fused_entry;  // fused linear -> its index in `out`
    for (const LinearShape& l : DecoderLinearShapes(c)) {
      auto group = fused_name.find(l.name);
      if (group == fused_name.end()) {
        out.push_back({absl::StrCat(layer, l.name, ".weight"), {l.out, l.in}});
        if (l.bias) out.push_back({absl::StrCat(layer, l.name, ".bias"), {l.out}});
      } else if (auto it = fused_entry.find(group->second); it != fused_entry.end()) {
        out[it->second].second[0] += l.out;
      } else {
        fused_entry[group->second] = out.size();
        out.push_back({absl::StrCat(layer, group->second, ".weight"), {l.out, l.in}});
      }
    }
  }
  return out;
}

absl::StatusOr<LlamaConfig> LoadLlamaConfig(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  auto text = ReadFileToString(path, kMaxConfigBytes);
  if (!text.ok()) return text.status();
  return ParseLlamaConfig(*text, path);
}

std::string LlamaConfigToJson(const LlamaConfig& c) {
  json j = json::parse(c.extra_json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) j = json::object();
  j["model_type"] = c.model_type;
  if (c.sliding_window > 0) j["sliding_window"] = c.sliding_window;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling && c.rope_scaling->rope_type == "linear") {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_scaling->factor}};
  } else if (c.rope_scaling) {
    j["rope_scaling"] = {
        {"rope_type", c.rope_scaling->rope_type},
        {"factor", c.rope_scaling->factor},
        {"low_freq_factor", c.rope_scaling->low_freq_factor},
        {"high_freq_factor", c.rope_scaling->high_freq_factor},
        {"original_max_position_embeddings", c.rope_scaling->original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["attention_bias"] = c.attention_bias;
  j["mlp_bias"] = c.mlp_bias;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_id >= 0) j["eos_token_id"] = c.eos_token_id;
  j["torch_dtype"] = c.torch_dtype;
  if (c.byte_tokenizer) j["squeeze_byte_tokenizer"] = true;
  if (!c.layer_types.empty()) j["layer_types"] = c.layer_types;
  // Written in the 4.x form, which transformers 5 reads too: a 5.x rope_parameters object was
  // parsed into rope_theta, rope_scaling and this.
  if (c.rope_local_theta > 0) j["rope_local_base_freq"] = c.rope_local_theta;
  if (c.gemma()) {
    j["query_pre_attn_scalar"] = c.query_pre_attn_scalar;
    j["final_logit_softcapping"] =
        c.final_logit_softcapping > 0 ? json(c.final_logit_softcapping) : json(nullptr);
    j["hidden_activation"] = c.hidden_activation;
  } else if (c.hidden_activation != "silu") {
    j["hidden_act"] = c.hidden_activation;
  }
  if (!j.contains("architectures")) {
    j["architectures"] = {c.gemma()                   ? "Gemma3ForCausalLM"
                          : c.model_type == "phi3"    ? "Phi3ForCausalLM"
                          : c.model_type == "qwen3"   ? "Qwen3ForCausalLM"
                          : c.model_type == "qwen2"   ? "Qwen2ForCausalLM"
                          : c.model_type == "mistral" ? "MistralForCausalLM"
                                                      : "LlamaForCausalLM"};
  }
  return j.dump(2) + "\n";
}

}  // namespace squeeze
