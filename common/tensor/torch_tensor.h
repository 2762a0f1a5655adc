// Bridges between stored tensors (safetensors views) and libtorch tensors. Only code that already
// depends on libtorch includes this header.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor/dtype.h"
#include "common/tensor/safetensors.h"

namespace squeeze {

absl::StatusOr<at::ScalarType> ToScalarType(DType dtype);
absl::StatusOr<DType> FromScalarType(at::ScalarType type);

// Copies the view into a new CPU tensor that owns its memory (the mapping may go away).
absl::StatusOr<at::Tensor> ToTorch(const TensorView& view);

// Adds a tensor (any device, any layout) to a writer under `name`.
absl::Status AddTensor(SafetensorsWriter& writer, const std::string& name, const at::Tensor& t);

}  // namespace squeeze
