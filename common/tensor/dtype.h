// Element types of stored tensors, named as in the safetensors format.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace squeeze {

enum class DType : uint8_t { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// Bytes per element.
size_t DTypeSize(DType dtype);

// The safetensors spelling: "F32", "BF16", "BOOL", ...
absl::string_view DTypeName(DType dtype);

// Parses the safetensors spelling; an unknown name is InvalidArgument naming it.
absl::StatusOr<DType> ParseDType(absl::string_view name);

// Half-precision conversions, for code that must not depend on libtorch.
float HalfToFloat(uint16_t bits);
uint16_t FloatToHalf(float value);
float BFloat16ToFloat(uint16_t bits);
uint16_t FloatToBFloat16(float value);  // round to nearest even

}  // namespace squeeze
