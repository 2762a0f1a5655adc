#include "common/model/lora.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/file_util.h"
#include "common/tensor/safetensors.h"
#include "common/tensor/torch_tensor.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

std::string AdapterName(int64_t layer, const std::string& linear, const char* part) {
  return absl::StrCat("base_model.model.model.layers.", layer, ".", linear, ".", part, ".weight");
}

// The linears `options` targets, as a set of DecoderLinearShapes names.
std::set<std::string> TargetSet(const LlamaConfig& config, const LoraOptions& options) {
  std::set<std::string> out;
  for (const std::string& t : options.targets) {
    for (std::string& n : LoraTargetLinears(config, t)) out.insert(std::move(n));
  }
  return out;
}

}  // namespace

absl::Status AttachLoraAdapters(LlamaModel& model, const LoraOptions& options) {
  if (auto s = ValidateLoraOptions(options, model.config(), "lora"); !s.ok()) return s;
  const std::set<std::string> targets = TargetSet(model.config(), options);
  at::Generator gen = at::detail::createCPUGenerator(options.seed);
  c10::NoGradGuard no_grad;
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (auto& [name, linear] : model.layer(i).Linears()) {
      if (!targets.count(name)) continue;
      const int64_t in = linear->in_features(), out = linear->out_features();
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));
      LoraAdapter& a = linear->lora;
      a.a =
          at::empty({options.rank, in}, at::kFloat).uniform_(-bound, bound, gen).to(model.device());
      a.b = at::zeros({out, options.rank}, at::TensorOptions(model.device()).dtype(at::kFloat));
      a.scale = options.scale();
      a.dropout = options.dropout;
    }
  }
  return absl::OkStatus();
}

int64_t LoraParameterCount(const LlamaModel& model) {
  int64_t n = 0;
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (const auto& [name, linear] : model.layer(i).Linears()) {
      if (linear->lora.defined()) n += linear->lora.a.numel() + linear->lora.b.numel();
    }
  }
  return n;
}

absl::Status SaveLoraAdapters(const LlamaModel& model, const LoraOptions& options,
                              const std::string& base_model, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  SafetensorsWriter writer;
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (const auto& [name, linear] : model.layer(i).Linears()) {
      if (!linear->lora.defined()) continue;
      for (const auto& [part, t] :
           {std::pair{"lora_A", &linear->lora.a}, std::pair{"lora_B", &linear->lora.b}}) {
        const at::Tensor cpu = t->detach().to(at::kCPU, at::kFloat).contiguous();
        if (auto s = AddTensor(writer, AdapterName(i, name, part), cpu); !s.ok()) return s;
      }
    }
  }
  if (writer.size() == 0) return absl::FailedPreconditionError("the model has no adapters to save");
  writer.SetMetadata("format", "pt");
  if (auto s = writer.WriteFile((fs::path(dir) / kLoraWeightsFile).string()); !s.ok()) return s;
  const std::string path = (fs::path(dir) / kLoraConfigFile).string();
  std::ofstream out(path, std::ios::trunc);
  out << LoraAdapterConfigJson(options, base_model);
  if (!out.good()) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

bool HasLoraAdapters(const std::string& dir) {
  std::error_code ec;
  return fs::exists(fs::path(dir) / kLoraConfigFile, ec);
}

absl::StatusOr<StoredLoraAdapters> StoredLoraAdapters::Open(const std::string& dir,
                                                            const LlamaConfig& config) {
  const std::string config_path = (fs::path(dir) / kLoraConfigFile).string();
  // A PEFT config is a few hundred bytes; 1 MiB bounds a wrong or hostile file.
  auto text = ReadFileToString(config_path, int64_t{1} << 20);
  if (!text.ok()) return text.status();
  auto options = ParseLoraAdapterConfig(*text, config_path);
  if (!options.ok()) return options.status();
  if (auto s = ValidateLoraOptions(*options, config, config_path); !s.ok()) return s;
  StoredLoraAdapters out;
  out.options_ = *options;
  out.path_ = (fs::path(dir) / kLoraWeightsFile).string();
  auto file = SafetensorsFile::Open(out.path_);
  if (!file.ok()) return file.status();
  out.file_ = std::shared_ptr<SafetensorsFile>(std::move(*file));
  const std::set<std::string> targets = TargetSet(config, *options);
  out.targets_.assign(targets.begin(), targets.end());
  std::set<std::string> expected;
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    for (const LinearShape& l : DecoderLinearShapes(config)) {
      if (!targets.count(l.name)) continue;
      const std::pair<const char*, std::vector<int64_t>> parts[2] = {
          {"lora_A", {options->rank, l.in}}, {"lora_B", {l.out, options->rank}}};
      for (const auto& [part, shape] : parts) {
        const std::string name = AdapterName(i, l.name, part);
        expected.insert(name);
        const TensorInfo* info = out.file_->Find(name);
        if (info == nullptr)
          return absl::InvalidArgumentError(
              absl::StrCat(out.path_, ": tensor \"", name, "\" is missing"));
        if (info->shape != shape)
          return absl::InvalidArgumentError(absl::StrCat(
              out.path_, ": tensor \"", name, "\": shape [", absl::StrJoin(info->shape, ", "),
              "], expected [", absl::StrJoin(shape, ", "), "]"));
      }
    }
  }
  for (const TensorInfo& info : out.file_->tensors()) {
    if (!expected.count(info.name))
      return absl::InvalidArgumentError(absl::StrCat(
          out.path_, ": tensor \"", info.name,
          "\" is not an adapter of a targeted linear of this model (target_modules in ",
          kLoraConfigFile, ")"));
  }
  return out;
}

absl::Status StoredLoraAdapters::MergeInto(int64_t index, DecoderLayer& layer) const {
  c10::NoGradGuard no_grad;
  for (auto& [name, linear] : layer.Linears()) {
    if (std::find(targets_.begin(), targets_.end(), name) == targets_.end()) continue;
    if (!linear->weight.defined())
      return absl::FailedPreconditionError(
          absl::StrCat(path_, ": cannot merge into the packed ", name, " of layer ", index));
    at::Tensor parts[2];
    const char* names[2] = {"lora_A", "lora_B"};
    for (int k = 0; k < 2; ++k) {
      auto view = file_->Get(AdapterName(index, name, names[k]));
      if (!view.ok()) return view.status();
      auto t = ToTorch(*view);
      if (!t.ok()) return t.status();
      parts[k] = t->to(linear->weight.device(), at::kFloat);
    }
    const at::Tensor w = linear->weight;
    linear->weight =
        (w.to(at::kFloat) + at::matmul(parts[1], parts[0]) * options_.scale()).to(w.scalar_type());
  }
  return absl::OkStatus();
}

absl::Status MergeLoraAdapters(const std::string& dir, LlamaModel& model) {
  auto adapters = StoredLoraAdapters::Open(dir, model.config());
  if (!adapters.ok()) return adapters.status();
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    if (auto s = adapters->MergeInto(i, model.layer(i)); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace squeeze
