// The GPTQ checkpoint layout that transformers and vLLM load. Per quantized linear layer:
//   qweight  int32 [in * bits / 32, out]  codes packed along the input dimension, LSB first, as one
//                                         continuous bit stream (3-bit codes span word boundaries)
//   qzeros   int32 [groups, out * bits / 32]  zero points packed the same way along the outputs
//   scales   fp16  [groups, out]
//   g_idx    int32 [in]                   the group of each input column
//   bias     (if the layer has one)
// config.json gets quantization_config {quant_method: "gptq", bits, group_size, desc_act, sym,
// damp_percent, true_sequential, checkpoint_format}.
//
// Zero points: checkpoint_format "gptq" (v1, the default every loader expects) stores the true zero
// minus one, so a symmetric 4-bit layer (zero 8) stores 7 in every nibble: 0x77777777 words.
// "gptq_v2" stores the true zero. Loaders read v1 and add the one back; writing v2 data under a v1
// label (or the reverse) silently shifts every weight by one step, so both sides live here.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "common/compress/gptq.h"
#include "common/model/llama_model.h"

namespace squeeze {

enum class GptqFormat { kV1, kV2 };

struct PackedLinear {
  at::Tensor qweight, qzeros, scales, g_idx;
};

// Packs one layer. InvalidArgument when in or out features do not fill whole 32-bit words.
absl::StatusOr<PackedLinear> PackGptqLinear(const QuantizedWeight& weight, GptqFormat format);
// The inverse: codes, zeros, scales and g_idx back (bit-exact codes; scales as stored in fp16).
absl::StatusOr<QuantizedWeight> UnpackGptqLinear(const PackedLinear& packed, int bits,
                                                 int64_t group_size, GptqFormat format);

struct GptqExportOptions {
  GptqOptions gptq;  // bits, group size, act_order (desc_act), sym, damp
  GptqFormat format = GptqFormat::kV1;
};

// Writes `model` (whose non-quantized tensors are taken as they are) with the linear layers in
// `quantized` (keyed "model.layers.N.self_attn.q_proj") packed, plus config.json.
absl::Status WriteGptqCheckpoint(const std::string& dir, const LlamaModel& model,
                                 const std::map<std::string, QuantizedWeight>& quantized,
                                 const GptqExportOptions& options);

// Writes dir/config.json: `config` with quantization_config for `options` and torch_dtype float16.
absl::Status WriteGptqConfig(const std::string& dir, const LlamaConfig& config,
                             const GptqExportOptions& options);

// Loads a model directory, dequantizing GPTQ linear layers (v1 or v2) when config.json says
// quant_method "gptq"; otherwise the same as LlamaModel::Load.
absl::StatusOr<LlamaModel> LoadModel(const std::string& dir, at::ScalarType dtype = at::kFloat,
                                     at::Device device = at::kCPU);

}  // namespace squeeze
