#include "common/compress/float4.h"

#include <c10/core/GradMode.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace squeeze {
namespace {

using json = nlohmann::json;

constexpr int64_t kNestedBlock = 256;

std::string DTypeName(at::ScalarType dtype) {
  return dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : "float32";
}

// Blockwise absmax over the flattened `x` (float32); the last block may be partial.
at::Tensor BlockAbsMax(const at::Tensor& x, int64_t block) {
  const int64_t n = x.numel(), full = n / block * block;
  std::vector<at::Tensor> parts;
  if (full > 0) parts.push_back(x.slice(0, 0, full).view({-1, block}).abs().amax(1));
  if (full < n) parts.push_back(x.slice(0, full).abs().amax().reshape({1}));
  return at::cat(parts);
}

// Each value of `x` scaled by its block's `scale` and replaced by the index of the nearest code
// (ties to the lower code value, as bitsandbytes rounds).
at::Tensor NearestCode(const at::Tensor& x, const at::Tensor& scale, int64_t block,
                       const at::Tensor& code) {
  const int64_t n = x.numel();
  const at::Tensor per_value = scale.clamp_min(1e-38).repeat_interleave(block).slice(0, 0, n);
  const at::Tensor scaled = (x / per_value).clamp(-1.0, 1.0);
  const auto [sorted, order] = at::sort(code);
  const at::Tensor bounds = (sorted.slice(0, 0, -1) + sorted.slice(0, 1)) / 2;
  return order.index_select(0, at::bucketize(scaled, bounds)).to(at::kByte);
}

}  // namespace

std::string Float4TypeName(Float4Type type) { return type == Float4Type::kNf4 ? "nf4" : "fp4"; }

absl::StatusOr<Float4Type> ParseFloat4Type(const std::string& name) {
  if (name == "nf4") return Float4Type::kNf4;
  if (name == "fp4") return Float4Type::kFp4;
  return absl::InvalidArgumentError(absl::StrCat("expected nf4 or fp4, got \"", name, "\""));
}

at::Tensor Float4Codebook(Float4Type type) {
  // NF4: the QLoRA paper's Appendix E values; FP4: e2m1 with bitsandbytes' bias, by bit pattern
  // (0b000 = 0, 0b001 = 0.0625, 0b010 = 8, ...), normalized by its largest magnitude 12.
  static constexpr float kNf4[16] = {-1.0f,
                                     -0.6961928009986877f,
                                     -0.5250730514526367f,
                                     -0.39491748809814453f,
                                     -0.28444138169288635f,
                                     -0.18477343022823334f,
                                     -0.09105003625154495f,
                                     0.0f,
                                     0.07958029955625534f,
                                     0.16093020141124725f,
                                     0.24611230194568634f,
                                     0.33791524171829224f,
                                     0.44070982933044434f,
                                     0.5626170039176941f,
                                     0.7229568362236023f,
                                     1.0f};
  static constexpr float kFp4[16] = {0,  0.0625f,  8,  12,  4,  6,  2,  3,
                                     -0, -0.0625f, -8, -12, -4, -6, -2, -3};
  at::Tensor out = at::empty({16}, at::kFloat);
  for (int i = 0; i < 16; ++i) out[i] = type == Float4Type::kNf4 ? kNf4[i] : kFp4[i] / 12.0f;
  return out;
}

at::Tensor DynamicMap8Bit() {
  // Signed, 7 exponent bits: for exponent e = 0..6, 2^e fractions (midpoints of a float32
  // linspace(0.1, 1) of 2^e + 1 points) times 10^(e - 6), with both signs; plus 0 and 1.
  std::vector<float> values;
  for (int e = 0; e < 7; ++e) {
    const int64_t items = (int64_t{1} << e) + 1;
    const at::Tensor b = at::linspace(0.1, 1.0, items, at::kFloat);
    const at::Tensor means = (b.slice(0, 0, -1) + b.slice(0, 1)) / 2.0;
    const at::Tensor scaled = means * std::pow(10.0, e - 6);
    for (int64_t k = 0; k < scaled.numel(); ++k) {
      values.push_back(scaled[k].item<float>());
      values.push_back(-scaled[k].item<float>());
    }
  }
  values.push_back(0.0f);
  values.push_back(1.0f);
  std::sort(values.begin(), values.end());
  return at::tensor(values, at::kFloat);
}

at::Tensor Float4Weight::BlockScales() const {
  if (!nested) return absmax.to(at::kFloat);
  const at::Tensor codes = nested_map.index_select(0, absmax.to(at::kLong));
  const at::Tensor scale =
      nested_absmax.repeat_interleave(kNestedBlock).slice(0, 0, absmax.numel());
  return codes * scale + nested_offset;
}

