// The GPTQ checkpoint layout that transformers and vLLM load. Per quantized linear layer:
//   qweight  int32 [in * bits / 32, out]  codes packed along the input dimension, LSB first, as one
//                                         continuous bit stream (3-bit codes span word boundaries)
//   qzeros   int32 [groups, out * bits / 32]  zero points packed the same way along the outputs
//   scales   fp16  [groups, out]
//   g_idx    int32 [in]                   the group of each input column
//   bias     (if the layer has one)
// config.json gets quantization_config {quant_method: "gptq", bits, group_size, desc_act, sym,
// damp_percent, true_sequential, checkpoint_format} (quantized_checkpoint.h writes it).
//
// Zero points: checkpoint_format "gptq" (v1, the default every loader expects) stores the true zero
// minus one, so a symmetric 4-bit layer (zero 8) stores 7 in every nibble: 0x77777777 words.
// "gptq_v2" stores the true zero. Loaders read v1 and add the one back; writing v2 data under a v1
// label (or the reverse) silently shifts every weight by one step, so both sides live here.
#pragma once

#include "absl/status/statusor.h"
#include "common/compress/gptq.h"

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

}  // namespace squeeze
