// LoRA adapters on a LlamaModel (layout and options: lora_config.h): attaching fresh ones for
// training, writing them in PEFT's layout, and merging stored ones into a model's weights.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/model/llama_model.h"
#include "common/model/lora_config.h"
#include "common/tensor/safetensors.h"

namespace squeeze {

// Adds an adapter to every linear that options.targets names, on the model's device: A uniform in
// +-1/sqrt(in) (PEFT's default Kaiming-uniform), B zero, so the model computes what it did before.
// Deterministic for options.seed. Errors as ValidateLoraOptions's, under "lora".
absl::Status AttachLoraAdapters(LlamaModel& model, const LoraOptions& options);

// Parameters the adapters hold.
int64_t LoraParameterCount(const LlamaModel& model);

// Writes adapter_config.json and adapter_model.safetensors (float32) into `dir`.
absl::Status SaveLoraAdapters(const LlamaModel& model, const LoraOptions& options,
                              const std::string& base_model, const std::string& dir);

// Whether `dir` holds PEFT adapters.
bool HasLoraAdapters(const std::string& dir);

// Adapters stored in `dir` (PEFT's layout), read for merging into a model's weights. Opening
// checks every tensor of the file: each must be an adapter of a targeted linear of a model of
// `config`, with the shapes the config implies, and every targeted linear must have one. Errors
// name the file and the tensor.
class StoredLoraAdapters {
 public:
  static absl::StatusOr<StoredLoraAdapters> Open(const std::string& dir, const LlamaConfig& config);
  // Replaces the targeted weights of decoder layer `index` with W + scale * B A (computed in
  // float32, in the weight's dtype and device). New tensors: a layer borrowing a mapped file's
  // bytes is never written through.
  absl::Status MergeInto(int64_t index, DecoderLayer& layer) const;
  const LoraOptions& options() const { return options_; }

 private:
  StoredLoraAdapters() = default;
  LoraOptions options_;
  std::string path_;
  std::shared_ptr<SafetensorsFile> file_;
  std::vector<std::string> targets_;  // DecoderLinearShapes names
};

// Opens the adapters in `dir` and merges them into every layer of `model`.
absl::Status MergeLoraAdapters(const std::string& dir, LlamaModel& model);

}  // namespace squeeze
