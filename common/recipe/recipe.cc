#include "common/recipe/recipe.h"

#include <yaml-cpp/yaml.h>
#include <yaml.h>

#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/base/file_util.h"
#include "common/base/status_macros.h"
#include "common/compress/mixed_precision.h"
#include "common/compress/pack_rules.h"
#include "common/model/hf_tokenizer.h"
#include "common/model/llama_config.h"
#include "common/model/lora_config.h"
#include "common/store/artifact_store.h"
#include "common/store/artifact_tensor_reader.h"
#include "common/store/data_files.h"
#include "common/tensor/safetensors.h"

namespace squeeze {
namespace {

using json = nlohmann::json;

absl::Status FieldError(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

// The first byte at which `text` stops being UTF-8, or npos.
size_t InvalidUtf8At(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    if (extra < 0 || i + extra >= text.size()) return i;  // not a lead byte, or cut short
    for (int k = 1; k <= extra; ++k) {
      if (i + k >= text.size() || (static_cast<unsigned char>(text[i + k]) >> 6) != 2) return i;
    }
    i += 1 + extra;
  }
  return std::string::npos;
}

// Checks the YAML with libyaml's event parser before any node is built. libyaml is the strict
// and well-fuzzed reference parser: yaml-cpp 0.7 never returns on some malformed input ("{k: 1}\n,"
// or a first line starting with a comma, found by tests/fuzz/recipe_fuzz), so yaml-cpp only sees
// documents libyaml accepted. Also refused here, with line and column: aliases (which would
// expand on the server: a million aliases into half a gigabyte), keys repeated in one mapping
// (the first would win silently), and more than one document.
absl::Status CheckRecipeShape(absl::string_view text) {
  yaml_parser_t parser;
  if (!yaml_parser_initialize(&parser)) return absl::InternalError("recipe: cannot start a parser");
  yaml_parser_set_input_string(&parser, reinterpret_cast<const unsigned char*>(text.data()),
                               text.size());
  struct Frame {
    bool map;
    bool expecting_key;
    std::set<std::string> keys;
  };
  std::vector<Frame> frames;
  absl::Status status;
  int documents = 0;
  auto at = [](const yaml_mark_t& m) {
    return absl::StrCat("recipe: line ", m.line + 1, ", column ", m.column + 1, ": ");
  };
  // A node begins inside the innermost collection: in a mapping, keys and values alternate.
  auto node = [&](const yaml_event_t& e, const std::string* scalar) {
    if (frames.empty() || !frames.back().map) return;
    Frame& f = frames.back();
    if (f.expecting_key && scalar != nullptr && !f.keys.insert(*scalar).second) {
      status = absl::InvalidArgumentError(
          absl::StrCat(at(e.start_mark), "key \"", *scalar, "\" appears twice in one mapping"));
    }
    f.expecting_key = !f.expecting_key;
  };
  for (bool done = false; !done && status.ok();) {
    yaml_event_t e;
    if (!yaml_parser_parse(&parser, &e)) {
      status = absl::InvalidArgumentError(
          absl::StrCat(at(parser.problem_mark),
                       "not valid YAML: ", parser.problem ? parser.problem : "unreadable input",
                       parser.context ? absl::StrCat(" (", parser.context, ")") : std::string()));
      break;
    }
    switch (e.type) {
      case YAML_STREAM_END_EVENT:
        done = true;
        break;
      case YAML_DOCUMENT_START_EVENT:
        if (++documents > 1)
          status = absl::InvalidArgumentError(
              absl::StrCat(at(e.start_mark), "a recipe is one YAML document"));
        break;
      case YAML_ALIAS_EVENT:
        status = absl::InvalidArgumentError(
            absl::StrCat(at(e.start_mark),
                         "YAML aliases (*name) are not allowed in a recipe; write the value out"));
        break;
      case YAML_SCALAR_EVENT: {
        const std::string value(reinterpret_cast<const char*>(e.data.scalar.value),
                                e.data.scalar.length);
        node(e, &value);
        break;
      }
      case YAML_SEQUENCE_START_EVENT:
        node(e, nullptr);
        frames.push_back({false, true, {}});
        break;
      case YAML_MAPPING_START_EVENT:
        node(e, nullptr);
        frames.push_back({true, true, {}});
        break;
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT:
        if (!frames.empty()) frames.pop_back();
        break;
      default:
        break;
    }
    yaml_event_delete(&e);
  }
  yaml_parser_delete(&parser);
  return status;
}

// Reads a YAML map's fields one by one, remembering which were used, so that an unknown field is
// an error naming it (a typo must not be silently ignored).
class MapReader {
 public:
  MapReader(const YAML::Node& node, std::string path) : node_(node), path_(std::move(path)) {}

  absl::Status CheckIsMap() const {
    if (!node_.IsMap()) return FieldError(path_, "expected a mapping");
    return absl::OkStatus();
  }
  std::string Path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  YAML::Node Get(const std::string& key) {
    used_.insert(key);
    return node_[key];
  }
  absl::Status Int(const std::string& key, int64_t& out, int64_t lo, int64_t hi) {
    YAML::Node n = Get(key);
    if (!n) return absl::OkStatus();
    int64_t v;
    if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v)) {
      return FieldError(Path(key), "expected an integer");
    }
    if (v < lo || v > hi) {
      return FieldError(Path(key), absl::StrCat("must be between ", lo, " and ", hi, ", got ", v));
    }
    out = v;
    return absl::OkStatus();
  }
  absl::Status Double(const std::string& key, double& out, double lo, double hi) {
    YAML::Node n = Get(key);
    if (!n) return absl::OkStatus();
    double v;
    if (!n.IsScalar() || !YAML::convert<double>::decode(n, v)) {
      return FieldError(Path(key), "expected a number");
    }
    if (!(v >= lo && v <= hi)) {
      return FieldError(Path(key), absl::StrCat("must be between ", lo, " and ", hi, ", got ", v));
    }
    out = v;
    return absl::OkStatus();
  }
  // A duration as seconds (90) or with a unit (90s, 30m, 2h, 1d), in milliseconds.
  absl::Status Duration(const std::string& key, int64_t& out_ms, int64_t lo_ms, int64_t hi_ms) {
    YAML::Node n = Get(key);
    if (!n) return absl::OkStatus();
    const std::string expected = "expected a duration such as 90, 90s, 30m, 2h or 1d";
    if (!n.IsScalar() || n.Scalar().empty()) return FieldError(Path(key), expected);
    std::string text = n.Scalar();
    int64_t unit_ms = 1000;
    switch (text.back()) {
      case 's':
        unit_ms = 1000;
        text.pop_back();
        break;
      case 'm':
        unit_ms = 60 * 1000;
        text.pop_back();
        break;
      case 'h':
        unit_ms = 3600 * 1000;
        text.pop_back();
        break;
      case 'd':
        unit_ms = 24 * 3600 * 1000;
        text.pop_back();
        break;
      default:
        break;
    }
    int64_t count = 0;
    if (text.empty() || text.size() > 9 || !absl::SimpleAtoi(text, &count) || count < 0) {
      return FieldError(Path(key), absl::StrCat(expected, ", got \"", n.Scalar(), "\""));
    }
    const int64_t ms = count * unit_ms;
    if (ms < lo_ms || ms > hi_ms) {
      return FieldError(Path(key), absl::StrCat("must be between ", lo_ms / 1000, "s and ",
                                                hi_ms / 1000, "s, got \"", n.Scalar(), "\""));
    }
    out_ms = ms;
    return absl::OkStatus();
  }
  absl::Status Bool(const std::string& key, bool& out) {
    YAML::Node n = Get(key);
    if (!n) return absl::OkStatus();
    bool v;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) {
      return FieldError(Path(key), "expected true or false");
    }
    out = v;
    return absl::OkStatus();
  }
  absl::Status String(const std::string& key, std::string& out, bool required = false) {
    YAML::Node n = Get(key);
    if (!n) return required ? FieldError(Path(key), "required") : absl::OkStatus();
    if (!n.IsScalar()) return FieldError(Path(key), "expected a string");
    out = n.Scalar();
    return absl::OkStatus();
  }
  absl::Status Choice(const std::string& key, std::string& out,
                      const std::vector<std::string>& allowed) {
    if (auto s = String(key, out); !s.ok()) return s;
    for (const std::string& a : allowed) {
      if (a == out) return absl::OkStatus();
    }
    return FieldError(Path(key), absl::StrCat("must be one of ", absl::StrJoin(allowed, ", "),
                                              ", got \"", out, "\""));
  }
  absl::Status NoUnknownFields() const {
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      const std::string key = it->first.Scalar();
      if (!used_.count(key)) return FieldError(Path(key), "unknown field");
    }
    return absl::OkStatus();
  }

 private:
  YAML::Node node_;
  std::string path_;
  std::set<std::string> used_;
};

