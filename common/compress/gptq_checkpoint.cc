#include "common/compress/gptq_checkpoint.h"

#include <c10/core/GradMode.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/tensor/torch_tensor.h"

namespace squeeze {
namespace {

using json = nlohmann::json;

// Packs the rows of `values` ([n, m] small non-negative ints) along dim 0 into int32 words:
// value (i, j) occupies bits [i * bits, (i + 1) * bits) of column j's bit stream.
at::Tensor PackRows(const at::Tensor& values, int bits) {
  const int64_t n = values.size(0), m = values.size(1);
  const int64_t words = n * bits / 32;
  at::Tensor v = values.to(at::kLong).contiguous();
  std::vector<uint32_t> out(static_cast<size_t>(words * m), 0);
  auto a = v.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t bit = i * bits, word = bit / 32, shift = bit % 32;
    for (int64_t j = 0; j < m; ++j) {
      const uint64_t x = static_cast<uint64_t>(a[i][j]) << shift;
      out[word * m + j] |= static_cast<uint32_t>(x);
      if (shift + bits > 32) out[(word + 1) * m + j] |= static_cast<uint32_t>(x >> 32);
    }
  }
  return at::from_blob(out.data(), {words, m}, at::kInt).clone();
}

at::Tensor UnpackRows(const at::Tensor& packed, int bits, int64_t n) {
  const int64_t m = packed.size(1);
  at::Tensor p = packed.to(at::kInt).contiguous();
  const uint32_t* w = reinterpret_cast<const uint32_t*>(p.data_ptr<int32_t>());
  const uint64_t mask = (1u << bits) - 1;
  at::Tensor out = at::zeros({n, m}, at::kLong);
  auto a = out.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t bit = i * bits, word = bit / 32, shift = bit % 32;
    for (int64_t j = 0; j < m; ++j) {
      uint64_t x = w[word * m + j];
      if (shift + bits > 32) x |= static_cast<uint64_t>(w[(word + 1) * m + j]) << 32;
      a[i][j] = static_cast<int64_t>((x >> shift) & mask);
    }
  }
  return out;
}

// PackRows for widths that divide 32 (2, 4, 8 bits), as tensor operations on the values' device:
// word w of a column holds values [w * k, (w + 1) * k), value i shifted by (i % k) * bits.
at::Tensor PackRowsVectorized(const at::Tensor& values, int bits) {
  const int64_t n = values.size(0), m = values.size(1), k = 32 / bits;
  const at::Tensor shifts =
      (at::arange(k, values.options().dtype(at::kLong)) * bits).view({1, k, 1});
  const at::Tensor words =
      at::bitwise_left_shift(values.to(at::kLong).reshape({n / k, k, m}), shifts).sum(1);
  // Words are below 2^32; their low 32 bits, as int32, are what the format stores.
  return at::where(words >= (int64_t{1} << 31), words - (int64_t{1} << 32), words).to(at::kInt);
}

at::Tensor PackRowsAnyWidth(const at::Tensor& values, int bits) {
  if (32 % bits == 0) return PackRowsVectorized(values, bits);
  return PackRows(values.to(at::kCPU), bits);
}

}  // namespace

absl::StatusOr<PackedLinear> PackGptqLinear(const QuantizedWeight& q, GptqFormat format) {
  const int bits = q.spec.bits;
  const int64_t out = q.codes.size(0), in = q.codes.size(1);
  if ((in * bits) % 32 != 0 || (out * bits) % 32 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ", out, "x", in, " layer does not pack into 32-bit words at ", bits,
                     " bits (need in and out multiples of ", 32 / std::gcd(32, bits), ")"));
  }
  const int64_t group = q.spec.group_size == -1 ? in : q.spec.group_size;
  PackedLinear p;
  // On the codes' device (the GPU during a compression job) for 2, 4 and 8 bits.
  p.qweight = PackRowsAnyWidth(q.codes.t(), bits);       // [in, out] -> [in * bits / 32, out]
  at::Tensor zeros = q.zeros.t().round().to(at::kLong);  // [groups, out]
  if (format == GptqFormat::kV1)
    zeros = (zeros - 1).bitwise_and((1 << bits) - 1);  // 0 wraps, as loaders expect
  // Pack along outputs: [groups, out * bits / 32].
  p.qzeros = PackRowsAnyWidth(zeros.t(), bits).t().contiguous();
  p.scales = q.scales.t().to(at::kHalf).contiguous();
  p.g_idx = q.g_idx.defined()
                ? q.g_idx.to(at::kInt)
                : at::div(at::arange(in, q.codes.options().dtype(at::kLong)), group, "floor")
                      .to(at::kInt);
  return p;
}