at::Tensor Float4Weight::Dequantize() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const at::Tensor bytes = packed.reshape({-1}).to(at::kLong);
  const at::Tensor codes = at::stack({bytes.bitwise_right_shift(4), bytes.bitwise_and(0xF)}, 1)
                               .reshape({-1})
                               .slice(0, 0, n);
  const at::Tensor values = Float4Codebook(type).to(codes.device()).index_select(0, codes);
  const at::Tensor scale = BlockScales().repeat_interleave(block_size).slice(0, 0, n);
  return (values * scale).reshape(shape);
}

double Float4BitsPerWeight(const Float4Options& options) {
  const double b = static_cast<double>(options.block_size);
  return 4.0 + (options.double_quant ? 8.0 / b + 32.0 / (b * 256.0) : 32.0 / b);
}

absl::StatusOr<Float4Weight> QuantizeFloat4(const at::Tensor& weight,
                                            const Float4Options& options) {
  c10::NoGradGuard no_grad;
  const int64_t b = options.block_size;
  if (b < 32 || b > 4096 || (b & (b - 1)) != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("block_size: expected a power of two from 32 to 4096, got ", b));
  if (!at::isFloatingType(weight.scalar_type()) || weight.numel() == 0)
    return absl::InvalidArgumentError("expected a non-empty floating-point weight");
  const at::Tensor x = weight.detach().to(at::kFloat).reshape({-1});
  if (!at::isfinite(x).all().item<bool>())
    return absl::InvalidArgumentError("the weight holds non-finite values");
  Float4Weight out;
  out.type = options.type;
  out.block_size = b;
  out.shape = weight.sizes().vec();
  const at::Tensor absmax = BlockAbsMax(x, b);
  at::Tensor codes = NearestCode(x, absmax, b, Float4Codebook(options.type).to(x.device()));
  if (codes.numel() % 2) codes = at::cat({codes, at::zeros({1}, codes.options())});
  const at::Tensor pairs = codes.view({-1, 2}).to(at::kInt);
  out.packed = pairs.select(1, 0)
                   .bitwise_left_shift(4)
                   .bitwise_or(pairs.select(1, 1))
                   .to(at::kByte)
                   .unsqueeze(1)
                   .contiguous();
  if (!options.double_quant) {
    out.absmax = absmax.contiguous();
    return out;
  }
  out.nested = true;
  out.nested_offset = absmax.mean().item<double>();
  const at::Tensor centred = absmax - out.nested_offset;
  out.nested_absmax = BlockAbsMax(centred, kNestedBlock).contiguous();
  out.nested_map = DynamicMap8Bit().to(x.device());
  out.absmax = NearestCode(centred, out.nested_absmax, kNestedBlock, out.nested_map).contiguous();
  return out;
}

absl::StatusOr<NamedTensors> PackBnb4bit(const std::string& name, const Float4Weight& w,
                                         at::ScalarType dtype) {
  if (w.shape.empty()) return absl::InvalidArgumentError(absl::StrCat(name, ": no shape"));
  NamedTensors out;
  out.emplace_back(name, w.packed);
  out.emplace_back(name + ".absmax", w.absmax);
  out.emplace_back(name + ".quant_map", Float4Codebook(w.type));
  json state = {{"quant_type", Float4TypeName(w.type)},
                {"blocksize", w.block_size},
                {"dtype", DTypeName(dtype)},
                {"shape", w.shape}};
  if (w.nested) {
    out.emplace_back(name + ".nested_absmax", w.nested_absmax);
    out.emplace_back(name + ".nested_quant_map", w.nested_map);
    state["nested_blocksize"] = kNestedBlock;
    state["nested_dtype"] = "float32";
    state["nested_offset"] = w.nested_offset;
  }
  const std::string text = state.dump();
  at::Tensor bytes = at::empty({static_cast<int64_t>(text.size())}, at::kByte);
  std::copy(text.begin(), text.end(), bytes.data_ptr<uint8_t>());
  out.emplace_back(name + ".quant_state.bitsandbytes__" + Float4TypeName(w.type), bytes);
  return out;
}

bool HasBnb4bit(const std::string& name, const std::function<bool(const std::string&)>& contains) {
  return contains(name + ".quant_state.bitsandbytes__nf4") ||
         contains(name + ".quant_state.bitsandbytes__fp4");
}