absl::Status ParseEvaluate(MapReader& r, v1::EvaluateStage& out) {
  using Metric = v1::EvaluateStage;
  if (YAML::Node m = r.Get("metrics")) {
    if (!m.IsSequence()) return FieldError(r.Path("metrics"), "expected a list");
    for (size_t i = 0; i < m.size(); ++i) {
      const std::string path = absl::StrCat(r.Path("metrics"), "[", i, "]");
      if (!m[i].IsScalar()) return FieldError(path, "expected a string");
      const std::string v = m[i].Scalar();
      if (v == "perplexity") {
        out.add_metrics(Metric::PERPLEXITY);
      } else if (v == "size") {
        out.add_metrics(Metric::SIZE);
      } else if (v == "latency") {
        out.add_metrics(Metric::LATENCY);
      } else {
        return FieldError(
            path, absl::StrCat("must be one of perplexity, size, latency, got \"", v, "\""));
      }
    }
  } else {
    for (auto m : {Metric::PERPLEXITY, Metric::SIZE, Metric::LATENCY}) out.add_metrics(m);
  }
  int64_t window = 512, stride = 256, batch = 8, max_examples = 0;
  SQ_RETURN_IF_ERROR(r.Int("window", window, 2, 1 << 20));
  SQ_RETURN_IF_ERROR(r.Int("stride", stride, 1, 1 << 20));
  SQ_RETURN_IF_ERROR(r.Int("batch_size", batch, 1, 4096));
  SQ_RETURN_IF_ERROR(r.Int("max_examples", max_examples, 0, 1 << 30));
  int64_t max_task_questions = 0;
  SQ_RETURN_IF_ERROR(r.Int("max_task_questions", max_task_questions, 0, 1 << 30));
  std::string dtype = "float32";
  SQ_RETURN_IF_ERROR(r.Choice("dtype", dtype, {"float32", "bfloat16", "float16"}));
  if (YAML::Node n = r.Get("samples")) {
    MapReader samples(n, r.Path("samples"));
    SQ_RETURN_IF_ERROR(samples.CheckIsMap());
    YAML::Node prompts = samples.Get("prompts");
    const std::string prompts_path = samples.Path("prompts");
    if (!prompts || !prompts.IsSequence() || prompts.size() == 0 || prompts.size() > 16)
      return FieldError(prompts_path, "expected a list of 1 to 16 prompts");
    for (size_t i = 0; i < prompts.size(); ++i) {
      if (!prompts[i].IsScalar() || prompts[i].Scalar().empty() ||
          prompts[i].Scalar().size() > 4096)
        return FieldError(absl::StrCat(prompts_path, "[", i, "]"),
                          "expected a non-empty string of at most 4096 bytes");
      out.mutable_samples()->add_prompts(prompts[i].Scalar());
    }
    int64_t max_new_tokens = 32;
    SQ_RETURN_IF_ERROR(samples.Int("max_new_tokens", max_new_tokens, 1, 1024));
    out.mutable_samples()->set_max_new_tokens(max_new_tokens);
    SQ_RETURN_IF_ERROR(samples.NoUnknownFields());
  }
  out.set_dtype(dtype == "bfloat16"  ? v1::EvaluateStage::BFLOAT16
                : dtype == "float16" ? v1::EvaluateStage::FLOAT16
                                     : v1::EvaluateStage::FLOAT32);
  out.set_max_task_questions(max_task_questions);
  if (stride >= window) return FieldError(r.Path("stride"), "must be smaller than window");
  out.set_window(window);
  out.set_stride(stride);
  out.set_batch_size(batch);
  out.set_max_examples(max_examples);
  if (YAML::Node g = r.Get("gate")) {
    MapReader gate(g, r.Path("gate"));
    SQ_RETURN_IF_ERROR(gate.CheckIsMap());
    double min_retention = 0.0, min_accuracy_retention = 0.0;
    int64_t max_size_bytes = 0;
    SQ_RETURN_IF_ERROR(gate.Double("min_retention", min_retention, 0.0, 1.0));
    SQ_RETURN_IF_ERROR(gate.Double("min_accuracy_retention", min_accuracy_retention, 0.0, 10.0));
    SQ_RETURN_IF_ERROR(gate.Int("max_size_bytes", max_size_bytes, 1, INT64_MAX));
    SQ_RETURN_IF_ERROR(gate.NoUnknownFields());
    if (g["min_retention"]) out.mutable_gate()->set_min_retention(min_retention);
    if (g["max_size_bytes"]) out.mutable_gate()->set_max_size_bytes(max_size_bytes);
    if (g["min_accuracy_retention"])
      out.mutable_gate()->set_min_accuracy_retention(min_accuracy_retention);
  }
  return absl::OkStatus();
}

// The calibration windows sampled from data.calibration: by a calibrate stage (`samples`,
// `seq_len`), or by a stage itself when no calibrate stage ran (`calibration_samples`,
// `calibration_seq_len`).
absl::Status ParseCalibrationSample(MapReader& r, const std::string& samples_key,
                                    const std::string& seq_len_key, v1::CalibrationSample& out) {
  int64_t samples = 128, seq_len = 256, seed = 0;
  SQ_RETURN_IF_ERROR(r.Int(samples_key, samples, 1, 1 << 20));
  SQ_RETURN_IF_ERROR(r.Int(seq_len_key, seq_len, 2, 1 << 20));
  SQ_RETURN_IF_ERROR(r.Int("seed", seed, 0, INT64_MAX));
  out.set_samples(samples);
  out.set_seq_len(seq_len);
  out.set_seed(static_cast<uint64_t>(seed));
  return absl::OkStatus();
}

// quantize.mixed_precision: {bits: [2, 3, 4, 8], average_bits: 3.5 | max_size_bytes: N}.
absl::Status ParseMixedPrecision(MapReader& r, const std::string& method, bool w8a8,
                                 v1::MixedPrecision& out) {
  const std::string path = r.Path("mixed_precision");
  if (method == "awq")
    return FieldError(path,
                      "is chosen for method rtn or gptq; AWQ's scales are searched at one "
                      "width");
  if (w8a8) return FieldError(path, "W8A8 keeps every linear at 8 bits");
  MapReader m(r.Get("mixed_precision"), path);
  SQ_RETURN_IF_ERROR(m.CheckIsMap());
  std::vector<int> widths = {2, 3, 4, 8};
  if (YAML::Node b = m.Get("bits")) {
    if (!b.IsSequence() || b.size() == 0)
      return FieldError(m.Path("bits"), "expected a list of widths such as [2, 3, 4, 8]");
    widths.clear();
    for (size_t i = 0; i < b.size(); ++i) {
      int64_t v = 0;
      if (!b[i].IsScalar() || !YAML::convert<int64_t>::decode(b[i], v) ||
          (v != 2 && v != 3 && v != 4 && v != 8))
        return FieldError(absl::StrCat(m.Path("bits"), "[", i, "]"),
                          absl::StrCat("must be one of 2, 3, 4, 8, got ",
                                       b[i].IsScalar() ? b[i].Scalar() : "a non-scalar"));
      if (std::find(widths.begin(), widths.end(), v) != widths.end())
        return FieldError(absl::StrCat(m.Path("bits"), "[", i, "]"),
                          absl::StrCat(v, " is listed twice"));
      widths.push_back(static_cast<int>(v));
    }
  }
  std::sort(widths.begin(), widths.end());
  for (int w : widths) out.add_bits(w);
  const bool average = static_cast<bool>(m.Get("average_bits"));
  const bool size = static_cast<bool>(m.Get("max_size_bytes"));
  if (average == size)
    return FieldError(path, "needs exactly one budget: average_bits or max_size_bytes");
  if (average) {
    double v = 0;
    SQ_RETURN_IF_ERROR(m.Double("average_bits", v, 0.0, 64.0));
    if (v < widths.front())
      return FieldError(m.Path("average_bits"),
                        absl::StrCat(v, " is below the smallest width in bits (", widths.front(),
                                     "): no choice fits"));
    out.set_average_bits(v);
  } else {
    int64_t v = 0;
    SQ_RETURN_IF_ERROR(m.Int("max_size_bytes", v, 1, INT64_MAX));
    out.set_max_size_bytes(v);
  }
  return m.NoUnknownFields();
}

// NF4 / FP4: a codebook per 4 bits, blockwise absmax, optional double quantization; nothing of
// GPTQ's or AWQ's applies.
absl::Status ParseFloat4Quantize(MapReader& r, const std::string& method, v1::QuantizeStage& out) {
  for (const char* other : {"act_order", "static_groups", "damp", "block_size", "sym",
                            "activations", "prune", "mixed_precision", "smoothquant_alpha", "grid",
                            "clip", "max_shrink", "calibration_samples", "calibration_seq_len"}) {
    if (r.Get(other))
      return FieldError(r.Path(other), absl::StrCat("method ", method,
                                                    " quantizes each weight to its codebook "
                                                    "alone; it takes no ",
                                                    other));
  }
  if (YAML::Node b = r.Get("bits")) {
    int64_t v;
    if (!b.IsScalar() || !YAML::convert<int64_t>::decode(b, v) || v != 4)
      return FieldError(r.Path("bits"),
                        absl::StrCat("method ", method, " is 4-bit; got ", b.Scalar()));
  }
  int64_t block = 64;
  SQ_RETURN_IF_ERROR(r.Int("group_size", block, 32, 4096));
  if ((block & (block - 1)) != 0)
    return FieldError(
        r.Path("group_size"),
        absl::StrCat("the absmax block must be a power of two from 32 to 4096, got ", block));
  bool double_quant = true;
  SQ_RETURN_IF_ERROR(r.Bool("double_quant", double_quant));
  std::string format = "bitsandbytes";
  SQ_RETURN_IF_ERROR(r.Choice("format", format, {"bitsandbytes"}));
  out.set_method(method == "nf4" ? v1::QuantizeStage::NF4 : v1::QuantizeStage::FP4);
  out.set_bits(4);
  out.set_group_size(block);
  out.set_double_quant(double_quant);
  out.set_format(v1::QuantizeStage::FORMAT_BITSANDBYTES);
  return absl::OkStatus();
}