absl::StatusOr<QuantizedWeight> UnpackGptqLinear(const PackedLinear& p, int bits,
                                                 int64_t group_size, GptqFormat format) {
  const int64_t in = p.qweight.size(0) * 32 / bits, out = p.qweight.size(1);
  const int64_t groups = p.scales.size(0);
  if (p.scales.size(1) != out || p.qzeros.size(0) != groups ||
      p.qzeros.size(1) * 32 / bits != out || p.g_idx.numel() != in) {
    return absl::InvalidArgumentError("qweight, qzeros, scales and g_idx shapes disagree");
  }
  QuantizedWeight q;
  q.spec = {bits, group_size, false};
  q.codes = UnpackRows(p.qweight, bits, in).t().to(at::kByte).contiguous();  // [out, in]
  at::Tensor zeros = UnpackRows(p.qzeros.t().contiguous(), bits, out);       // [out, groups]
  // v1 stores zero - 1 wrapped to `bits`, so a stored all-ones field is the zero point 0.
  if (format == GptqFormat::kV1) zeros = (zeros + 1).bitwise_and((1 << bits) - 1);
  q.zeros = zeros.to(at::kFloat);
  q.scales = p.scales.to(at::kFloat).t().contiguous();
  q.g_idx = p.g_idx.to(at::kInt);
  if (q.g_idx.max().item<int>() >= groups || q.g_idx.min().item<int>() < 0) {
    return absl::InvalidArgumentError("g_idx: names a group outside scales");
  }
  return q;
}

absl::Status WriteGptqCheckpoint(const std::string& dir, const LlamaModel& model,
                                 const std::map<std::string, QuantizedWeight>& quantized,
                                 const GptqExportOptions& o) {
  if (!FusedLinears(model.config()).empty()) {
    return absl::UnimplementedError(
        absl::StrCat("WriteGptqCheckpoint: ", model.config().model_type,
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
    auto packed = PackGptqLinear(it->second, o.format);
    if (!packed.ok())
      return absl::InvalidArgumentError(absl::StrCat(prefix, ": ", packed.status().message()));
    for (auto [field, tensor] :
         {std::pair{".qweight", packed->qweight}, std::pair{".qzeros", packed->qzeros},
          std::pair{".scales", packed->scales}, std::pair{".g_idx", packed->g_idx}}) {
      if (auto s = AddTensor(writer, prefix + field, tensor); !s.ok()) return s;
    }
  }
  if (auto s = WriteCheckpoint(dir, writer); !s.ok()) return s;
  return WriteGptqConfig(dir, model.config(), o);
}

absl::Status WriteGptqConfig(const std::string& dir, const LlamaConfig& config,
                             const GptqExportOptions& o) {
  LlamaConfig c = config;
  json extra = json::parse(c.extra_json, nullptr, false);
  if (extra.is_discarded()) extra = json::object();
  extra["quantization_config"] = {
      {"quant_method", "gptq"},
      {"bits", o.gptq.quant.bits},
      {"group_size", o.gptq.quant.group_size},
      {"desc_act", o.gptq.act_order},
      {"static_groups", o.gptq.static_groups},
      {"sym", o.gptq.quant.symmetric},
      {"damp_percent", o.gptq.damp},
      {"true_sequential", true},
      {"checkpoint_format", o.format == GptqFormat::kV1 ? "gptq" : "gptq_v2"}};
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
  const json& qc = extra["quantization_config"];
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  if (qc.value("quant_method", "") != "gptq") {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": quantization_config.quant_method: only gptq is supported"));
  }
  const int bits = qc.value("bits", 4);
  const int64_t group_size = qc.value("group_size", int64_t{128});
  const std::string fmt = qc.value("checkpoint_format", "gptq");
  if (fmt != "gptq" && fmt != "gptq_v2") {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": quantization_config.checkpoint_format: expected gptq or gptq_v2, got \"",
        fmt, "\""));
  }
  const GptqFormat format = fmt == "gptq" ? GptqFormat::kV1 : GptqFormat::kV2;
  auto reader = CheckpointReader::Open(dir);
  if (!reader.ok()) return reader.status();
  const CheckpointReader& weights = **reader;
  // Linear weights come from their packed form; everything else is stored as it is.
  auto source = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
    const std::string suffix = ".weight";
    const std::string prefix = name.substr(0, name.size() - suffix.size());
    if (!weights.Contains(prefix + ".qweight")) {
      auto view = weights.Get(name);
      if (!view.ok()) return view.status();
      return ToTorch(*view);
    }
    PackedLinear p;
    for (auto [field, out] : {std::pair{".qweight", &p.qweight}, std::pair{".qzeros", &p.qzeros},
                              std::pair{".scales", &p.scales}, std::pair{".g_idx", &p.g_idx}}) {
      auto view = weights.Get(prefix + field);
      if (!view.ok()) return view.status();
      auto t = ToTorch(*view);
      if (!t.ok()) return t.status();
      *out = *t;
    }
    auto q = UnpackGptqLinear(p, bits, group_size, format);
    if (!q.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(weights.FileOf(prefix + ".qweight"), ": ",
                                                     prefix, ": ", q.status().message()));
    }
    return q->Dequantize();
  };
  return LlamaModel::FromTensors(*config, source, dtype, device,
                                 [&](const std::string& name) { return weights.FileOf(name); });
}

}  // namespace squeeze
