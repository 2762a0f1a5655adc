#include "common/compress/quantized_checkpoint.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <regex>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/base/version.h"
#include "common/compress/awq_format.h"
#include "common/compress/float4.h"
#include "common/compress/gptq_checkpoint.h"
#include "common/compress/pack_rules.h"
#include "common/compress/packed_linear.h"
#include "common/compress/sparse24_checkpoint.h"
#include "common/model/lora.h"
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
  ActivationQuant::Kind activations = ActivationQuant::Kind::kNone;
  std::vector<DynamicOverride> overrides;  // GPTQ only
  bool sparse24 = false;                   // compressed-tensors sparse-24-bitmask, not quantized
  bool bnb4bit = false;                    // bitsandbytes 4-bit (float4.h)
};

std::string EscapeRegex(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (std::string("\\.^$|()[]{}*+?").find(ch) != std::string::npos) out += '\\';
    out += ch;
  }
  return out;
}

// GPTQModel's `dynamic`: per module, its width when it is not the default. Modules of a layer's
// q/k/v (gate/up) at one width share a key that also matches vLLM's fused module name.
json DynamicConfig(const std::map<std::string, int>& bits_by_module) {
  json dynamic = json::object();
  std::map<std::string, std::map<std::string, int>> by_layer;  // "model.layers.3." -> name -> bits
  for (const auto& [module, bits] : bits_by_module) {
    const size_t cut = module.find('.', std::string("model.layers.").size());
    by_layer[module.substr(0, cut + 1)][module.substr(cut + 1)] = bits;
  }
  for (const auto& [layer, modules] : by_layer) {
    std::map<std::string, int> rest = modules;
    const std::vector<std::pair<std::vector<std::string>, std::string>> fused = {
        {{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}, "self_attn.qkv_proj"},
        {{"mlp.gate_proj", "mlp.up_proj"}, "mlp.gate_up_proj"}};
    for (const auto& [parts, fused_name] : fused) {
      bool same = true;
      for (const std::string& p : parts)
        same = same && rest.count(p) && rest.at(p) == rest.at(parts[0]);
      if (!same) continue;
      std::string alternatives;
      for (const std::string& p : parts) {
        alternatives += EscapeRegex(p.substr(p.find('.') + 1)) + "|";
      }
      alternatives += EscapeRegex(fused_name.substr(fused_name.find('.') + 1));
      const std::string block = parts[0].substr(0, parts[0].find('.'));
      dynamic[absl::StrCat("+:", EscapeRegex(layer + block + "."), "(", alternatives, ")$")] = {
          {"bits", rest.at(parts[0])}};
      for (const std::string& p : parts) rest.erase(p);
    }
    for (const auto& [name, bits] : rest)
      dynamic[absl::StrCat("+:", EscapeRegex(layer + name), "$")] = {{"bits", bits}};
  }
  return dynamic;
}