absl::StatusOr<Float4Weight> UnpackBnb4bit(const std::string& name, const TensorGetter& get) {
  Float4Weight w;
  auto state_tensor = get(name + ".quant_state.bitsandbytes__nf4");
  if (!state_tensor.ok()) {
    state_tensor = get(name + ".quant_state.bitsandbytes__fp4");
    w.type = Float4Type::kFp4;
  }
  if (!state_tensor.ok())
    return absl::InvalidArgumentError(
        absl::StrCat(name, ".quant_state.bitsandbytes__nf4 (or __fp4): missing"));
  // A quant state is a few hundred bytes of JSON; a file's claim of more is not parsed.
  constexpr int64_t kMaxStateBytes = 64 << 10;
  if (state_tensor->numel() > kMaxStateBytes)
    return absl::InvalidArgumentError(absl::StrCat(name, ".quant_state: ", state_tensor->numel(),
                                                   " bytes, more than ", kMaxStateBytes));
  const at::Tensor bytes = state_tensor->to(at::kByte).contiguous();
  const std::string text(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), bytes.numel());
  const json state = json::parse(text, nullptr, false);
  const std::string where = absl::StrCat(name, ".quant_state: ");
  if (state.is_discarded() || !state.is_object())
    return absl::InvalidArgumentError(where + "expected a JSON object");
  if (!state.contains("blocksize") || !state["blocksize"].is_number_integer())
    return absl::InvalidArgumentError(where + "blocksize: expected an integer");
  if (!state.contains("shape") || !state["shape"].is_array())
    return absl::InvalidArgumentError(where + "shape: expected a list of sizes");
  if (state.value("quant_type", "") != Float4TypeName(w.type))
    return absl::InvalidArgumentError(where + "quant_type: does not match the tensor's name");
  w.block_size = state["blocksize"].get<int64_t>();
  int64_t n = 1;
  for (const json& d : state["shape"]) {
    // Each size and their product stay below 2^40, so the product cannot overflow.
    if (!d.is_number_integer() || d.get<int64_t>() <= 0 || d.get<int64_t>() > (int64_t{1} << 40))
      return absl::InvalidArgumentError(where + "shape: expected positive sizes");
    w.shape.push_back(d.get<int64_t>());
    n *= w.shape.back();
    if (n > (int64_t{1} << 40))
      return absl::InvalidArgumentError(where + "shape: more than 2^40 weights");
  }
  if (w.block_size <= 0) return absl::InvalidArgumentError(where + "blocksize: must be positive");
  auto packed = get(name);
  if (!packed.ok()) return packed.status();
  if (packed->scalar_type() != at::kByte || packed->numel() != (n + 1) / 2)
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": expected ", (n + 1) / 2, " uint8 values for shape ", state["shape"].dump()));
  w.packed = *packed;
  auto absmax = get(name + ".absmax");
  if (!absmax.ok()) return absmax.status();
  const int64_t blocks = (n + w.block_size - 1) / w.block_size;
  if (absmax->numel() != blocks)
    return absl::InvalidArgumentError(
        absl::StrCat(name, ".absmax: expected ", blocks, " values, got ", absmax->numel()));
  w.absmax = *absmax;
  w.nested = state.contains("nested_offset");
  if (w.nested) {
    if (!state["nested_offset"].is_number() || state.value("nested_blocksize", 0) != kNestedBlock)
      return absl::InvalidArgumentError(where + "nested_offset and nested_blocksize 256 expected");
    w.nested_offset = state["nested_offset"].get<double>();
    auto nested_absmax = get(name + ".nested_absmax");
    if (!nested_absmax.ok()) return nested_absmax.status();
    auto nested_map = get(name + ".nested_quant_map");
    if (!nested_map.ok()) return nested_map.status();
    if (nested_map->numel() != 256 || w.absmax.scalar_type() != at::kByte ||
        nested_absmax->numel() != (blocks + kNestedBlock - 1) / kNestedBlock)
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": double quantization needs uint8 absmax, ",
                       (blocks + kNestedBlock - 1) / kNestedBlock,
                       " nested_absmax values and a 256-value nested_quant_map"));
    w.nested_absmax = nested_absmax->to(at::kFloat);
    w.nested_map = nested_map->to(at::kFloat);
  }
  return w;
}

absl::Status WriteBnb4bitConfig(const std::string& dir, const LlamaConfig& config,
                                const Float4Options& options, at::ScalarType dtype) {
  // transformers' BitsAndBytesConfig.to_dict().
  const json quantization_config = {{"quant_method", "bitsandbytes"},
                                    {"_load_in_4bit", true},
                                    {"_load_in_8bit", false},
                                    {"load_in_4bit", true},
                                    {"load_in_8bit", false},
                                    {"bnb_4bit_quant_type", Float4TypeName(options.type)},
                                    {"bnb_4bit_use_double_quant", options.double_quant},
                                    {"bnb_4bit_compute_dtype", DTypeName(dtype)},
                                    {"bnb_4bit_quant_storage", "uint8"},
                                    {"llm_int8_threshold", 6.0},
                                    {"llm_int8_skip_modules", nullptr},
                                    {"llm_int8_enable_fp32_cpu_offload", false},
                                    {"llm_int8_has_fp16_weight", false}};
  return WriteConfigWithQuantization(dir, config, quantization_config, DTypeName(dtype));
}

}  // namespace squeeze