absl::Status ParseQuantize(MapReader& r, v1::QuantizeStage& out) {
  std::string method = "rtn";
  SQ_RETURN_IF_ERROR(r.Choice("method", method, {"rtn", "gptq", "awq", "nf4", "fp4"}));
  if (method == "nf4" || method == "fp4") return ParseFloat4Quantize(r, method, out);
  if (r.Get("double_quant")) return FieldError(r.Path("double_quant"), "is an nf4 / fp4 setting");
  // W8A8: int8 inputs too. Its weights are 8-bit, symmetric, per output channel (what INT8 GEMM
  // kernels take), so those are its defaults and other values are refused.
  std::string activations = "none";
  SQ_RETURN_IF_ERROR(r.Choice("activations", activations, {"none", "dynamic", "static"}));
  const bool w8a8 = activations != "none";
  if (w8a8 && method == "awq")
    return FieldError(r.Path("activations"),
                      "method awq quantizes weights only; use rtn or gptq for W8A8");
  int64_t bits = w8a8 ? 8 : 4, group_size = w8a8 ? -1 : 128;
  // Symmetric by default in the GPTQ layout: vLLM's fastest GPTQ kernels (Marlin) take
  // symmetric 4- and 8-bit codes only. AWQ keeps zero points, which its kernels take.
  bool sym = w8a8 || method != "awq";
  if (YAML::Node b = r.Get("bits")) {
    int64_t v;
    if (!b.IsScalar() || !YAML::convert<int64_t>::decode(b, v) ||
        (v != 2 && v != 3 && v != 4 && v != 8)) {
      return FieldError(r.Path("bits"),
                        absl::StrCat("must be one of 2, 3, 4, 8, got ", b.Scalar()));
    }
    bits = v;
  }
  SQ_RETURN_IF_ERROR(r.Int("group_size", group_size, -1, 1 << 20));
  if (group_size == 0) return FieldError(r.Path("group_size"), "must be -1 or positive");
  SQ_RETURN_IF_ERROR(r.Bool("sym", sym));
  if (w8a8) {
    const std::string why = absl::StrCat("activations ", activations, " needs ");
    if (bits != 8) return FieldError(r.Path("bits"), why + "8-bit weights");
    if (group_size != -1)
      return FieldError(r.Path("group_size"), why + "one scale per output channel (-1)");
    if (!sym) return FieldError(r.Path("sym"), why + "symmetric weights");
  }
  // Joint sparsity and quantization: SparseGPT prunes in GPTQ's pass.
  v1::PruneTarget joint_prune;
  const bool has_prune = static_cast<bool>(r.Get("prune"));
  if (has_prune) {
    const std::string path = r.Path("prune");
    if (method != "gptq")
      return FieldError(
          path, absl::StrCat("prunes in GPTQ's pass (SparseGPT); method ", method, " has none"));
    if (w8a8) return FieldError(path, "is not combined with activations yet");
    MapReader pr(r.Get("prune"), path);
    SQ_RETURN_IF_ERROR(pr.CheckIsMap());
    std::string prune_method = "sparsegpt", pattern = "unstructured";
    double sparsity = 0.5;
    SQ_RETURN_IF_ERROR(pr.Choice("method", prune_method, {"sparsegpt"}));
    SQ_RETURN_IF_ERROR(pr.Choice("pattern", pattern, {"unstructured", "2:4", "4:8"}));
    SQ_RETURN_IF_ERROR(pr.Double("sparsity", sparsity, 0.0, 1.0));
    if (!(sparsity > 0 && sparsity < 1))
      return FieldError(pr.Path("sparsity"), absl::StrCat("must be in (0, 1), got ", sparsity));
    if (pattern != "unstructured" && sparsity != 0.5)
      return FieldError(pr.Path("sparsity"), absl::StrCat("the ", pattern,
                                                          " pattern is 0.5 sparse; set 0.5 or "
                                                          "omit it"));
    SQ_RETURN_IF_ERROR(pr.NoUnknownFields());
    joint_prune.set_method(v1::PruneTarget::SPARSEGPT);
    joint_prune.set_pattern(pattern == "2:4"   ? v1::PruneTarget::TWO_FOUR
                            : pattern == "4:8" ? v1::PruneTarget::FOUR_EIGHT
                                               : v1::PruneTarget::UNSTRUCTURED);
    joint_prune.set_sparsity(sparsity);
  }
  // Mixed precision: a width per linear from `bits`, by sensitivity, within one budget.
  v1::MixedPrecision mixed;
  const bool has_mixed = static_cast<bool>(r.Get("mixed_precision"));
  if (has_mixed) {
    SQ_RETURN_IF_ERROR(ParseMixedPrecision(r, method, w8a8, mixed));
  }
  double smoothquant_alpha = -1.0;
  if (r.Get("smoothquant_alpha")) {
    if (!w8a8)
      return FieldError(r.Path("smoothquant_alpha"),
                        "smooths activations for their quantization; set activations: dynamic or "
                        "static");
    SQ_RETURN_IF_ERROR(r.Double("smoothquant_alpha", smoothquant_alpha, 0.0, 1.0));
  }
  out.set_method(method == "gptq"  ? v1::QuantizeStage::GPTQ
                 : method == "awq" ? v1::QuantizeStage::AWQ
                                   : v1::QuantizeStage::RTN);
  out.set_bits(static_cast<int32_t>(bits));
  out.set_group_size(group_size);
  out.set_sym(sym);
  // GPTQ's settings are recipe fields of method gptq only, but every quantize stage carries
  // them filled, so that no reader needs a default of its own.
  bool act_order = false, static_groups = false;
  double damp = 0.01;
  int64_t block_size = 128;
  // Static input scales and SmoothQuant read calibration windows whatever the weights' method.
  // Mixed precision measures each linear against its inputs' Hessian.
  const bool needs_calibration =
      method != "rtn" || activations == "static" || smoothquant_alpha >= 0.0 || has_mixed;
  if (method == "gptq") {
    SQ_RETURN_IF_ERROR(r.Bool("act_order", act_order));
    SQ_RETURN_IF_ERROR(r.Bool("static_groups", static_groups));
    if (static_groups && !act_order)
      return FieldError(r.Path("static_groups"), "needs act_order: true");
    SQ_RETURN_IF_ERROR(r.Double("damp", damp, 1e-6, 0.999));
    SQ_RETURN_IF_ERROR(r.Int("block_size", block_size, 1, 1 << 16));
    SQ_RETURN_IF_ERROR(ParseCalibrationSample(r, "calibration_samples", "calibration_seq_len",
                                              *out.mutable_calibration()));
  }
  // AWQ's searches; like GPTQ's fields they are filled for every method.
  int64_t grid = 20;
  bool clip = true;
  double max_shrink = 0.5;
  if (method == "awq") {
    // AWQ keeps the input order: its groups are runs of input columns.
    for (const char* gptq_only : {"act_order", "static_groups", "damp", "block_size"}) {
      if (r.Get(gptq_only))
        return FieldError(r.Path(gptq_only), "is a gptq setting; method awq does not take it");
    }
    SQ_RETURN_IF_ERROR(r.Int("grid", grid, 1, 1000));
    SQ_RETURN_IF_ERROR(r.Bool("clip", clip));
    SQ_RETURN_IF_ERROR(r.Double("max_shrink", max_shrink, 0.0, 0.99));
  }
  if (needs_calibration && method != "gptq") {
    SQ_RETURN_IF_ERROR(ParseCalibrationSample(r, "calibration_samples", "calibration_seq_len",
                                              *out.mutable_calibration()));
  }
  // The layout: AWQ's own for 4-bit AWQ (what AutoAWQ users load), compressed-tensors for W8A8
  // (what llm-compressor users load), GPTQ's otherwise.
  std::string format = w8a8                           ? "compressed_tensors"
                       : method == "awq" && bits == 4 ? "awq_gemm"
                                                      : "gptq";
  SQ_RETURN_IF_ERROR(r.Choice("format", format, {"gptq", "awq_gemm", "compressed_tensors"}));
  if (w8a8 && format != "compressed_tensors")
    return FieldError(r.Path("format"),
                      absl::StrCat(format,
                                   " stores no activation quantization; W8A8 is written as "
                                   "compressed_tensors"));
  if (format == "compressed_tensors" && (bits != 8 || group_size != -1 || !sym))
    return FieldError(r.Path("format"),
                      "compressed_tensors holds symmetric 8-bit weights per output channel (bits: "
                      "8, group_size: -1, sym: true)");
  if (format == "awq_gemm") {
    if (method != "awq")
      return FieldError(
          r.Path("format"),
          absl::StrCat("awq_gemm labels the codes as AWQ's; method ", method, " writes gptq"));
    if (bits != 4)
      return FieldError(r.Path("format"), absl::StrCat("awq_gemm holds 4-bit codes only, got bits ",
                                                       bits, " (use format: gptq)"));
  }
  if (has_prune && act_order)
    return FieldError(r.Path("act_order"),
                      "SparseGPT keeps the columns in their order; prune and act_order do not mix");
  if (has_prune && has_mixed)
    return FieldError(r.Path("prune"), "is not combined with mixed_precision yet");
  if (has_prune && format != "gptq")
    return FieldError(r.Path("format"), "pruned and quantized models are written as gptq");
  if (has_prune) *out.mutable_prune() = joint_prune;
  if (has_mixed && format != "gptq")
    return FieldError(r.Path("format"),
                      absl::StrCat(format,
                                   " holds one width; mixed precision is written as gptq "
                                   "with per-module overrides"));
  if (has_mixed) *out.mutable_mixed_precision() = mixed;
  bool dense_fallback = false;
  SQ_RETURN_IF_ERROR(r.Bool("dense_fallback", dense_fallback));
  if (dense_fallback && (format != "gptq" || has_mixed))
    return FieldError(r.Path("dense_fallback"),
                      "applies to the gptq layout with one width; other layouts refuse shapes "
                      "they cannot hold");
  out.set_dense_fallback(dense_fallback);
  out.set_format(format == "awq_gemm"             ? v1::QuantizeStage::FORMAT_AWQ_GEMM
                 : format == "compressed_tensors" ? v1::QuantizeStage::FORMAT_COMPRESSED_TENSORS
                                                  : v1::QuantizeStage::FORMAT_GPTQ);
  v1::ActivationQuantization& act = *out.mutable_activations();
  act.set_mode(activations == "dynamic"  ? v1::ActivationQuantization::DYNAMIC_PER_TOKEN
               : activations == "static" ? v1::ActivationQuantization::STATIC_PER_TENSOR
                                         : v1::ActivationQuantization::NONE);
  if (smoothquant_alpha >= 0.0) act.set_smoothquant_alpha(smoothquant_alpha);
  out.mutable_awq()->set_grid(static_cast<int32_t>(grid));
  out.mutable_awq()->set_clip(clip);
  out.mutable_awq()->set_max_shrink(max_shrink);
  out.set_act_order(act_order);
  out.set_static_groups(static_groups);
  out.set_damp(damp);
  out.set_block_size(block_size);
  return absl::OkStatus();
}

