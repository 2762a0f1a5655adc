// 4-bit codebook quantization as QLoRA's base model stores it (Dettmers et al., 2023): weights are
// flattened (row-major) into blocks of `block_size` values, each block scaled by its absolute
// maximum, and each scaled value replaced by the index of the nearest of 16 code values:
//   nf4  NormalFloat: quantiles of N(0, 1) with an exact zero, the best 4-bit grid for normally
//        distributed weights;
//   fp4  a 4-bit float (1 sign, 2 exponent, 1 mantissa bits), indexed by its bit pattern.
// Double quantization stores the block absmax values themselves in 8 bits: their mean is taken
// out (the offset) and the rest is quantized blockwise (256 values a block) to a signed 8-bit
// dynamic map, with float32 absmax per block of 256.
//
// Stored in bitsandbytes' layout, which transformers loads (bitsandbytes/functional.py QuantState
// as_dict(packed=True), bitsandbytes/utils.py pack_dict_to_tensor): for a linear weight `w`,
//   w                      uint8 [ceil(n / 2), 1]  two codes a byte, the first in the high nibble
//   w.absmax               float32 [blocks], or uint8 codes when double quantized
//   w.quant_map            float32 [16]  the code values
//   w.nested_absmax        float32 [ceil(blocks / 256)]  (double quantization)
//   w.nested_quant_map     float32 [256]                 (double quantization)
//   w.quant_state.bitsandbytes__nf4 (or __fp4)  uint8: UTF-8 JSON {quant_type, blocksize, dtype,
//                          shape, and nested_blocksize, nested_dtype, nested_offset}
// with config.json's quantization_config {quant_method: bitsandbytes, load_in_4bit: true,
// bnb_4bit_quant_type, bnb_4bit_use_double_quant, bnb_4bit_compute_dtype, ...}.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/compress/quantized_checkpoint.h"
#include "common/model/llama_config.h"

namespace squeeze {

enum class Float4Type { kNf4, kFp4 };

// "nf4" or "fp4".
std::string Float4TypeName(Float4Type type);
absl::StatusOr<Float4Type> ParseFloat4Type(const std::string& name);

struct Float4Options {
  Float4Type type = Float4Type::kNf4;
  int64_t block_size = 64;
  bool double_quant = true;
};

// The 16 code values in index order, float32, in [-1, 1].
at::Tensor Float4Codebook(Float4Type type);
// bitsandbytes' signed 8-bit dynamic map (7 exponent bits): 256 sorted values in [-1, 1].
at::Tensor DynamicMap8Bit();

struct Float4Weight {
  Float4Type type = Float4Type::kNf4;
  int64_t block_size = 64;
  std::vector<int64_t> shape;  // the weight's
  at::Tensor packed;           // uint8 [ceil(n / 2), 1]
  at::Tensor absmax;           // float32 [blocks]; uint8 [blocks] when nested
  bool nested = false;
  at::Tensor nested_absmax;  // float32 [ceil(blocks / 256)]
  at::Tensor nested_map;     // float32 [256]
  double nested_offset = 0.0;

  // The block scales, undoing the double quantization.
  at::Tensor BlockScales() const;
  // The weight, float32, of `shape`.
  at::Tensor Dequantize() const;
};

// Code and scale bits per weight: 4 plus the block's absmax (32 bits, or 8 plus 32 per 256 blocks).
double Float4BitsPerWeight(const Float4Options& options);

// Quantizes `weight` (any shape, floating point, on any device; computed on the host). Block sizes
// are those bitsandbytes takes: 32 to 4096, powers of two.
absl::StatusOr<Float4Weight> QuantizeFloat4(const at::Tensor& weight, const Float4Options& options);

// The stored tensors of `w` under the weight's name `name` ("model.layers.0.mlp.up_proj.weight");
// `dtype` is the original dtype recorded in the quant state (bfloat16, float16 or float32).
absl::StatusOr<NamedTensors> PackBnb4bit(const std::string& name, const Float4Weight& w,
                                         at::ScalarType dtype);
// Reads them back; errors name the tensor and what was expected.
absl::StatusOr<Float4Weight> UnpackBnb4bit(const std::string& name, const TensorGetter& get);
// Whether `get` holds a bitsandbytes 4-bit weight under `name`.
bool HasBnb4bit(const std::string& name, const std::function<bool(const std::string&)>& contains);

// Writes `dir`/config.json: `config` with bitsandbytes' quantization_config; `dtype` is the compute
// dtype and the dtype of the tensors that are not quantized.
absl::Status WriteBnb4bitConfig(const std::string& dir, const LlamaConfig& config,
                                const Float4Options& options, at::ScalarType dtype);

}  // namespace squeeze
