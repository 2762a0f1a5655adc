#include "common/tensor/torch_tensor.h"

#include "absl/strings/str_cat.h"

namespace squeeze {

absl::StatusOr<at::ScalarType> ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kF64:
      return at::kDouble;
    case DType::kF32:
      return at::kFloat;
    case DType::kF16:
      return at::kHalf;
    case DType::kBF16:
      return at::kBFloat16;
    case DType::kI64:
      return at::kLong;
    case DType::kI32:
      return at::kInt;
    case DType::kI16:
      return at::kShort;
    case DType::kI8:
      return at::kChar;
    case DType::kU8:
      return at::kByte;
    case DType::kBool:
      return at::kBool;
  }
  return absl::InvalidArgumentError("unknown dtype");
}

absl::StatusOr<DType> FromScalarType(at::ScalarType type) {
  switch (type) {
    case at::kDouble:
      return DType::kF64;
    case at::kFloat:
      return DType::kF32;
    case at::kHalf:
      return DType::kF16;
    case at::kBFloat16:
      return DType::kBF16;
    case at::kLong:
      return DType::kI64;
    case at::kInt:
      return DType::kI32;
    case at::kShort:
      return DType::kI16;
    case at::kChar:
      return DType::kI8;
    case at::kByte:
      return DType::kU8;
    case at::kBool:
      return DType::kBool;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("scalar type ", c10::toString(type), " has no safetensors dtype"));
  }
}

absl::StatusOr<at::Tensor> ToTorch(const TensorView& view) {
  auto type = ToScalarType(view.info->dtype);
  if (!type.ok()) return type.status();
  if (view.info->nbytes == 0) return at::empty(view.info->shape, at::TensorOptions().dtype(*type));
  // from_blob does not copy and wants a mutable pointer; clone() copies before anyone writes.
  at::Tensor borrowed = at::from_blob(const_cast<uint8_t*>(view.data), view.info->shape,
                                      at::TensorOptions().dtype(*type));
  return borrowed.clone();
}

absl::Status AddTensor(SafetensorsWriter& writer, const std::string& name, const at::Tensor& t) {
  auto dtype = FromScalarType(t.scalar_type());
  if (!dtype.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor \"", name, "\": ", dtype.status().message()));
  }
  at::Tensor host = t.detach().to(at::kCPU).contiguous();
  return writer.Add(name, *dtype, host.sizes().vec(), host.data_ptr(), host.nbytes());
}

}  // namespace squeeze