// What a prune pass aims at: method, pattern and sparsity (the prune stage and a distill stage's
// prune option). `channels` and `heads` remove whole MLP channels or attention heads, which
// changes the model's shape, so only a prune stage offers them.
absl::Status ParsePruneTarget(MapReader& r, v1::PruneTarget& out, bool allow_structured) {
  std::string method = "wanda", pattern = "unstructured";
  double sparsity = 0.5;
  SQ_RETURN_IF_ERROR(r.Choice("method", method, {"magnitude", "wanda", "sparsegpt"}));
  SQ_RETURN_IF_ERROR(
      r.Choice("pattern", pattern, {"unstructured", "2:4", "4:8", "channels", "heads"}));
  if (method == "sparsegpt" && (pattern == "channels" || pattern == "heads"))
    return FieldError(
        r.Path("pattern"),
        absl::StrCat("sparsegpt zeros single weights (unstructured, 2:4, 4:8), not ", pattern));
  if ((pattern == "channels" || pattern == "heads") && !allow_structured)
    return FieldError(r.Path("pattern"),
                      absl::StrCat(pattern,
                                   " changes the model's shape, so it cannot be held by masks "
                                   "while training; use a prune stage, then a distill stage with "
                                   "teacher: original"));
  SQ_RETURN_IF_ERROR(r.Double("sparsity", sparsity, 0.0, 1.0));
  if (!(sparsity > 0 && sparsity < 1))
    return FieldError(r.Path("sparsity"), absl::StrCat("must be in (0, 1), got ", sparsity));
  if ((pattern == "2:4" || pattern == "4:8") && sparsity != 0.5)
    return FieldError(r.Path("sparsity"),
                      absl::StrCat("the ", pattern, " pattern is 0.5 sparse; set 0.5 or omit it"));
  if (pattern == "4:8" && method != "sparsegpt")
    return FieldError(r.Path("pattern"), "4:8 is pruned by method sparsegpt only");
  out.set_method(method == "magnitude"   ? v1::PruneTarget::MAGNITUDE
                 : method == "sparsegpt" ? v1::PruneTarget::SPARSEGPT
                                         : v1::PruneTarget::WANDA);
  out.set_pattern(pattern == "2:4"        ? v1::PruneTarget::TWO_FOUR
                  : pattern == "4:8"      ? v1::PruneTarget::FOUR_EIGHT
                  : pattern == "channels" ? v1::PruneTarget::CHANNELS
                  : pattern == "heads"    ? v1::PruneTarget::HEADS
                                          : v1::PruneTarget::UNSTRUCTURED);
  out.set_sparsity(sparsity);
  return absl::OkStatus();
}

// A one-shot prune stage: its target and (Wanda) the calibration sample.
absl::Status ParsePrune(MapReader& r, v1::PruneStage& out) {
  SQ_RETURN_IF_ERROR(ParsePruneTarget(r, *out.mutable_target(), /*allow_structured=*/true));
  double damp = 0.01;
  int64_t block_size = 128;
  if (out.target().method() == v1::PruneTarget::SPARSEGPT) {
    SQ_RETURN_IF_ERROR(r.Double("damp", damp, 1e-6, 0.999));
    SQ_RETURN_IF_ERROR(r.Int("block_size", block_size, 1, 1 << 16));
  }
  out.set_damp(damp);
  out.set_block_size(block_size);
  std::string format = "dense";
  SQ_RETURN_IF_ERROR(r.Choice("format", format, {"dense", "sparse_24_bitmask"}));
  if (format == "sparse_24_bitmask" && out.target().pattern() != v1::PruneTarget::TWO_FOUR)
    return FieldError(r.Path("format"),
                      "sparse_24_bitmask holds 2:4 sparsity only (pattern: \"2:4\")");
  out.set_format(format == "sparse_24_bitmask" ? v1::PruneStage::SPARSE_24_BITMASK
                                               : v1::PruneStage::DENSE);
  return ParseCalibrationSample(r, "calibration_samples", "calibration_seq_len",
                                *out.mutable_calibration());
}

// The student of a distill stage: exactly one of keep_every, layers (teacher layers to keep) or
// config (a fresh model; unset fields are the teacher's).
absl::Status ParseStudent(MapReader& parent, v1::StudentSpec& out) {
  YAML::Node n = parent.Get("student");
  const std::string path = parent.Path("student");
  if (!n) return FieldError(path, "required (keep_every, layers or config)");
  MapReader r(n, path);
  SQ_RETURN_IF_ERROR(r.CheckIsMap());
  int kinds = 0;
  if (r.Get("keep_every")) {
    int64_t k = 2;
    SQ_RETURN_IF_ERROR(r.Int("keep_every", k, 1, 1024));
    out.set_keep_every(k);
    ++kinds;
  }
  if (YAML::Node layers = r.Get("layers")) {
    if (!layers.IsSequence() || layers.size() == 0)
      return FieldError(r.Path("layers"), "expected a non-empty list of teacher layer indices");
    for (size_t i = 0; i < layers.size(); ++i) {
      int64_t v;
      if (!layers[i].IsScalar() || !YAML::convert<int64_t>::decode(layers[i], v) || v < 0)
        return FieldError(absl::StrCat(r.Path("layers"), "[", i, "]"),
                          "expected a non-negative integer");
      out.mutable_layers()->add_index(v);
    }
    ++kinds;
  }
  if (YAML::Node c = r.Get("config")) {
    MapReader cr(c, r.Path("config"));
    SQ_RETURN_IF_ERROR(cr.CheckIsMap());
    v1::StudentSpec::Config* config = out.mutable_config();
    const std::vector<std::pair<const char*, void (v1::StudentSpec::Config::*)(int64_t)>> fields = {
        {"vocab_size", &v1::StudentSpec::Config::set_vocab_size},
        {"hidden_size", &v1::StudentSpec::Config::set_hidden_size},
        {"intermediate_size", &v1::StudentSpec::Config::set_intermediate_size},
        {"num_hidden_layers", &v1::StudentSpec::Config::set_num_hidden_layers},
        {"num_attention_heads", &v1::StudentSpec::Config::set_num_attention_heads},
        {"num_key_value_heads", &v1::StudentSpec::Config::set_num_key_value_heads},
        {"head_dim", &v1::StudentSpec::Config::set_head_dim}};
    for (const auto& [field, set] : fields) {
      if (!c[field]) continue;
      int64_t v = 0;
      SQ_RETURN_IF_ERROR(cr.Int(field, v, 1, 1 << 20));
      (config->*set)(v);
    }
    SQ_RETURN_IF_ERROR(cr.NoUnknownFields());
    ++kinds;
  }
  SQ_RETURN_IF_ERROR(r.NoUnknownFields());
  if (kinds != 1) return FieldError(path, "expected exactly one of keep_every, layers or config");
  return absl::OkStatus();
}

