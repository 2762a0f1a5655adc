// The packed checkpoint layouts the quantize stage writes and every stage reads back: one place
// that maps a format to its tensors per linear (".qweight", ...) and to config.json's
// quantization_config, so that the writer, the resume path and the loader cannot disagree.
//   kGptq     GPTQ layout, v1 zero points (gptq_checkpoint.h): what every GPTQ loader expects.
//   kGptqV2   GPTQ layout, true zero points (checkpoint_format "gptq_v2").
//   kAwqGemm  AutoAWQ's gemm layout (awq_format.h): 4-bit, groups in input order, no g_idx.
//   kCompressedTensorsInt8  llm-compressor's compressed-tensors "int-quantized" layout (W8A8 and
//             W8A16): per linear `weight` int8 [out, in] (symmetric, code - 128), `weight_scale`
//             float32 [out, 1], and `input_scale` float32 [1] when activations use a static
//             per-tensor scale; quantization_config {quant_method: "compressed-tensors", format:
//             "int-quantized", config_groups.group_0 {targets: [Linear], weights {num_bits 8,
//             type int, symmetric, strategy channel}, input_activations {num_bits 8, type int,
//             symmetric, strategy token + dynamic, or tensor + static}}, ignore: [lm_head]}.
//             Sources: compressed-tensors' QuantizationConfig/QuantizationArgs and vLLM's
//             compressed_tensors W8A8 int8 scheme (weight_scale per channel, input_scale per
//             tensor when static).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "absl/status/statusor.h"
#include "common/compress/gptq.h"
#include "common/model/llama_model.h"

