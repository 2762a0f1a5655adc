// Compares our model's logits with reference logits computed by Hugging Face transformers.
//
//   reference_logits MODEL_DIR REFERENCE.safetensors DEVICE
//
// REFERENCE holds "input_ids" [batch, seq] (int64), "logits_float32" and "logits_bfloat16"
// (the reference model's outputs in each dtype). Prints one JSON line with the maximum relative
// errors, max|ours - reference| / max|reference|, and exits 1 if fp32 >= 1e-4 or bf16 >= 2e-2.
#include <ATen/ATen.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "common/compress/quantized_checkpoint.h"
#include "common/model/llama_model.h"
#include "common/tensor/torch_tensor.h"

namespace {

double RelativeError(const at::Tensor& ours, const at::Tensor& reference) {
  at::Tensor a = ours.to(at::kCPU, at::kDouble), b = reference.to(at::kCPU, at::kDouble);
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

at::Tensor Load(const squeeze::SafetensorsFile& file, const std::string& name) {
  auto view = file.Get(name);
  if (!view.ok()) throw std::runtime_error(std::string(view.status().message()));
  return *squeeze::ToTorch(*view);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: reference_logits MODEL_DIR REFERENCE.safetensors DEVICE\n";
    return 2;
  }
  const std::string dir = argv[1];
  const at::Device device(argv[3]);
  auto file = squeeze::SafetensorsFile::Open(argv[2]);
  if (!file.ok()) {
    std::cerr << file.status() << "\n";
    return 2;
  }
  at::Tensor ids = Load(**file, "input_ids");
  nlohmann::json out = {{"model", dir}, {"device", argv[3]}};
  c10::NoGradGuard no_grad;
  for (auto [dtype, name] :
       {std::pair{at::kFloat, "float32"}, std::pair{at::kBFloat16, "bfloat16"}}) {
    auto model = squeeze::LoadModel(dir, dtype, device);
    if (!model.ok()) {
      std::cerr << model.status() << "\n";
      return 2;
    }
    at::Tensor logits = model->Forward(ids.to(device));
    out[std::string("rel_err_") + name] =
        RelativeError(logits, Load(**file, std::string("logits_") + name));
    out[std::string("rel_err_") + name + "_vs_reference_float32"] =
        RelativeError(logits, Load(**file, "logits_float32"));
    if (dtype == at::kFloat) {
      // Our CPU and device paths agree as well.
      auto cpu = squeeze::LoadModel(dir, at::kFloat, at::kCPU);
      out["rel_err_cpu_vs_device_float32"] = RelativeError(cpu->Forward(ids), logits);
    }
  }
  std::cout << out.dump() << std::endl;
  const bool pass =
      out["rel_err_float32"].get<double>() < 1e-4 && out["rel_err_bfloat16"].get<double>() < 2e-2;
  return pass ? 0 : 1;
}