// Adapters on a frozen base (QLoRA-style). Whether the targets exist and the rank fits the
// model's linears is checked against the model (CheckRecipeInputs).
absl::Status ParseLora(MapReader& parent, v1::LoraOptions& out) {
  MapReader r(parent.Get("lora"), parent.Path("lora"));
  SQ_RETURN_IF_ERROR(r.CheckIsMap());
  YAML::Node targets = r.Get("targets");
  if (!targets || !targets.IsSequence() || targets.size() == 0)
    return FieldError(r.Path("targets"),
                      "expected a non-empty list of linear names (q_proj, k_proj, v_proj, o_proj, "
                      "gate_proj, up_proj, down_proj)");
  if (targets.size() > 64)
    return FieldError(r.Path("targets"), absl::StrCat("at most 64 names, got ", targets.size()));
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!targets[i].IsScalar() || targets[i].Scalar().empty())
      return FieldError(absl::StrCat(r.Path("targets"), "[", i, "]"), "expected a linear's name");
    out.add_targets(targets[i].Scalar());
  }
  int64_t rank = 8;
  double alpha = 16.0, dropout = 0.05;
  bool freeze_base = false, checkpointing = true;
  std::string loss = "kd";
  SQ_RETURN_IF_ERROR(r.Int("rank", rank, INT64_MIN, INT64_MAX));
  if (rank <= 0) return FieldError(r.Path("rank"), absl::StrCat("must be positive, got ", rank));
  SQ_RETURN_IF_ERROR(r.Double("alpha", alpha, -1e9, 1e9));
  if (!(alpha > 0))
    return FieldError(r.Path("alpha"), absl::StrCat("must be positive, got ", alpha));
  SQ_RETURN_IF_ERROR(r.Double("dropout", dropout, 0.0, 0.999));
  SQ_RETURN_IF_ERROR(r.Bool("freeze_base", freeze_base));
  SQ_RETURN_IF_ERROR(r.Bool("gradient_checkpointing", checkpointing));
  SQ_RETURN_IF_ERROR(r.Choice("loss", loss, {"kd", "ce"}));
  SQ_RETURN_IF_ERROR(r.NoUnknownFields());
  out.set_rank(rank);
  out.set_alpha(alpha);
  out.set_dropout(dropout);
  out.set_freeze_base(freeze_base);
  out.set_gradient_checkpointing(checkpointing);
  out.set_loss(loss == "ce" ? v1::LoraOptions::CE : v1::LoraOptions::KD);
  return absl::OkStatus();
}

