#include "common/compress/quantized_checkpoint.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/compress/awq_format.h"
#include "common/compress/gptq_checkpoint.h"
#include "common/tensor/torch_tensor.h"

namespace squeeze {
namespace {

using json = nlohmann::json;

GptqFormat ZeroConvention(QuantizedFormat format) {
  return format == QuantizedFormat::kGptqV2 ? GptqFormat::kV2 : GptqFormat::kV1;
}

// What quantization_config says about the stored layout.
struct StoredLayout {
  QuantizedFormat format;
  int bits;
  int64_t group_size;
};

absl::StatusOr<StoredLayout> ParseQuantizationConfig(const json& qc,
                                                     const std::string& config_path) {
  auto field_error = [&](const std::string& field, const std::string& message) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": quantization_config.", field, ": ", message));
  };
  const std::string method = qc.value("quant_method", "");
  StoredLayout layout;
  if (!qc.value("bits", json(4)).is_number_integer())
    return field_error("bits", "expected an integer");
  if (!qc.value("group_size", json(128)).is_number_integer())
    return field_error("group_size", "expected an integer");
  layout.bits = qc.value("bits", 4);
  layout.group_size = qc.value("group_size", int64_t{128});
  if (method == "gptq") {
    const std::string fmt = qc.value("checkpoint_format", "gptq");
    if (fmt != "gptq" && fmt != "gptq_v2")
      return field_error("checkpoint_format",
                         absl::StrCat("expected gptq or gptq_v2, got \"", fmt, "\""));
    layout.format = fmt == "gptq" ? QuantizedFormat::kGptq : QuantizedFormat::kGptqV2;
  } else if (method == "awq") {
    const std::string version = absl::AsciiStrToLower(qc.value("version", "gemm"));
    if (version != "gemm")
      return field_error("version", absl::StrCat("only gemm is supported, got \"", version, "\""));
    if (!qc.value("zero_point", true))
      return field_error("zero_point", "only true is supported (the gemm layout stores qzeros)");
    if (layout.bits != 4) return field_error("bits", "the awq gemm layout holds 4-bit codes only");
    layout.format = QuantizedFormat::kAwqGemm;
  } else {
    return field_error("quant_method", absl::StrCat("expected gptq or awq, got \"", method, "\""));
  }
  if (layout.bits != 2 && layout.bits != 3 && layout.bits != 4 && layout.bits != 8)
    return field_error("bits", absl::StrCat("expected 2, 3, 4 or 8, got ", layout.bits));
  if (layout.group_size == 0 || layout.group_size < -1)
    return field_error("group_size",
                       absl::StrCat("expected -1 or positive, got ", layout.group_size));
  return layout;
}

json QuantizationConfig(const QuantizedExportOptions& o) {
  const GptqOptions& g = o.gptq;
  if (o.format == QuantizedFormat::kAwqGemm) {
    // The fields transformers' AwqConfig and vLLM's AWQConfig read. Zero points are always
    // stored (a symmetric grid stores 8), so zero_point is true either way.
    return {{"quant_method", "awq"}, {"bits", g.quant.bits}, {"group_size", g.quant.group_size},
            {"zero_point", true},    {"version", "gemm"},    {"modules_to_not_convert", nullptr}};
  }
  return {{"quant_method", "gptq"},
          {"bits", g.quant.bits},
          {"group_size", g.quant.group_size},
          {"desc_act", g.act_order},
          {"static_groups", g.static_groups},
          {"sym", g.quant.symmetric},
          {"damp_percent", g.damp},
          {"true_sequential", true},
          {"checkpoint_format", o.format == QuantizedFormat::kGptq ? "gptq" : "gptq_v2"}};
}

}  // namespace

std::string QuantizedFormatName(QuantizedFormat format) {
  switch (format) {
    case QuantizedFormat::kGptq:
      return "gptq";
    case QuantizedFormat::kGptqV2:
      return "gptq_v2";
    case QuantizedFormat::kAwqGemm:
      return "awq_gemm";
  }
  return "unknown";
}

absl::Status CheckPackable(QuantizedFormat format, const GptqOptions& options, int64_t in,
                           int64_t out) {
  const int bits = options.quant.bits;
  if (format == QuantizedFormat::kAwqGemm) {
    if (bits != 4)
      return absl::InvalidArgumentError(
          absl::StrCat("the awq gemm layout holds 4-bit codes, not ", bits, "-bit"));
    if (options.act_order)
      return absl::InvalidArgumentError("the awq gemm layout cannot store act_order's g_idx");
    if (out % 8 != 0)
      return absl::InvalidArgumentError(
          absl::StrCat("the awq gemm layout needs out_features a multiple of 8, got ", out));
    const int64_t group = options.quant.group_size;
    if (group != -1 && in % group != 0)
      return absl::InvalidArgumentError(absl::StrCat(
          "the awq gemm layout needs in_features a multiple of group_size ", group, ", got ", in));
    return absl::OkStatus();
  }
  if ((in * bits) % 32 != 0 || (out * bits) % 32 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ", out, "x", in, " layer does not pack into 32-bit words at ", bits,
                     " bits (need in and out multiples of ", 32 / std::gcd(32, bits), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<NamedTensors> PackLinearTensors(const std::string& base,
                                               const QuantizedWeight& weight,
                                               QuantizedFormat format) {
  auto named = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(base, ": ", s.message()));
  };
  if (format == QuantizedFormat::kAwqGemm) {
    auto p = PackAwqGemm(weight);
    if (!p.ok()) return named(p.status());
    return NamedTensors{{base + ".qweight", p->qweight},
                        {base + ".qzeros", p->qzeros},
                        {base + ".scales", p->scales}};
  }
  auto p = PackGptqLinear(weight, ZeroConvention(format));
  if (!p.ok()) return named(p.status());
  return NamedTensors{{base + ".qweight", p->qweight},
                      {base + ".qzeros", p->qzeros},
                      {base + ".scales", p->scales},
                      {base + ".g_idx", p->g_idx}};
}

