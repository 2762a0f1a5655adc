// compressed-tensors' `sparse-24-bitmask` layout, which llm-compressor writes for 2:4-sparse
// models and vLLM loads: for each linear `base`,
//   base.compressed  [out, in / 2] the kept values of every row, in column order (model dtype)
//   base.bitmask     [out, ceil(in / 8)] uint8, bit k of byte b (least significant first) set
//                    when column 8b + k is kept (numpy.packbits(..., bitorder="little"))
//   base.shape       [2, 1] int64, the dense shape
// with config.json's quantization_config {quant_method: compressed-tensors, config_groups: {},
// sparsity_config: {format: sparse-24-bitmask, sparsity_structure: "2:4", targets: [Linear],
// ignore: [lm_head]}} (compressed_tensors/compressors/sparse_compressors/sparse_24_bitmask.py
// and utils/helpers.py pack_bitmasks in the compressed-tensors project).
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "absl/status/statusor.h"
#include "common/compress/quantized_checkpoint.h"
#include "common/model/llama_model.h"

namespace squeeze {

// The stored tensors of a 2:4-sparse linear weight [out, in] (in a multiple of 4; at most 2
// non-zeros in every 4 consecutive inputs of a row, or InvalidArgument naming `base`). The kept
// pair of each group is its two largest magnitudes, as compressed-tensors chooses it.
absl::StatusOr<NamedTensors> PackSparse24(const std::string& base, const at::Tensor& weight,
                                          at::ScalarType dtype);
// The dense weight back from base.compressed / .bitmask / .shape read through `get`.
absl::StatusOr<at::Tensor> UnpackSparse24(const std::string& base, const TensorGetter& get);

// Writes `model` to `dir` (one safetensors file plus config.json) with every decoder linear in
// the sparse-24-bitmask layout and the other tensors dense, all in `dtype` (float16 or
// bfloat16); `sparsity` is recorded as the config's global_sparsity.
absl::Status WriteSparse24Checkpoint(const std::string& dir, const LlamaModel& model,
                                     at::ScalarType dtype, double sparsity);
// Writes `dir`/config.json: `config` with the layout's quantization_config and `dtype`.
absl::Status WriteSparse24Config(const std::string& dir, const LlamaConfig& config,
                                 at::ScalarType dtype, double sparsity);

}  // namespace squeeze
