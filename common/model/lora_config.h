// Low-rank adapters (LoRA, Hu et al. 2021) on a model's decoder linears: which linears, what rank,
// and PEFT's adapter_config.json, without libtorch (the coordinator checks recipes with it).
//
// PEFT's layout (peft/tuners/lora, utils/save_and_load.py), which transformers and vLLM load beside
// the base model:
//   adapter_config.json        {peft_type: "LORA", task_type: "CAUSAL_LM", r, lora_alpha,
//                               lora_dropout, target_modules, bias: "none", fan_in_fan_out: false,
//                               base_model_name_or_path, ...}
//   adapter_model.safetensors
//   base_model.model.model.layers.{i}.{self_attn|mlp}.{name}.lora_A.weight
//                              [r, in] and ...lora_B.weight [out, r]
// The adapted linear computes W x + (lora_alpha / r) * B A x.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/model/llama_config.h"

namespace squeeze {

inline constexpr char kLoraConfigFile[] = "adapter_config.json";
inline constexpr char kLoraWeightsFile[] = "adapter_model.safetensors";

struct LoraOptions {
  std::vector<std::string> targets;  // "q_proj" (any layer's) or "self_attn.q_proj"
  int64_t rank = 8;
  double alpha = 16.0;
  double dropout = 0.0;
  uint64_t seed = 0;  // initialisation of A
  double scale() const { return alpha / static_cast<double>(rank); }
};

// The decoder linears (as DecoderLinearShapes names them: "self_attn.q_proj") that `target`
// names, by its whole name or its last part; empty when none does.
std::vector<std::string> LoraTargetLinears(const LlamaConfig& config, absl::string_view target);

// Checks `options` against the model: every target names a linear, 0 < rank <= the smaller side
// of every targeted linear, alpha > 0, dropout in [0, 1). Errors start with `field` and the
// option ("stages[1].distill.lora.targets[2]: ...").
absl::Status ValidateLoraOptions(const LoraOptions& options, const LlamaConfig& config,
                                 absl::string_view field);

// adapter_config.json's text for `options` over the base `base_model`.
std::string LoraAdapterConfigJson(const LoraOptions& options, const std::string& base_model);
// Reads it back (rank, alpha, dropout, targets); errors name `source`. Only what this project
// applies is accepted: LORA, no fan_in_fan_out, bias "none", no rank or alpha patterns.
absl::StatusOr<LoraOptions> ParseLoraAdapterConfig(absl::string_view json,
                                                   absl::string_view source);

}  // namespace squeeze
