#include "common/compress/sparse24_checkpoint.h"

#include <c10/core/GradMode.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/tensor/torch_tensor.h"

namespace squeeze {

absl::StatusOr<NamedTensors> PackSparse24(const std::string& base, const at::Tensor& weight,
                                          at::ScalarType dtype) {
  c10::NoGradGuard no_grad;
  if (weight.dim() != 2 || weight.size(1) % 4 != 0)
    return absl::InvalidArgumentError(
        absl::StrCat(base, ": 2:4 needs a 2-D weight whose inputs are a multiple of 4"));
  const at::Tensor w = weight.to(at::kCPU, dtype).contiguous();
  const int64_t rows = w.size(0), cols = w.size(1);
  const at::Tensor groups = w.view({rows, cols / 4, 4});
  if ((groups != 0).sum(-1).gt(2).any().item<bool>())
    return absl::InvalidArgumentError(
        absl::StrCat(base, ": not 2:4 sparse (a group of 4 inputs holds more than 2 non-zeros)"));
  // The two largest magnitudes of each group (zeros among them when a group has fewer).
  const at::Tensor top = std::get<1>(groups.abs().to(at::kFloat).topk(2, -1));
  const at::Tensor keep =
      at::zeros({rows, cols / 4, 4}, at::kBool).scatter_(-1, top, true).view({rows, cols});
  const at::Tensor values = w.masked_select(keep).view({rows, cols / 2});
  // Bits least significant first, 8 columns to a byte; a last partial byte is zero-padded.
  const int64_t bytes = (cols + 7) / 8;
  at::Tensor padded = at::zeros({rows, bytes * 8}, at::kByte);
  padded.slice(1, 0, cols).copy_(keep);
  const at::Tensor weights = at::pow(2, at::arange(8, at::kLong)).to(at::kByte).view({1, 1, 8});
  const at::Tensor bitmask = (padded.view({rows, bytes, 8}) * weights).sum(-1).to(at::kByte);
  return NamedTensors{{base + ".compressed", values},
                      {base + ".bitmask", bitmask.contiguous()},
                      {base + ".shape", at::tensor({rows, cols}, at::kLong).view({2, 1})}};
}

absl::StatusOr<at::Tensor> UnpackSparse24(const std::string& base, const TensorGetter& get) {
  c10::NoGradGuard no_grad;
  auto values = get(base + ".compressed");
  if (!values.ok()) return values.status();
  auto bitmask = get(base + ".bitmask");
  if (!bitmask.ok()) return bitmask.status();
  auto shape = get(base + ".shape");
  if (!shape.ok()) return shape.status();
  if (shape->numel() != 2)
    return absl::DataLossError(absl::StrCat(base, ".shape: expected 2 values"));
  const at::Tensor dims = shape->to(at::kLong).flatten();
  const int64_t rows = dims[0].item<int64_t>(), cols = dims[1].item<int64_t>();
  const int64_t bytes = (cols + 7) / 8;
  if (rows <= 0 || cols <= 0 || bitmask->dim() != 2 || bitmask->size(0) != rows ||
      bitmask->size(1) != bytes || values->numel() != rows * cols / 2)
    return absl::DataLossError(absl::StrCat(base, ": compressed, bitmask and shape disagree"));
  const at::Tensor bits = at::pow(2, at::arange(8, at::kLong)).view({1, 1, 8});
  const at::Tensor keep = (bitmask->to(at::kLong).view({rows, bytes, 1}).bitwise_and(bits) != 0)
                              .view({rows, bytes * 8})
                              .slice(1, 0, cols);
  if (keep.sum().item<int64_t>() != values->numel())
    return absl::DataLossError(absl::StrCat(base, ".bitmask: marks ", keep.sum().item<int64_t>(),
                                            " weights for ", values->numel(), " stored values"));
  at::Tensor dense = at::zeros({rows, cols}, values->options());
  dense.masked_scatter_(keep, values->contiguous().view({-1}));
  return dense;
}

absl::Status WriteSparse24Checkpoint(const std::string& dir, const LlamaModel& model,
                                     at::ScalarType dtype, double sparsity) {
  if (!FusedLinears(model.config()).empty())
    return absl::UnimplementedError(absl::StrCat("the sparse-24-bitmask layout is not written for ",
                                                 model.config().model_type,
                                                 " (fused projections) yet"));
  std::set<std::string> linears;
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (const auto& [n, l] : model.layer(i).Linears())
      linears.insert(absl::StrCat("model.layers.", i, ".", n, ".weight"));
  }
  SafetensorsWriter writer;
  writer.SetMetadata("format", "pt");
  LlamaModel& m = const_cast<LlamaModel&>(model);  // NamedParameters only hands out pointers
  for (auto& [name, t] : m.NamedParameters()) {
    if (!linears.count(name)) {
      if (auto s = AddTensor(writer, name, t->to(at::kCPU, dtype)); !s.ok()) return s;
      continue;
    }
    auto packed = PackSparse24(name.substr(0, name.size() - 7), *t, dtype);
    if (!packed.ok()) return packed.status();
    for (const auto& [field, tensor] : *packed) {
      if (auto s = AddTensor(writer, field, tensor); !s.ok()) return s;
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (auto s = WriteCheckpoint(dir, writer); !s.ok()) return s;
  return WriteSparse24Config(dir, model.config(), dtype, sparsity);
}

absl::Status WriteSparse24Config(const std::string& dir, const LlamaConfig& config,
                                 at::ScalarType dtype, double sparsity) {
  const nlohmann::json quantization_config = {{"quant_method", "compressed-tensors"},
                                              {"format", "dense"},
                                              {"quantization_status", "compressed"},
                                              {"config_groups", nlohmann::json::object()},
                                              {"ignore", {"lm_head"}},
                                              {"sparsity_config",
                                               {{"format", "sparse-24-bitmask"},
                                                {"sparsity_structure", "2:4"},
                                                {"global_sparsity", sparsity},
                                                {"targets", {"Linear"}},
                                                {"ignore", {"lm_head"}},
                                                {"registry_requires_subclass", false}}}};
  return WriteConfigWithQuantization(dir, config, quantization_config,
                                     dtype == at::kBFloat16 ? "bfloat16" : "float16");
}

}  // namespace squeeze