absl::Status ParseDistill(MapReader& r, v1::DistillStage& out, int workers) {
  // With lora the stage's input model is what trains (through its adapters): there is no student
  // to cut, and the teacher is the job's model.
  const bool lora = static_cast<bool>(r.Get("lora"));
  if (lora) {
    if (r.Get("student"))
      return FieldError(
          r.Path("student"),
          "a stage with lora trains adapters on its input model; it takes no student");
    SQ_RETURN_IF_ERROR(ParseLora(r, *out.mutable_lora()));
    for (const char* field : {"prune", "keep_sparsity", "hidden_loss"}) {
      if (r.Get(field))
        return FieldError(r.Path(field),
                          "does not apply to a stage with lora (the base is frozen)");
    }
    if (r.Get("teacher_logits"))
      return FieldError(r.Path("teacher_logits"),
                        "cached teacher logits are not supported with lora yet (the teacher runs "
                        "live)");
  } else {
    SQ_RETURN_IF_ERROR(ParseStudent(r, *out.mutable_student()));
  }
  double temperature = 2.0, alpha = 0.5, lr = 1e-3, weight_decay = 0.1, grad_clip = 1.0;
  SQ_RETURN_IF_ERROR(r.Double("temperature", temperature, -1e9, 1e9));
  if (!(temperature > 0))
    return FieldError(r.Path("temperature"), absl::StrCat("must be positive, got ", temperature));
  SQ_RETURN_IF_ERROR(r.Double("alpha", alpha, 0.0, 1.0));
  int64_t steps = 200, batch_size = 16, seq_len = 256, grad_accum = 1, warmup = 20;
  int64_t eval_every = 0, eval_examples = 200, checkpoint_every = 50, seed = 0, log_every = 10;
  SQ_RETURN_IF_ERROR(r.Int("steps", steps, 1, 100000000));
  SQ_RETURN_IF_ERROR(r.Int("batch_size", batch_size, 1, 1 << 20));
  SQ_RETURN_IF_ERROR(r.Int("seq_len", seq_len, 2, 1 << 20));
  SQ_RETURN_IF_ERROR(r.Int("grad_accum", grad_accum, 1, 1 << 20));
  SQ_RETURN_IF_ERROR(r.Int("warmup_steps", warmup, 0, 100000000));
  SQ_RETURN_IF_ERROR(r.Double("lr", lr, 1e-12, 10.0));
  SQ_RETURN_IF_ERROR(r.Double("weight_decay", weight_decay, 0.0, 10.0));
  SQ_RETURN_IF_ERROR(r.Double("grad_clip", grad_clip, 0.0, 1e9));
  SQ_RETURN_IF_ERROR(r.Int("eval_every", eval_every, 0, 100000000));
  SQ_RETURN_IF_ERROR(r.Int("eval_examples", eval_examples, 0, 1 << 30));
  SQ_RETURN_IF_ERROR(r.Int("checkpoint_every", checkpoint_every, 0, 100000000));
  SQ_RETURN_IF_ERROR(r.Int("log_every", log_every, 1, 100000000));
  SQ_RETURN_IF_ERROR(r.Int("seed", seed, 0, INT64_MAX));
  if (batch_size % (grad_accum * workers) != 0) {
    return FieldError(r.Path("batch_size"),
                      absl::StrCat(batch_size, " sequences cannot be split into ", grad_accum,
                                   " micro-batches over ", workers,
                                   " workers (must be a multiple of grad_accum x workers = ",
                                   grad_accum * workers, ")"));
  }
  bool keep_sparsity = false;
  SQ_RETURN_IF_ERROR(r.Bool("keep_sparsity", keep_sparsity));
  // input: the stage's input model teaches a student cut from it. original: the job's model
  // teaches a student cut from the stage's input (recovering a pruned model, say).
  std::string teacher = lora ? "original" : "input";
  SQ_RETURN_IF_ERROR(r.Choice("teacher", teacher, {"input", "original"}));
  if (lora && teacher == "input" && out.lora().loss() == v1::LoraOptions::KD)
    return FieldError(r.Path("teacher"),
                      "with lora the input model is the frozen base; it cannot teach itself "
                      "(use teacher: original, or lora.loss: ce)");
  out.set_teacher(teacher == "original" ? v1::DistillStage::ORIGINAL : v1::DistillStage::INPUT);
  int64_t patience = 0;
  double min_delta = 0.0;
  if (YAML::Node es = r.Get("early_stopping")) {
    MapReader er(es, r.Path("early_stopping"));
    SQ_RETURN_IF_ERROR(er.CheckIsMap());
    patience = 3;
    SQ_RETURN_IF_ERROR(er.Int("patience", patience, 1, 1 << 20));
    SQ_RETURN_IF_ERROR(er.Double("min_delta", min_delta, 0.0, 1e9));
    SQ_RETURN_IF_ERROR(er.NoUnknownFields());
    if (eval_every == 0)
      return FieldError(r.Path("early_stopping"), "needs eval_every > 0 (it watches evaluations)");
  }
  if (YAML::Node h = r.Get("hidden_loss")) {
    MapReader hr(h, r.Path("hidden_loss"));
    SQ_RETURN_IF_ERROR(hr.CheckIsMap());
    std::string type = "mse";
    double weight = 1.0;
    bool projection = false;
    SQ_RETURN_IF_ERROR(hr.Choice("type", type, {"mse", "cosine"}));
    SQ_RETURN_IF_ERROR(hr.Double("weight", weight, 0.0, 1e6));
    SQ_RETURN_IF_ERROR(hr.Bool("projection", projection));
    YAML::Node layers = hr.Get("layers");
    if (!layers || !layers.IsSequence() || layers.size() == 0)
      return FieldError(hr.Path("layers"),
                        "expected a list of [student layer, teacher layer] pairs");
    v1::HiddenLoss* loss = out.mutable_hidden_loss();
    for (size_t i = 0; i < layers.size(); ++i) {
      int64_t a, b;
      if (!layers[i].IsSequence() || layers[i].size() != 2 ||
          !YAML::convert<int64_t>::decode(layers[i][0], a) ||
          !YAML::convert<int64_t>::decode(layers[i][1], b) || a < 0 || b < 0)
        return FieldError(absl::StrCat(hr.Path("layers"), "[", i, "]"),
                          "expected [student layer, teacher layer]");
      v1::HiddenLoss::LayerPair* pair = loss->add_layers();
      pair->set_student(a);
      pair->set_teacher(b);
    }
    SQ_RETURN_IF_ERROR(hr.NoUnknownFields());
    loss->set_type(type == "cosine" ? v1::HiddenLoss::COSINE : v1::HiddenLoss::MSE);
    loss->set_weight(weight);
    loss->set_projection(projection);
  }
  // Iterative pruning with recovery: `rounds` times, prune to the next fraction of `sparsity`,
  // then train `recover_steps` with the pruned weights held at zero.
  if (YAML::Node pn = r.Get("prune")) {
    MapReader pr(pn, r.Path("prune"));
    SQ_RETURN_IF_ERROR(pr.CheckIsMap());
    v1::PruneSchedule* schedule = out.mutable_prune();
    SQ_RETURN_IF_ERROR(
        ParsePruneTarget(pr, *schedule->mutable_target(), /*allow_structured=*/false));
    int64_t rounds = 1, calibration_batches = 4;
    SQ_RETURN_IF_ERROR(pr.Int("rounds", rounds, 1, 1000));
    int64_t recover_steps = std::max<int64_t>(1, steps / rounds);
    SQ_RETURN_IF_ERROR(pr.Int("recover_steps", recover_steps, 1, 100000000));
    SQ_RETURN_IF_ERROR(pr.Int("calibration_batches", calibration_batches, 1, 1 << 16));
    SQ_RETURN_IF_ERROR(pr.NoUnknownFields());
    if ((schedule->target().pattern() == v1::PruneTarget::TWO_FOUR ||
         schedule->target().pattern() == v1::PruneTarget::FOUR_EIGHT) &&
        rounds != 1)
      return FieldError(pr.Path("rounds"), "an n:m pattern is reached in one round; set 1");
    if (rounds * recover_steps > steps) {
      return FieldError(
          pr.Path("recover_steps"),
          absl::StrCat(rounds, " rounds x ", recover_steps, " steps = ", rounds * recover_steps,
                       " exceeds the stage's ", steps, " steps"));
    }
    schedule->set_rounds(rounds);
    schedule->set_recover_steps(recover_steps);
    schedule->set_calibration_batches(calibration_batches);
  }
  if (YAML::Node tl = r.Get("teacher_logits")) {
    MapReader tr(tl, r.Path("teacher_logits"));
    SQ_RETURN_IF_ERROR(tr.CheckIsMap());
    int64_t top_k = 64;
    SQ_RETURN_IF_ERROR(tr.Int("top_k", top_k, 1, 1 << 20));
    SQ_RETURN_IF_ERROR(tr.NoUnknownFields());
    if (out.has_hidden_loss()) {
      return FieldError(r.Path("teacher_logits"),
                        "cached logits cannot feed hidden_loss, which needs the live teacher");
    }
    out.set_teacher_logits_top_k(top_k);
  }
  out.set_temperature(temperature);
  out.set_alpha(alpha);
  out.set_steps(steps);
  out.set_batch_size(batch_size);
  out.set_seq_len(seq_len);
  out.set_grad_accum(grad_accum);
  out.set_warmup_steps(warmup);
  out.set_lr(lr);
  out.set_weight_decay(weight_decay);
  out.set_grad_clip(grad_clip);
  out.set_eval_every(eval_every);
  out.set_eval_examples(eval_examples);
  out.set_checkpoint_every(checkpoint_every);
  out.set_log_every(log_every);
  out.set_seed(static_cast<uint64_t>(seed));
  out.set_keep_sparsity(keep_sparsity);
  out.set_early_stopping_patience(patience);
  out.set_early_stopping_min_delta(min_delta);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> LocalPathOf(absl::string_view uri, absl::string_view field) {
  if (uri.empty()) return FieldError(std::string(field), "required");
  if (absl::string_view(uri).substr(0, 7) == "file://") return std::string(uri.substr(7));
  if (uri.find("://") != absl::string_view::npos) {
    return FieldError(
        std::string(field),
        absl::StrCat("\"", uri, "\": only file:// URIs and paths are supported here"));
  }
  return std::string(uri);
}

absl::StatusOr<Recipe> ParseRecipe(absl::string_view text, const RecipeLimits& limits) {
  if (static_cast<int64_t>(text.size()) > limits.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("recipe: ", text.size(),
                                                   " bytes, more than the limit of ",
                                                   limits.max_bytes, " (--max-recipe-bytes)"));
  }
  if (const size_t bad = InvalidUtf8At(text); bad != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("recipe: not valid UTF-8 (byte ", bad, " of ", text.size(), ")"));
  }
  if (auto s = CheckRecipeShape(text); !s.ok()) return s;
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    const std::string what = e.what();
    return absl::InvalidArgumentError(
        absl::StrCat("recipe: not valid YAML: ", what.empty() ? "unreadable input" : what));
  }
  MapReader top(root, "");
  if (!root.IsMap())
    return absl::InvalidArgumentError("recipe: expected a mapping at the top level");
  Recipe recipe;
  SQ_RETURN_IF_ERROR(top.String("model", recipe.model, /*required=*/true));
  int64_t max_attempts = 3;
  SQ_RETURN_IF_ERROR(top.Int("max_attempts", max_attempts, 1, 100));
  recipe.max_attempts = static_cast<int>(max_attempts);

  if (YAML::Node d = top.Get("data")) {
    MapReader data(d, "data");
    SQ_RETURN_IF_ERROR(data.CheckIsMap());
    SQ_RETURN_IF_ERROR(data.String("calibration", recipe.calibration));
    SQ_RETURN_IF_ERROR(data.String("train", recipe.train));
    // A path or a list of paths.
    auto paths = [&](const std::string& key, std::vector<std::string>& out) -> absl::Status {
      YAML::Node e = data.Get(key);
      if (!e) return absl::OkStatus();
      if (e.IsScalar()) {
        out.push_back(e.Scalar());
        return absl::OkStatus();
      }
      if (!e.IsSequence()) return FieldError("data." + key, "expected a path or a list of paths");
      for (size_t i = 0; i < e.size(); ++i) {
        if (!e[i].IsScalar())
          return FieldError(absl::StrCat("data.", key, "[", i, "]"), "expected a string");
        out.push_back(e[i].Scalar());
      }
      return absl::OkStatus();
    };
    SQ_RETURN_IF_ERROR(paths("evaluation", recipe.evaluation));
    SQ_RETURN_IF_ERROR(paths("tasks", recipe.tasks));
    SQ_RETURN_IF_ERROR(data.NoUnknownFields());
  }

  YAML::Node stages = top.Get("stages");
  if (!stages || !stages.IsSequence() || stages.size() == 0) {
    return FieldError("stages", "expected a non-empty list of stages");
  }
  if (static_cast<int64_t>(stages.size()) > limits.max_stages) {
    return FieldError("stages", absl::StrCat(stages.size(), " stages, more than the limit of ",
                                             limits.max_stages, " (--max-stages)"));
  }
  for (size_t i = 0; i < stages.size(); ++i) {
    const std::string path = absl::StrCat("stages[", i, "]");
    const YAML::Node& s = stages[i];
    if (!s.IsMap() || s.size() != 1) {
      return FieldError(path, "expected one stage, written as {kind: {options}}");
    }
    StageSpec stage;
    stage.kind = s.begin()->first.Scalar();
    YAML::Node body = s.begin()->second;
    if (body.IsNull()) body = YAML::Node(YAML::NodeType::Map);
    MapReader r(body, absl::StrCat(path, ".", stage.kind));
    SQ_RETURN_IF_ERROR(r.CheckIsMap());
    int64_t gpus = 0, workers = 1, attempts = 0;
    SQ_RETURN_IF_ERROR(r.Int("gpus", gpus, 0, 64));
    SQ_RETURN_IF_ERROR(r.Int("workers", workers, 1, 1024));
    SQ_RETURN_IF_ERROR(r.Int("max_attempts", attempts, 1, 100));
    stage.gpus = static_cast<int>(gpus);
    stage.workers = static_cast<int>(workers);
    stage.max_attempts = static_cast<int>(attempts);
    // Per attempt; a week is longer than any stage of a 400B model should need.
    SQ_RETURN_IF_ERROR(
        r.Duration("timeout", stage.timeout_ms, 1000, int64_t{7} * 24 * 3600 * 1000));
    v1::StageOptions& options = stage.options;
    if (stage.kind == "evaluate") {
      SQ_RETURN_IF_ERROR(ParseEvaluate(r, *options.mutable_evaluate()));
      if (recipe.evaluation.empty()) {
        return FieldError("data.evaluation", absl::StrCat("required by ", path, ".evaluate"));
      }
      if (options.evaluate().gate().has_min_accuracy_retention() && recipe.tasks.empty()) {
        return FieldError("data.tasks", absl::StrCat("required by ", path,
                                                     ".evaluate.gate.min_accuracy_retention"));
      }
    } else if (stage.kind == "quantize") {
      SQ_RETURN_IF_ERROR(ParseQuantize(r, *options.mutable_quantize()));
      const v1::QuantizeStage& q = options.quantize();
      const v1::QuantizeStage::Method method = q.method();
      if ((method == v1::QuantizeStage::GPTQ || method == v1::QuantizeStage::AWQ) &&
          recipe.calibration.empty()) {
        return FieldError("data.calibration",
                          absl::StrCat("required by ", path, ".quantize (method ",
                                       method == v1::QuantizeStage::GPTQ ? "gptq" : "awq", ")"));
      }
      if (recipe.calibration.empty() &&
          q.activations().mode() == v1::ActivationQuantization::STATIC_PER_TENSOR) {
        return FieldError("data.calibration",
                          absl::StrCat("required by ", path,
                                       ".quantize (activations static: the input scales are "
                                       "calibrated)"));
      }
      if (recipe.calibration.empty() && q.has_mixed_precision()) {
        return FieldError("data.calibration",
                          absl::StrCat("required by ", path,
                                       ".quantize (mixed_precision: sensitivities are measured on "
                                       "the calibration inputs)"));
      }
      if (recipe.calibration.empty() && q.activations().has_smoothquant_alpha()) {
        return FieldError("data.calibration",
                          absl::StrCat("required by ", path, ".quantize (smoothquant_alpha)"));
      }
    } else if (stage.kind == "calibrate") {
      SQ_RETURN_IF_ERROR(ParseCalibrationSample(r, "samples", "seq_len",
                                                *options.mutable_calibrate()->mutable_sample()));
      if (recipe.calibration.empty()) {
        return FieldError("data.calibration", absl::StrCat("required by ", path, ".calibrate"));
      }
    } else if (stage.kind == "distill") {
      SQ_RETURN_IF_ERROR(ParseDistill(r, *options.mutable_distill(), stage.workers));
      if (recipe.train.empty()) {
        return FieldError("data.train", absl::StrCat("required by ", path, ".distill"));
      }
      if (options.distill().eval_every() > 0 && recipe.evaluation.empty()) {
        return FieldError("data.evaluation",
                          absl::StrCat("required by ", path, ".distill.eval_every"));
      }
    } else if (stage.kind == "prune") {
      SQ_RETURN_IF_ERROR(ParsePrune(r, *options.mutable_prune()));
      const v1::PruneTarget::Method method = options.prune().target().method();
      if ((method == v1::PruneTarget::WANDA || method == v1::PruneTarget::SPARSEGPT) &&
          recipe.calibration.empty()) {
        return FieldError(
            "data.calibration",
            absl::StrCat("required by ", path, ".prune (method ",
                         method == v1::PruneTarget::WANDA ? "wanda" : "sparsegpt", ")"));
      }
    } else {
      return FieldError(
          path, absl::StrCat("unknown stage \"", stage.kind,
                             "\" (expected evaluate, quantize, distill, prune or calibrate)"));
    }
    SQ_RETURN_IF_ERROR(r.NoUnknownFields());
    recipe.stages.push_back(std::move(stage));
  }
  SQ_RETURN_IF_ERROR(top.NoUnknownFields());
  return recipe;
}