// compressed-tensors: the one config group we write (and read): int8 weights per output channel,
// symmetric, and optionally int8 inputs per token (dynamic) or per tensor (static).
absl::StatusOr<StoredLayout> ParseCompressedTensors(const json& qc,
                                                    const std::string& config_path) {
  auto field_error = [&](const std::string& field, const std::string& message) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": quantization_config.", field, ": ", message));
  };
  // Sparsity alone: every linear in sparse-24-bitmask, nothing quantized.
  const json sparsity = qc.value("sparsity_config", json());
  const json groups = qc.value("config_groups", json::object());
  if (sparsity.is_object() && (!groups.is_object() || groups.empty())) {
    if (sparsity.value("format", "") != "sparse-24-bitmask")
      return field_error("sparsity_config.format",
                         absl::StrCat("only sparse-24-bitmask is supported, got ",
                                      sparsity.value("format", json("")).dump()));
    StoredLayout layout{QuantizedFormat::kCompressedTensorsInt8, 16, -1};
    layout.sparse24 = true;
    return layout;
  }
  if (sparsity.is_object())
    return field_error("sparsity_config", "sparsity with quantization is not supported yet");
  if (qc.value("format", "") != "int-quantized")
    return field_error("format", absl::StrCat("only int-quantized is supported, got ",
                                              qc.value("format", json("")).dump()));
  if (!qc.contains("config_groups") || !qc["config_groups"].is_object() ||
      qc["config_groups"].size() != 1)
    return field_error("config_groups", "expected exactly one group");
  const json& group = qc["config_groups"].begin().value();
  const std::string g = absl::StrCat("config_groups.", qc["config_groups"].begin().key());
  const json w = group.value("weights", json());
  if (!w.is_object() || w.value("num_bits", 0) != 8 || w.value("type", "") != "int" ||
      !w.value("symmetric", false) || w.value("strategy", "") != "channel")
    return field_error(absl::StrCat(g, ".weights"),
                       "only 8-bit symmetric int weights per channel are supported");
  StoredLayout layout{QuantizedFormat::kCompressedTensorsInt8, 8, -1};
  const json a = group.value("input_activations", json());
  if (!a.is_null()) {
    if (!a.is_object() || a.value("num_bits", 0) != 8 || a.value("type", "") != "int" ||
        !a.value("symmetric", false))
      return field_error(absl::StrCat(g, ".input_activations"),
                         "only 8-bit symmetric int activations are supported");
    const std::string strategy = a.value("strategy", "");
    const bool dynamic = a.value("dynamic", false);
    if (strategy == "token" && dynamic) {
      layout.activations = ActivationQuant::Kind::kDynamicPerToken;
    } else if (strategy == "tensor" && !dynamic) {
      layout.activations = ActivationQuant::Kind::kStaticPerTensor;
    } else {
      return field_error(absl::StrCat(g, ".input_activations"),
                         absl::StrCat("expected strategy token with dynamic true, or tensor with "
                                      "dynamic false; got ",
                                      strategy, " with dynamic ", dynamic ? "true" : "false"));
    }
  }
  return layout;
}

absl::StatusOr<StoredLayout> ParseQuantizationConfig(const json& qc,
                                                     const std::string& config_path) {
  auto field_error = [&](const std::string& field, const std::string& message) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": quantization_config.", field, ": ", message));
  };
  const std::string method = qc.value("quant_method", "");
  if (method == "compressed-tensors") return ParseCompressedTensors(qc, config_path);
  if (method == "bitsandbytes") {
    if (qc.value("load_in_4bit", false) != true)
      return field_error("load_in_4bit", "only 4-bit bitsandbytes checkpoints are read");
    StoredLayout layout{QuantizedFormat::kGptq, 4, -1};
    layout.bnb4bit = true;
    return layout;
  }
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
  if (qc.contains("dynamic") && !qc["dynamic"].is_null()) {
    if (layout.format == QuantizedFormat::kAwqGemm)
      return field_error("dynamic", "per-module overrides are read for gptq only");
    auto overrides = ParseDynamicOverrides(
        qc["dynamic"].dump(), absl::StrCat(config_path, ": quantization_config.dynamic"));
    if (!overrides.ok()) return overrides.status();
    layout.overrides = *std::move(overrides);
  }
  if (layout.group_size == 0 || layout.group_size < -1)
    return field_error("group_size",
                       absl::StrCat("expected -1 or positive, got ", layout.group_size));
  return layout;
}