absl::StatusOr<QuantizedWeight> UnpackLinearTensors(const std::string& base,
                                                    const TensorGetter& get, QuantizedFormat format,
                                                    int bits, int64_t group_size) {
  auto read = [&](const char* field, at::Tensor& out) -> absl::Status {
    auto t = get(base + field);
    if (!t.ok()) return t.status();
    out = *t;
    return absl::OkStatus();
  };
  absl::StatusOr<QuantizedWeight> q;
  if (format == QuantizedFormat::kAwqGemm) {
    AwqGemmLinear p;
    for (auto [field, out] : {std::pair{".qweight", &p.qweight}, std::pair{".qzeros", &p.qzeros},
                              std::pair{".scales", &p.scales}}) {
      if (auto s = read(field, *out); !s.ok()) return s;
    }
    q = UnpackAwqGemm(p, group_size);
  } else {
    PackedLinear p;
    for (auto [field, out] : {std::pair{".qweight", &p.qweight}, std::pair{".qzeros", &p.qzeros},
                              std::pair{".scales", &p.scales}, std::pair{".g_idx", &p.g_idx}}) {
      if (auto s = read(field, *out); !s.ok()) return s;
    }
    q = UnpackGptqLinear(p, bits, group_size, ZeroConvention(format));
  }
  if (!q.ok())
    return absl::Status(q.status().code(), absl::StrCat(base, ": ", q.status().message()));
  return q;
}

absl::Status WriteQuantizedCheckpoint(const std::string& dir, const LlamaModel& model,
                                      const std::map<std::string, QuantizedWeight>& quantized,
                                      const QuantizedExportOptions& o) {
  if (!FusedLinears(model.config()).empty()) {
    return absl::UnimplementedError(
        absl::StrCat("WriteQuantizedCheckpoint: ", model.config().model_type,
                     " stores fused linears; the streaming quantizer writes that layout"));
  }
  SafetensorsWriter writer;
  writer.SetMetadata("format", "pt");
  LlamaModel& m = const_cast<LlamaModel&>(model);  // NamedParameters only hands out pointers
  for (auto& [name, t] : m.NamedParameters()) {
    const std::string suffix = ".weight";
    const std::string prefix =
        name.size() > suffix.size() ? name.substr(0, name.size() - suffix.size()) : "";
    auto it = quantized.find(prefix);
    if (it == quantized.end()) {
      if (auto s = AddTensor(writer, name, t->to(at::kHalf)); !s.ok()) return s;
      continue;
    }
    auto packed = PackLinearTensors(prefix, it->second, o.format);
    if (!packed.ok()) return packed.status();
    for (const auto& [field_name, tensor] : *packed) {
      if (auto s = AddTensor(writer, field_name, tensor); !s.ok()) return s;
    }
  }
  if (auto s = WriteCheckpoint(dir, writer); !s.ok()) return s;
  return WriteQuantizedConfig(dir, model.config(), o);
}

absl::Status WriteQuantizedConfig(const std::string& dir, const LlamaConfig& config,
                                  const QuantizedExportOptions& o) {
  LlamaConfig c = config;
  json extra = json::parse(c.extra_json, nullptr, false);
  if (extra.is_discarded()) extra = json::object();
  extra["quantization_config"] = QuantizationConfig(o);
  c.extra_json = extra.dump();
  c.torch_dtype = "float16";
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  std::ofstream out(path, std::ios::trunc);
  out << LlamaConfigToJson(c);
  if (!out.good()) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<LlamaModel> LoadModel(const std::string& dir, at::ScalarType dtype,
                                     at::Device device) {
  auto config = LoadLlamaConfig(dir);
  if (!config.ok()) return config.status();
  json extra = json::parse(config->extra_json, nullptr, false);
  if (extra.is_discarded() || !extra.contains("quantization_config"))
    return LlamaModel::Load(dir, dtype, device);
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  auto layout = ParseQuantizationConfig(extra["quantization_config"], config_path);
  if (!layout.ok()) return layout.status();
  auto reader = CheckpointReader::Open(dir);
  if (!reader.ok()) return reader.status();
  const CheckpointReader& weights = **reader;
  const TensorGetter get = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
    auto view = weights.Get(name);
    if (!view.ok()) return view.status();
    return ToTorch(*view);
  };
  // Linear weights come from their packed form; everything else is stored as it is.
  auto source = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
    const std::string suffix = ".weight";
    const std::string prefix = name.substr(0, name.size() - suffix.size());
    if (!weights.Contains(prefix + ".qweight")) return get(name);
    auto q = UnpackLinearTensors(prefix, get, layout->format, layout->bits, layout->group_size);
    if (!q.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(weights.FileOf(prefix + ".qweight"), ": ", q.status().message()));
    }
    return q->Dequantize();
  };
  return LlamaModel::FromTensors(*config, source, dtype, device,
                                 [&](const std::string& name) { return weights.FileOf(name); });
}

}  // namespace squeeze