namespace {

// Applies `rewrite(field, value)` to the model (when `model` is set) and to every data file field
// of the recipe, and emits the YAML again.
absl::StatusOr<std::string> RewriteRecipeFields(
    absl::string_view text, bool model,
    const std::function<absl::StatusOr<std::string>(const std::string&, const std::string&)>&
        rewrite) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("recipe: not valid YAML: ", e.what()));
  }
  if (!root.IsMap())
    return absl::InvalidArgumentError("recipe: expected a mapping at the top level");
  auto apply = [&](YAML::Node node, const std::string& field) -> absl::Status {
    if (!node || !node.IsScalar() || node.Scalar().empty()) return absl::OkStatus();
    auto value = rewrite(field, node.Scalar());
    if (!value.ok()) return value.status();
    node = *value;
    return absl::OkStatus();
  };
  if (model) SQ_RETURN_IF_ERROR(apply(root["model"], "model"));
  if (YAML::Node data = root["data"]; data && data.IsMap()) {
    SQ_RETURN_IF_ERROR(apply(data["calibration"], "data.calibration"));
    SQ_RETURN_IF_ERROR(apply(data["train"], "data.train"));
    for (const std::string key : {"evaluation", "tasks"}) {
      YAML::Node e = data[key];
      if (!e) continue;
      if (e.IsSequence()) {
        for (size_t i = 0; i < e.size(); ++i)
          SQ_RETURN_IF_ERROR(apply(e[i], absl::StrCat("data.", key, "[", i, "]")));
      } else {
        SQ_RETURN_IF_ERROR(apply(e, "data." + key));
      }
    }
  }
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

}  // namespace

absl::StatusOr<std::string> ResolveRecipePaths(absl::string_view text,
                                               const std::string& base_dir) {
  return RewriteRecipeFields(
      text, /*model=*/true,
      [&](const std::string&, const std::string& v) -> absl::StatusOr<std::string> {
        if (v.find("://") != std::string::npos || v[0] == '/') return v;
        return (std::filesystem::absolute(base_dir) / v).lexically_normal().string();
      });
}

absl::StatusOr<std::string> RewriteRecipeData(absl::string_view text, const DataRewrite& rewrite) {
  return RewriteRecipeFields(text, /*model=*/true, rewrite);
}

namespace {

// Every tensor config.json implies exists with the shape it implies, read from the checkpoint's
// headers alone: a config that would make a worker allocate shapes the weights do not have (or
// index layers they do not hold) is refused at submit. GPTQ checkpoints hold their linear layers
// packed (name.qweight), checked for presence only.
absl::Status CheckTensorsMatchConfig(
    const LlamaConfig& config, const std::function<const TensorInfo*(const std::string&)>& find) {
  const json extra = json::parse(config.extra_json, nullptr, false);
  const bool packed = extra.is_object() && extra.contains("quantization_config");
  auto shape_string = [](const std::vector<int64_t>& shape) {
    return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
  };
  for (const auto& [name, shape] : CheckpointTensorShapes(config)) {
    const TensorInfo* info = find(name);
    if (info == nullptr && packed && absl::EndsWith(name, ".weight") &&
        find(name.substr(0, name.size() - 7) + ".qweight") != nullptr) {
      continue;
    }
    if (info == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("model: config.json implies tensor \"", name,
                       "\", which the checkpoint does not have (does config.json belong to "
                       "these weights?)"));
    }
    if (info->shape != shape) {
      return absl::InvalidArgumentError(
          absl::StrCat("model: tensor \"", name, "\" has shape ", shape_string(info->shape),
                       " but config.json implies ", shape_string(shape)));
    }
  }
  return absl::OkStatus();
}

// A model in the store (an S3 prefix, or an artifact written by `squeezectl store-put` on either
// backend) is checked without downloading it: config.json, and each safetensors header read by
// range and validated against the file's size.
absl::StatusOr<LlamaConfig> CheckStoredModel(const std::string& uri) {
  auto store = OpenArtifactStore(uri.rfind("s3://", 0) == 0 ? uri.substr(0, uri.find('/', 5))
                                                            : std::string("file://"));
  if (!store.ok())
    return absl::Status(store.status().code(), absl::StrCat("model: ", store.status().message()));
  auto model_error = [&](const absl::Status& s) {
    return absl::Status(
        s.code() == absl::StatusCode::kNotFound ? s.code() : absl::StatusCode::kInvalidArgument,
        absl::StrCat("model: ", s.message()));
  };
  auto text = (*store)->ReadArtifactRange(uri, "config.json", 0, -1, nullptr);
  if (!text.ok()) return model_error(text.status());
  auto config = ParseLlamaConfig(*text, uri + "/config.json");
  if (!config.ok()) return model_error(config.status());
  // Every shard's header, read by range and validated against the shard's size.
  auto tensors = ArtifactTensorReader::Open(**store, uri);
  if (!tensors.ok()) return model_error(tensors.status());
  if (auto s = CheckTensorsMatchConfig(*config,
                                       [&](const std::string& name) -> const TensorInfo* {
                                         auto it = (*tensors)->tensors().find(name);
                                         return it == (*tensors)->tensors().end()
                                                    ? nullptr
                                                    : &it->second.info;
                                       });
      !s.ok())
    return s;
  // Its tokenizer.json, when it has one, read whole (a few MB) and loaded as a worker would.
  auto files = (*store)->Files(uri);
  if (!files.ok()) return model_error(files.status());
  for (const StoredFile& f : *files) {
    if (f.name == "tokenizer.json" && f.size > kMaxTokenizerJsonBytes) {
      return model_error(absl::InvalidArgumentError(absl::StrCat(uri, "/tokenizer.json: ", f.size,
                                                                 " bytes, more than the limit of ",
                                                                 kMaxTokenizerJsonBytes)));
    }
  }
  auto tokenizer_json = (*store)->ReadArtifactRange(uri, "tokenizer.json", 0, -1, nullptr);
  if (tokenizer_json.ok()) {
    const std::string tmp = (std::filesystem::temp_directory_path() /
                             absl::StrCat("squeeze-submit-tokenizer-", ::getpid(), "-",
                                          std::hash<std::string>()(uri), ".json"))
                                .string();
    std::ofstream(tmp, std::ios::binary) << *tokenizer_json;
    auto tokenizer = LoadHfTokenizer(tmp);
    std::remove(tmp.c_str());
    if (!tokenizer.ok())
      return model_error(absl::InvalidArgumentError(
          absl::StrReplaceAll(tokenizer.status().message(), {{tmp, uri + "/tokenizer.json"}})));
  } else if (tokenizer_json.status().code() != absl::StatusCode::kNotFound) {
    return model_error(tokenizer_json.status());
  }
  return config;
}

}  // namespace

LlamaConfig DistillStudentConfig(const v1::StudentSpec& student, const LlamaConfig& teacher) {
  LlamaConfig out = teacher;
  switch (student.kind_case()) {
    case v1::StudentSpec::kKeepEvery: {
      const int64_t k = std::max<int64_t>(1, student.keep_every());
      std::vector<int64_t> kept;
      for (int64_t i = 0; i < teacher.num_hidden_layers; i += k) kept.push_back(i);
      out = KeepLayers(teacher, kept);
      break;
    }
    case v1::StudentSpec::kLayers:
      out = KeepLayers(teacher, {student.layers().index().begin(), student.layers().index().end()});
      break;
    case v1::StudentSpec::kConfig: {
      const v1::StudentSpec::Config& c = student.config();
      out.vocab_size = c.has_vocab_size() ? c.vocab_size() : teacher.vocab_size;
      out.hidden_size = c.has_hidden_size() ? c.hidden_size() : teacher.hidden_size;
      out.intermediate_size =
          c.has_intermediate_size() ? c.intermediate_size() : teacher.intermediate_size;
      out = WithLayerCount(
          out, c.has_num_hidden_layers() ? c.num_hidden_layers() : teacher.num_hidden_layers);
      out.num_attention_heads =
          c.has_num_attention_heads() ? c.num_attention_heads() : teacher.num_attention_heads;
      out.num_key_value_heads =
          c.has_num_key_value_heads() ? c.num_key_value_heads() : out.num_attention_heads;
      out.head_dim = c.has_head_dim() ? c.head_dim() : out.hidden_size / out.num_attention_heads;
      break;
    }
    case v1::StudentSpec::KIND_NOT_SET:
      break;
  }
  return out;
}

std::string StageKind(const v1::StageOptions& options) {
  switch (options.stage_case()) {
    case v1::StageOptions::kEvaluate:
      return "evaluate";
    case v1::StageOptions::kCalibrate:
      return "calibrate";
    case v1::StageOptions::kQuantize:
      return "quantize";
    case v1::StageOptions::kPrune:
      return "prune";
    case v1::StageOptions::kDistill:
      return "distill";
    case v1::StageOptions::STAGE_NOT_SET:
      break;
  }
  return "";
}