namespace squeeze {

enum class QuantizedFormat { kGptq, kGptqV2, kAwqGemm, kCompressedTensorsInt8 };

// "gptq", "gptq_v2", "awq_gemm", "compressed_tensors".
std::string QuantizedFormatName(QuantizedFormat format);

struct QuantizedExportOptions {
  GptqOptions gptq;  // bits, group size, act_order (desc_act), sym, damp
  QuantizedFormat format = QuantizedFormat::kGptq;
  // Mixed precision (GPTQ layouts): widths other than gptq.quant.bits, by module
  // ("model.layers.3.mlp.down_proj"). Written as GPTQModel's `dynamic` overrides, one regex per
  // module, anchored at both ends; q/k/v (and gate/up) of a layer at one width also match vLLM's
  // fused qkv_proj (gate_up_proj), which must share a width.
  std::map<std::string, int> bits_by_module;
  // How inputs are quantized (compressed-tensors only; other layouts are weight-only).
  ActivationQuant::Kind activations = ActivationQuant::Kind::kNone;
  // The algorithm that chose the codes, recorded in the GPTQ layouts' `meta`: "gptq", or "rtn"
  // (round to nearest), whose config then carries none of GPTQ's solver settings.
  std::string method = "gptq";
};

// OK when a linear of `in` inputs and `out` outputs can be stored in `format` with `options`;
// otherwise InvalidArgument saying why (the caller names the layer).
absl::Status CheckPackable(QuantizedFormat format, const GptqOptions& options, int64_t in,
                           int64_t out);

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// The stored tensors of one quantized linear, named `base` + ".qweight" and so on; with a static
// input scale (`input_quant`, compressed-tensors only) also `base` + ".input_scale".
absl::StatusOr<NamedTensors> PackLinearTensors(const std::string& base,
                                               const QuantizedWeight& weight,
                                               QuantizedFormat format,
                                               const ActivationQuant& input_quant = {});

// The inverse, reading tensors through `get` (full names).
using TensorGetter = std::function<absl::StatusOr<at::Tensor>(const std::string& name)>;
absl::StatusOr<QuantizedWeight> UnpackLinearTensors(const std::string& base,
                                                    const TensorGetter& get, QuantizedFormat format,
                                                    int bits, int64_t group_size);

// Writes `model` (whose non-quantized tensors are taken as they are, in float16) with the linear
// layers in `quantized` (keyed "model.layers.N.self_attn.q_proj") packed, plus config.json.
absl::Status WriteQuantizedCheckpoint(const std::string& dir, const LlamaModel& model,
                                      const std::map<std::string, QuantizedWeight>& quantized,
                                      const QuantizedExportOptions& options);

// Writes dir/config.json: `config` with quantization_config for `options` and torch_dtype
// float16.
absl::Status WriteQuantizedConfig(const std::string& dir, const LlamaConfig& config,
                                  const QuantizedExportOptions& options);
// Writes `dir`/config.json: `config` with `quantization_config` among its fields and `torch_dtype`
// (the layouts' writers share it).
absl::Status WriteConfigWithQuantization(const std::string& dir, const LlamaConfig& config,
                                         const nlohmann::json& quantization_config,
                                         const std::string& torch_dtype);

// GPTQModel's `dynamic` overrides as config.json stores them: keys "+:regex" (a module matching
// it, from its start, takes the value's bits / group_size) or "-:regex" (left unquantized).
struct DynamicOverride {
  bool skip = false;
  std::string pattern;  // without the "+:" / "-:" prefix
  std::optional<int> bits;
  std::optional<int64_t> group_size;
};
// The overrides of `dynamic` (a JSON object as text), in order; `field` names it in errors.
absl::StatusOr<std::vector<DynamicOverride>> ParseDynamicOverrides(const std::string& dynamic_json,
                                                                   const std::string& field);
// The first override whose pattern matches `module` from its start (as Python's re.match), or
// nullptr.
const DynamicOverride* FindOverride(const std::vector<DynamicOverride>& overrides,
                                    const std::string& module);

// The input quantization of `base` in a stored layout: the kind, and for static scales the
// `.input_scale` read through `get`.
absl::StatusOr<ActivationQuant> ReadInputQuant(const std::string& base, const TensorGetter& get,
                                               ActivationQuant::Kind kind);

// Loads a model directory, dequantizing packed linear layers when config.json has a
// quantization_config this file writes (gptq v1 or v2, awq gemm, compressed-tensors int8, whose
// linears also quantize their inputs as the config says); otherwise the same as LlamaModel::Load.
// A directory with PEFT adapters beside the weights (lora.h) loads with the adapters merged.
absl::StatusOr<LlamaModel> LoadModel(const std::string& dir, at::ScalarType dtype = at::kFloat,
                                     at::Device device = at::kCPU);

// The tensors of `dir`'s checkpoint (opened as `weights`, whose config is `config`) by stored name,
// as a dense model holds them: linears stored packed (GPTQ, AWQ, bitsandbytes 4-bit, sparse-24)
// come back dequantized in float32, everything else as stored. What the streaming passes read a
// quantized input through; an empty function when the checkpoint is not quantized (read it as it
// is). Unimplemented for W8A8 checkpoints (their input scales have no dense form). `weights` must
// outlive the source.
absl::StatusOr<LlamaModel::TensorSource> DenseTensorSource(const std::string& dir,
                                                           const LlamaConfig& config,
                                                           const CheckpointReader& weights);

// What LoadModelWithPackedLinears kept packed.
struct PackedBaseInfo {
  std::string format;   // "nf4", "fp4", "gptq", "awq", or "dense" when nothing is packed
  int64_t linears = 0;  // linears held packed
  int64_t bytes = 0;    // what their packed forms hold
};
// As LoadModel, but linears stored bitsandbytes 4-bit or with integer codes (GPTQ, AWQ) stay
// packed on `device` and are expanded only while they run: the frozen base of adapter training,
// resident at its stored size. Other tensors are in `dtype` on `device`. A directory with
// adapters loads dense, with them merged.
absl::StatusOr<LlamaModel> LoadModelWithPackedLinears(const std::string& dir, at::ScalarType dtype,
                                                      at::Device device, PackedBaseInfo* info);

}  // namespace squeeze