json QuantizationConfig(const QuantizedExportOptions& o) {
  const GptqOptions& g = o.gptq;
  if (o.format == QuantizedFormat::kCompressedTensorsInt8) {
    auto args = [](const char* strategy, bool dynamic, const char* observer) {
      return json{{"num_bits", 8},
                  {"type", "int"},
                  {"symmetric", true},
                  {"strategy", strategy},
                  {"dynamic", dynamic},
                  {"group_size", nullptr},
                  {"actorder", nullptr},
                  {"block_structure", nullptr},
                  {"observer", observer ? json(observer) : json(nullptr)},
                  {"observer_kwargs", json::object()}};
    };
    json inputs = nullptr;
    if (o.activations == ActivationQuant::Kind::kDynamicPerToken)
      inputs = args("token", true, nullptr);
    else if (o.activations == ActivationQuant::Kind::kStaticPerTensor)
      inputs = args("tensor", false, "minmax");
    return {{"quant_method", "compressed-tensors"},
            {"format", "int-quantized"},
            {"quantization_status", "compressed"},
            {"config_groups",
             {{"group_0",
               {{"targets", {"Linear"}},
                {"weights", args("channel", false, "minmax")},
                {"input_activations", inputs},
                {"output_activations", nullptr}}}}},
            {"ignore", {"lm_head"}},
            {"kv_cache_scheme", nullptr}};
  }
  if (o.format == QuantizedFormat::kAwqGemm) {
    // The fields transformers' AwqConfig and vLLM's AWQConfig read. Zero points are always
    // stored (a symmetric grid stores 8), so zero_point is true either way.
    return {{"quant_method", "awq"}, {"bits", g.quant.bits}, {"group_size", g.quant.group_size},
            {"zero_point", true},    {"version", "gemm"},    {"modules_to_not_convert", nullptr}};
  }
  // quant_method names the storage layout, which is what loaders dispatch on (vLLM's and
  // transformers' GPTQ kernels read RTN codes as well); `meta` records what produced the codes,
  // as GPTQModel does: the quantizer and its version, and here also the algorithm.
  const bool rtn = o.method == "rtn";
  json meta = {{"quantizer", json::array({absl::StrCat("squeeze:", CodeVersion())})},
               {"method", rtn ? "rtn" : "gptq"}};
  json gptq = {{"quant_method", "gptq"},
               {"bits", g.quant.bits},
               {"group_size", g.quant.group_size},
               {"desc_act", g.act_order},
               {"static_groups", g.static_groups},
               {"sym", g.quant.symmetric},
               {"checkpoint_format", o.format == QuantizedFormat::kGptq ? "gptq" : "gptq_v2"}};
  if (!rtn) {
    // GPTQ's solver settings; RTN has no Hessian to damp and no sequential pass.
    gptq["damp_percent"] = g.damp;
    gptq["true_sequential"] = true;
    meta["damp_percent"] = g.damp;
    meta["static_groups"] = g.static_groups;
    meta["true_sequential"] = true;
  }
  gptq["meta"] = std::move(meta);
  if (!o.bits_by_module.empty()) gptq["dynamic"] = DynamicConfig(o.bits_by_module);
  return gptq;
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
    case QuantizedFormat::kCompressedTensorsInt8:
      return "compressed_tensors";
  }
  return "unknown";
}

absl::Status CheckPackable(QuantizedFormat format, const GptqOptions& options, int64_t in,
                           int64_t out) {
  const int bits = options.quant.bits;
  if (format == QuantizedFormat::kCompressedTensorsInt8) {
    if (bits != 8 || !options.quant.symmetric || options.quant.group_size != -1)
      return absl::InvalidArgumentError(
          "the compressed-tensors int8 layout holds symmetric 8-bit weights per output channel "
          "(bits 8, sym, group_size -1)");
    return absl::OkStatus();
  }
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
  return CheckGptqWordPacking(in, out, bits);
}

absl::StatusOr<NamedTensors> PackLinearTensors(const std::string& base,
                                               const QuantizedWeight& weight,
                                               QuantizedFormat format,
                                               const ActivationQuant& input_quant) {
  auto named = [&](const absl::Status& s) {
    return absl::Status(s.code(), absl::StrCat(base, ": ", s.message()));
  };
  if (format == QuantizedFormat::kCompressedTensorsInt8) {
    const QuantSpec& spec = weight.spec;
    if (spec.bits != 8 || weight.scales.size(1) != 1 || !(weight.zeros == 128).all().item<bool>())
      return named(absl::InvalidArgumentError(
          "compressed-tensors int8: needs symmetric 8-bit codes with one group per row"));
    NamedTensors out = {
        {base + ".weight", (weight.codes.to(at::kShort) - 128).to(at::kChar).contiguous()},
        {base + ".weight_scale", weight.scales.to(at::kFloat).contiguous()}};
    if (input_quant.kind == ActivationQuant::Kind::kStaticPerTensor) {
      if (!input_quant.scale.defined())
        return named(absl::InvalidArgumentError("a static input scale is missing"));
      out.emplace_back(base + ".input_scale",
                       input_quant.scale.to(at::kCPU, at::kFloat).reshape({1}).contiguous());
    }
    return out;
  }
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
  if (format == QuantizedFormat::kCompressedTensorsInt8) {
    at::Tensor w, scale;
    if (auto s = read(".weight", w); !s.ok()) return s;
    if (auto s = read(".weight_scale", scale); !s.ok()) return s;
    if (w.scalar_type() != at::kChar || w.dim() != 2 || scale.numel() != w.size(0))
      return absl::InvalidArgumentError(absl::StrCat(
          base, ": compressed-tensors int8 needs weight int8 [out, in] and weight_scale [out, 1]"));
    QuantizedWeight out;
    out.spec = {8, -1, true};
    out.codes = (w.to(at::kShort) + 128).to(at::kByte).contiguous();
    out.scales = scale.to(at::kFloat).reshape({w.size(0), 1}).contiguous();
    out.zeros = at::full({w.size(0), 1}, 128.0, out.scales.options());
    return out;
  }
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
  std::map<std::string, const Linear*> linears;    // by module name, for input scales
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (const auto& [n, l] : model.layer(i).Linears())
      linears[absl::StrCat("model.layers.", i, ".", n)] = l;
  }
  for (auto& [name, t] : m.NamedParameters()) {
    const std::string suffix = ".weight";
    const std::string prefix =
        name.size() > suffix.size() ? name.substr(0, name.size() - suffix.size()) : "";
    auto it = quantized.find(prefix);
    if (it == quantized.end()) {
      if (auto s = AddTensor(writer, name, t->to(at::kHalf)); !s.ok()) return s;
      continue;
    }
    const auto linear = linears.find(prefix);
    auto packed = PackLinearTensors(
        prefix, it->second, o.format,
        linear != linears.end() ? linear->second->input_quant : ActivationQuant());
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
  return WriteConfigWithQuantization(dir, config, QuantizationConfig(o), "float16");
}

