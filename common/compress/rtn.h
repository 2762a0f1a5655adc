// Round-to-nearest weight quantization: the baseline every other method is compared against.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace squeeze {

struct QuantSpec {
  int bits = 4;              // 2, 3, 4 or 8
  int64_t group_size = 128;  // -1: one group per output row
  bool symmetric = false;
};

absl::Status ValidateQuantSpec(const QuantSpec& spec, int64_t in_features);

// Bits stored per weight of a layer with `in_features` inputs: the code plus, per group, a 16-bit
// scale and a packed zero point.
double BitsPerWeight(const QuantSpec& spec, int64_t in_features);

// Integer codes q in [0, 2^bits - 1] with w ~= scale * (q - zero), per output row and input group.
struct QuantizedWeight {
  QuantSpec spec;
  at::Tensor codes;   // [out, in], uint8
  at::Tensor scales;  // [out, groups], float32
  at::Tensor zeros;   // [out, groups], float32 holding integers
  // [in] int32: the group of each input column. Undefined means column / group_size; GPTQ with
  // act_order assigns groups in its permuted order.
  at::Tensor g_idx;
  at::Tensor Dequantize() const;  // [out, in], float32
  // Bits actually stored per weight: the code plus the per-group fp16 scale and packed zero.
  double BitsPerWeight() const;
};

// Scale and zero point for each row of `w` ([rows, cols] float32), following the GPTQ reference's
// conventions: the range always includes 0; symmetric zero is 2^(bits-1). Scales are float16
// values (held in float32), as the checkpoint stores them.
std::pair<at::Tensor, at::Tensor> ComputeScaleZero(const at::Tensor& w, const QuantSpec& spec);

absl::StatusOr<QuantizedWeight> QuantizeRtn(const at::Tensor& weight, const QuantSpec& spec);

}  // namespace squeeze