namespace {

// The student's config, or an error naming the field whose value cannot work with `teacher`.
absl::StatusOr<LlamaConfig> CheckDistillStage(const v1::DistillStage& opts,
                                              const LlamaConfig& teacher, const std::string& path) {
  if (opts.has_lora()) {
    LoraOptions lora;
    lora.targets.assign(opts.lora().targets().begin(), opts.lora().targets().end());
    lora.rank = opts.lora().rank();
    lora.alpha = opts.lora().alpha();
    lora.dropout = opts.lora().dropout();
    if (auto s = ValidateLoraOptions(lora, teacher, path + ".lora"); !s.ok()) return s;
  }
  const v1::StudentSpec& student = opts.student();
  const LlamaConfig out = DistillStudentConfig(student, teacher);
  for (const int64_t l : student.layers().index()) {
    if (l >= teacher.num_hidden_layers) {
      return FieldError(path + ".student.layers",
                        absl::StrCat("teacher layer ", l, " does not exist (the teacher has ",
                                     teacher.num_hidden_layers, ")"));
    }
  }
  if (student.has_config()) {
    if (out.vocab_size != teacher.vocab_size) {
      return FieldError(path + ".student.config.vocab_size",
                        absl::StrCat(out.vocab_size, " differs from the teacher's vocabulary of ",
                                     teacher.vocab_size, " tokens"));
    }
    if (out.num_attention_heads % out.num_key_value_heads != 0) {
      return FieldError(path + ".student.config.num_key_value_heads",
                        "must divide num_attention_heads");
    }
  }
  if (opts.has_hidden_loss()) {
    const v1::HiddenLoss& h = opts.hidden_loss();
    for (const v1::HiddenLoss::LayerPair& pair : h.layers()) {
      if (pair.student() >= out.num_hidden_layers || pair.teacher() >= teacher.num_hidden_layers) {
        return FieldError(path + ".hidden_loss.layers",
                          absl::StrCat("[", pair.student(), ", ", pair.teacher(),
                                       "]: the student has ", out.num_hidden_layers,
                                       " layers and the teacher ", teacher.num_hidden_layers));
      }
    }
    if (out.hidden_size != teacher.hidden_size && !h.projection()) {
      return FieldError(path + ".hidden_loss.projection",
                        absl::StrCat("the student is ", out.hidden_size, " wide and the teacher ",
                                     teacher.hidden_size,
                                     "; set projection: true to compare their hidden states"));
    }
  }
  if (opts.teacher_logits_top_k() > teacher.vocab_size) {
    return FieldError(
        path + ".teacher_logits.top_k",
        absl::StrCat("exceeds the teacher's vocabulary of ", teacher.vocab_size, " tokens"));
  }
  if (opts.seq_len() > teacher.max_position_embeddings) {
    return FieldError(path + ".seq_len", absl::StrCat("exceeds the teacher's context of ",
                                                      teacher.max_position_embeddings, " tokens"));
  }
  return out;
}

}  // namespace

absl::Status CheckRecipeInputs(const Recipe& recipe) {
  namespace fs = std::filesystem;
  std::optional<LlamaConfig> config;
  if (recipe.model.rfind("s3://", 0) == 0) {
    auto remote = CheckStoredModel(recipe.model);
    if (!remote.ok()) return remote.status();
    config = *remote;
  } else {
    auto model = LocalPathOf(recipe.model, "model");
    if (!model.ok()) return model.status();
    std::error_code ec;
    if (!fs::is_directory(*model, ec)) {
      return absl::NotFoundError(absl::StrCat("model: \"", *model, "\" is not a directory"));
    }
    if (fs::exists(fs::path(*model) / "manifest.json", ec)) {
      // An artifact written through the store: its files are blobs named by its manifest.
      auto stored = CheckStoredModel(*model);
      if (!stored.ok()) return stored.status();
      config = *stored;
    } else {
      auto local = LoadLlamaConfig(*model);
      if (!local.ok())
        return absl::InvalidArgumentError(absl::StrCat("model: ", local.status().message()));
      auto weights = CheckpointReader::Open(*model);
      if (!weights.ok())
        return absl::InvalidArgumentError(absl::StrCat("model: ", weights.status().message()));
      if (auto s = CheckTensorsMatchConfig(*local,
                                           [&](const std::string& name) -> const TensorInfo* {
                                             auto view = (*weights)->Get(name);
                                             return view.ok() ? view->info : nullptr;
                                           });
          !s.ok())
        return s;
      // A tokenizer.json the workers could not read (an unsupported model type, normalizer or
      // pre-tokenizer) is refused now, naming the component.
      if (fs::exists(fs::path(*model) / "tokenizer.json", ec)) {
        auto tokenizer = LoadHfTokenizer((fs::path(*model) / "tokenizer.json").string());
        if (!tokenizer.ok())
          return absl::InvalidArgumentError(absl::StrCat("model: ", tokenizer.status().message()));
      }
      config = *local;
    }
  }
  // Quantization and distillation settings that cannot fit the model's shapes are known now, not
  // in a worker later. A distill stage changes the model the later stages see.
  // Whether the model a stage gets is quantized: adapters train on a frozen quantized base, or on a
  // dense one only when asked (freeze_base).
  bool quantized = config->extra_json.find("\"quantization_config\"") != std::string::npos;
  for (size_t i = 0; i < recipe.stages.size(); ++i) {
    const v1::StageOptions& options = recipe.stages[i].options;
    if (options.has_distill()) {
      const std::string path = absl::StrCat("stages[", i, "].distill");
      auto student = CheckDistillStage(options.distill(), *config, path);
      if (!student.ok()) return student.status();
      if (options.distill().has_lora() && !quantized && !options.distill().lora().freeze_base())
        return FieldError(
            path + ".lora",
            "the stage's input model is not quantized (no quantize stage before it, and the "
            "model has no quantization_config): quantize it first (nf4, gptq), or set "
            "freeze_base: true to train adapters on the dense model");
      config = *student;
      quantized = options.distill().has_lora() && quantized;
      continue;
    }
    if (options.has_prune()) quantized = false;
    if (!options.has_quantize()) continue;
    quantized = true;
    const int64_t group = options.quantize().group_size();
    const LlamaConfig& c = *config;
    if (const v1::MixedPrecision& mixed = options.quantize().mixed_precision();
        options.quantize().has_mixed_precision() && mixed.has_max_size_bytes() &&
        mixed.bits_size() > 0) {
      const int narrowest = *std::min_element(mixed.bits().begin(), mixed.bits().end());
      const int64_t smallest = QuantizedCheckpointBytes(c, narrowest, group);
      if (mixed.max_size_bytes() < smallest)
        return FieldError(
            absl::StrCat("stages[", i, "].quantize.mixed_precision.max_size_bytes"),
            absl::StrCat(mixed.max_size_bytes(), " is below the smallest this model is stored in (",
                         smallest, " bytes, every linear at ", narrowest, " bits)"));
    }
    // The GPTQ layout's words must be filled; a shape that is not is refused now rather than
    // written dense without being asked (dense_fallback asks).
    if (options.quantize().format() == v1::QuantizeStage::FORMAT_GPTQ &&
        !options.quantize().dense_fallback()) {
      std::set<int> widths = {options.quantize().bits()};
      for (int b : options.quantize().mixed_precision().bits()) widths.insert(b);
      for (int bits : widths) {
        for (const LinearShape& l : DecoderLinearShapes(c)) {
          if (auto s = CheckGptqWordPacking(l.in, l.out, bits); !s.ok())
            return FieldError(absl::StrCat("stages[", i, "].quantize"),
                              absl::StrCat(l.name, " at ", bits, " bits: ", s.message(),
                                           "; set dense_fallback: true to write this model "
                                           "dense, or pick a width that packs"));
        }
      }
    }
    if (group == -1) continue;
    for (auto [what, in] :
         {std::pair{"hidden_size", c.hidden_size},
          std::pair{"num_attention_heads * head_dim", c.num_attention_heads * c.head_dim},
          std::pair{"intermediate_size", c.intermediate_size}}) {
      if (in % group != 0) {
        return FieldError(
            absl::StrCat("stages[", i, "].quantize.group_size"),
            absl::StrCat("must divide the model's ", what, " (", in, "), got ", group));
      }
    }
  }
  // Data files are local files, or files of artifacts in the store (uploaded by the client at
  // submit), read here through the store: by range on S3, never downloaded.
  auto store = OpenArtifactStore("file://");
  if (!store.ok()) return store.status();
  auto check_file = [&](const std::string& uri, const std::string& field) {
    return CheckDataFile(**store, uri, field);
  };
  if (!recipe.calibration.empty()) {
    SQ_RETURN_IF_ERROR(check_file(recipe.calibration, "data.calibration"));
  }
  if (!recipe.train.empty()) SQ_RETURN_IF_ERROR(check_file(recipe.train, "data.train"));
  for (size_t i = 0; i < recipe.evaluation.size(); ++i) {
    SQ_RETURN_IF_ERROR(check_file(recipe.evaluation[i], absl::StrCat("data.evaluation[", i, "]")));
  }
  for (size_t i = 0; i < recipe.tasks.size(); ++i) {
    SQ_RETURN_IF_ERROR(check_file(recipe.tasks[i], absl::StrCat("data.tasks[", i, "]")));
  }
  return absl::OkStatus();
}

}  // namespace squeeze