absl::Status WriteConfigWithQuantization(const std::string& dir, const LlamaConfig& config,
                                         const json& quantization_config,
                                         const std::string& torch_dtype) {
  LlamaConfig c = config;
  json extra = json::parse(c.extra_json, nullptr, false);
  if (extra.is_discarded()) extra = json::object();
  extra["quantization_config"] = quantization_config;
  c.extra_json = extra.dump();
  c.torch_dtype = torch_dtype;
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  std::ofstream out(path, std::ios::trunc);
  out << LlamaConfigToJson(c);
  if (!out.good()) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<DynamicOverride>> ParseDynamicOverrides(const std::string& dynamic_json,
                                                                   const std::string& field) {
  const json dynamic = json::parse(dynamic_json, nullptr, false);
  if (!dynamic.is_object())
    return absl::InvalidArgumentError(absl::StrCat(field, ": expected an object of overrides"));
  std::vector<DynamicOverride> out;
  // Keys come in the parsed object's (sorted) order; the overrides this project writes never
  // overlap, so for them the order cannot matter.
  for (const auto& [key, value] : dynamic.items()) {
    DynamicOverride o;
    std::string pattern = key;
    if (pattern.rfind("-:", 0) == 0) {
      o.skip = true;
      pattern = pattern.substr(2);
    } else if (pattern.rfind("+:", 0) == 0) {
      pattern = pattern.substr(2);
    }
    try {
      std::regex check(pattern);
    } catch (const std::regex_error& e) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, "[\"", key, "\"]: not a regular expression: ", e.what()));
    }
    o.pattern = pattern;
    if (!value.is_object())
      return absl::InvalidArgumentError(
          absl::StrCat(field, "[\"", key, "\"]: expected an object of overrides"));
    if (value.contains("bits")) {
      if (!value["bits"].is_number_integer() ||
          (value["bits"] != 2 && value["bits"] != 3 && value["bits"] != 4 && value["bits"] != 8))
        return absl::InvalidArgumentError(
            absl::StrCat(field, "[\"", key, "\"].bits: expected 2, 3, 4 or 8"));
      o.bits = value["bits"].get<int>();
    }
    if (value.contains("group_size")) {
      if (!value["group_size"].is_number_integer())
        return absl::InvalidArgumentError(
            absl::StrCat(field, "[\"", key, "\"].group_size: expected an integer"));
      o.group_size = value["group_size"].get<int64_t>();
    }
    out.push_back(std::move(o));
  }
  return out;
}

const DynamicOverride* FindOverride(const std::vector<DynamicOverride>& overrides,
                                    const std::string& module) {
  for (const DynamicOverride& o : overrides) {
    if (std::regex_search(module, std::regex(o.pattern), std::regex_constants::match_continuous))
      return &o;
  }
  return nullptr;
}

