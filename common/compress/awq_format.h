// AutoAWQ's "gemm" checkpoint layout (quantization_config {quant_method: "awq", version: "gemm"}),
// which transformers and vLLM load. For a linear of `out` outputs and `in` inputs, group g:
//   qweight [in, out / 8] int32: the 4-bit codes of the transposed weight, 8 per int32 along the
//           output dimension in an interleaved order: bits 4i..4i+3 of packed column p hold output
//           column 8p + {0, 2, 4, 6, 1, 3, 5, 7}[i];
//   qzeros  [in / g, out / 8] int32: the zero points, packed the same way;
//   scales  [in / g, out] float16;
// and w[o, i] = (code - zero) * scale over i's group. Zero points are stored as they are (GPTQ's
// v1 layout stores zero - 1).
// Sources: AutoAWQ, awq/modules/linear/gemm.py (WQLinear_GEMM.from_linear packs with the order
// map [0, 2, 4, 6, 1, 3, 5, 7]) and awq/utils/packing_utils.py (unpacks with AWQ_REVERSE_ORDER
// [0, 4, 1, 5, 2, 6, 3, 7]); vLLM, vllm/model_executor/layers/quantization/awq.py.
#pragma once

#include <ATen/ATen.h>

#include "absl/status/statusor.h"
#include "common/compress/rtn.h"

namespace squeeze {

struct AwqGemmLinear {
  at::Tensor qweight;  // [in, out / 8] int32
  at::Tensor qzeros;   // [in / group, out / 8] int32
  at::Tensor scales;   // [in / group, out] float16
};

// 4-bit codes in input-column groups only (no act_order g_idx); `out` a multiple of 8.
absl::StatusOr<AwqGemmLinear> PackAwqGemm(const QuantizedWeight& weight);
absl::StatusOr<QuantizedWeight> UnpackAwqGemm(const AwqGemmLinear& packed, int64_t group_size);

}  // namespace squeeze
