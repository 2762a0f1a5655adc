// Frozen linear weights kept in their stored quantized form and expanded per product (the base
// model of adapter training): bitsandbytes 4-bit (NF4, FP4) and integer codes with group scales
// (GPTQ, AWQ).
#pragma once

#include <memory>

#include "common/compress/float4.h"
#include "common/compress/rtn.h"
#include "common/model/llama_model.h"

namespace squeeze {

// Holds `w` as it is (4 bits a weight plus block scales), on the device its tensors are on.
std::shared_ptr<const PackedLinearWeight> MakePackedLinear(Float4Weight w);
// Holds `w`'s codes as uint8 (one byte a weight) with its scales and zero points.
std::shared_ptr<const PackedLinearWeight> MakePackedLinear(QuantizedWeight w);

}  // namespace squeeze