absl::StatusOr<ActivationQuant> ReadInputQuant(const std::string& base, const TensorGetter& get,
                                               ActivationQuant::Kind kind) {
  ActivationQuant quant;
  quant.kind = kind;
  if (kind != ActivationQuant::Kind::kStaticPerTensor) return quant;
  auto scale = get(base + ".input_scale");
  if (!scale.ok()) return scale.status();
  if (scale->numel() != 1 || !(scale->to(at::kFloat) > 0).all().item<bool>())
    return absl::InvalidArgumentError(
        absl::StrCat(base, ".input_scale: expected one positive value"));
  quant.scale = scale->to(at::kFloat).reshape({1});
  return quant;
}

namespace {

using PackedLinears = std::map<std::string, std::shared_ptr<const PackedLinearWeight>>;

// Tensors of `weights` by stored name, linears dequantized from `layout`'s packed form (float32);
// everything else as stored. With `packed`, linears stored bitsandbytes 4-bit or with integer codes
// (GPTQ, AWQ) are also collected there in their packed form, by weight name.
LlamaModel::TensorSource DequantizingSource(std::shared_ptr<const StoredLayout> layout,
                                            const CheckpointReader& weights,
                                            PackedLinears* packed) {
  const TensorGetter get = [&weights](const std::string& name) -> absl::StatusOr<at::Tensor> {
    auto view = weights.Get(name);
    if (!view.ok()) return view.status();
    return ToTorch(*view);
  };
  return [layout, &weights, get, packed](const std::string& name) -> absl::StatusOr<at::Tensor> {
    const std::string suffix = ".weight";
    if (name.size() < suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      return get(name);
    const std::string prefix = name.substr(0, name.size() - suffix.size());
    if (layout->bnb4bit &&
        HasBnb4bit(name, [&](const std::string& n) { return weights.Contains(n); })) {
      auto w = UnpackBnb4bit(name, get);
      if (!w.ok())
        return absl::InvalidArgumentError(
            absl::StrCat(weights.FileOf(name), ": ", w.status().message()));
      at::Tensor dense = w->Dequantize();
      if (packed) (*packed)[name] = MakePackedLinear(*std::move(w));
      return dense;
    }
    if (layout->sparse24 && weights.Contains(prefix + ".bitmask")) {
      auto dense = UnpackSparse24(prefix, get);
      if (!dense.ok())
        return absl::InvalidArgumentError(
            absl::StrCat(weights.FileOf(prefix + ".bitmask"), ": ", dense.status().message()));
      return dense;
    }
    // compressed-tensors keeps the name `weight` (int8) and adds `weight_scale`.
    const bool ct = layout->format == QuantizedFormat::kCompressedTensorsInt8;
    const std::string packed_name = ct ? ".weight" : ".qweight";
    if (!weights.Contains(prefix + (ct ? ".weight_scale" : ".qweight"))) return get(name);
    int bits = layout->bits;
    int64_t group_size = layout->group_size;
    if (const DynamicOverride* o = FindOverride(layout->overrides, prefix); o && !o->skip) {
      bits = o->bits.value_or(bits);
      group_size = o->group_size.value_or(group_size);
    }
    auto q = UnpackLinearTensors(prefix, get, layout->format, bits, group_size);
    if (!q.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(weights.FileOf(prefix + packed_name), ": ", q.status().message()));
    }
    at::Tensor dense = q->Dequantize();
    // compressed-tensors linears also quantize their inputs: they stay dense.
    if (packed && !ct) (*packed)[name] = MakePackedLinear(*std::move(q));
    return dense;
  };
}

// The stored layout `config` names (nullptr when it has no quantization_config).
absl::StatusOr<std::shared_ptr<const StoredLayout>> LayoutOf(const std::string& dir,
                                                             const LlamaConfig& config) {
  json extra = json::parse(config.extra_json, nullptr, false);
  if (extra.is_discarded() || !extra.contains("quantization_config")) return nullptr;
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  auto layout = ParseQuantizationConfig(extra["quantization_config"], config_path);
  if (!layout.ok()) return layout.status();
  if (layout->format == QuantizedFormat::kCompressedTensorsInt8 && !FusedLinears(config).empty())
    return absl::UnimplementedError(
        absl::StrCat(config_path, ": compressed-tensors checkpoints of ", config.model_type,
                     " (fused projections) are not supported yet"));
  return std::make_shared<const StoredLayout>(*std::move(layout));
}

// LoadModel's body; `packed` as DequantizingSource's.
absl::StatusOr<LlamaModel> LoadModelFrom(const std::string& dir, at::ScalarType dtype,
                                         at::Device device, PackedLinears* packed) {
  auto config = LoadLlamaConfig(dir);
  if (!config.ok()) return config.status();
  SQ_ASSIGN_OR_RETURN(std::shared_ptr<const StoredLayout> layout, LayoutOf(dir, *config));
  if (layout == nullptr) return LlamaModel::Load(dir, dtype, device);
  auto reader = CheckpointReader::Open(dir);
  if (!reader.ok()) return reader.status();
  const CheckpointReader& weights = **reader;
  auto model =
      LlamaModel::FromTensors(*config, DequantizingSource(layout, weights, packed), dtype, device,
                              [&](const std::string& name) { return weights.FileOf(name); });
  if (!model.ok() || layout->activations == ActivationQuant::Kind::kNone) return model;
  const TensorGetter get = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
    auto view = weights.Get(name);
    if (!view.ok()) return view.status();
    return ToTorch(*view);
  };
  for (int64_t i = 0; i < model->num_layers(); ++i) {
    for (auto& [n, linear] : model->layer(i).Linears()) {
      const std::string base = absl::StrCat("model.layers.", i, ".", n);
      auto quant = ReadInputQuant(base, get, layout->activations);
      if (!quant.ok())
        return absl::InvalidArgumentError(absl::StrCat(dir, ": ", quant.status().message()));
      linear->input_quant = *quant;
    }
  }
  return model;
}

}  // namespace

absl::StatusOr<LlamaModel::TensorSource> DenseTensorSource(const std::string& dir,
                                                           const LlamaConfig& config,
                                                           const CheckpointReader& weights) {
  SQ_ASSIGN_OR_RETURN(std::shared_ptr<const StoredLayout> layout, LayoutOf(dir, config));
  if (layout == nullptr) return LlamaModel::TensorSource();
  if (layout->activations != ActivationQuant::Kind::kNone)
    return absl::UnimplementedError(
        absl::StrCat(dir,
                     ": a checkpoint whose linears quantize their inputs (W8A8) cannot be "
                     "read as a dense model: its activation scales would be lost"));
  return DequantizingSource(layout, weights, nullptr);
}

absl::StatusOr<LlamaModel> LoadModel(const std::string& dir, at::ScalarType dtype,
                                     at::Device device) {
  auto model = LoadModelFrom(dir, dtype, device, nullptr);
  if (!model.ok() || !HasLoraAdapters(dir)) return model;
  // A model written with adapters beside it (a distill stage's lora output) is the base with the
  // adapters merged.
  if (auto s = MergeLoraAdapters(dir, *model); !s.ok()) return s;
  return model;
}

absl::StatusOr<LlamaModel> LoadModelWithPackedLinears(const std::string& dir, at::ScalarType dtype,
                                                      at::Device device, PackedBaseInfo* info) {
  if (HasLoraAdapters(dir)) {
    // Adapters merge into dense weights only.
    if (info) *info = PackedBaseInfo{"dense (adapters merged)", 0, 0};
    return LoadModel(dir, dtype, device);
  }
  PackedLinears packed;
  // Built on the host: only the packed forms and the other tensors go to the device.
  auto model = LoadModelFrom(dir, dtype, at::kCPU, &packed);
  if (!model.ok()) return model.status();
  PackedBaseInfo found{"dense", 0, 0};
  auto config = LoadLlamaConfig(dir);
  if (!config.ok()) return config.status();
  const json extra = json::parse(config->extra_json, nullptr, false);
  if (!packed.empty() && extra.is_object() && extra.contains("quantization_config")) {
    const json& q = extra["quantization_config"];
    found.format = q.value("quant_method", std::string("quantized"));
    if (q.contains("bnb_4bit_quant_type")) found.format = q["bnb_4bit_quant_type"];
  }
  for (int64_t i = 0; i < model->num_layers(); ++i) {
    for (auto& [n, linear] : model->layer(i).Linears()) {
      auto it = packed.find(absl::StrCat("model.layers.", i, ".", n, ".weight"));
      if (it == packed.end()) continue;
      linear->packed = it->second->To(device);
      linear->weight = at::Tensor();
      ++found.linears;
      found.bytes += linear->packed->StorageBytes();
    }
  }
  if (info) *info = found;
  return model->To(device, dtype);
}

}  // namespace squeeze
