#include "common/recipe/recipe.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/model/llama_config.h"
#include "common/store/artifact_store.h"
#include "common/store/artifact_tensor_reader.h"
#include "common/tensor/safetensors.h"

namespace squeeze {
namespace {

using json = nlohmann::json;

absl::Status FieldError(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
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

#define SQ_RETURN_IF_ERROR(expr) \
  if (auto _s = (expr); !_s.ok()) return _s

absl::Status ParseEvaluate(MapReader& r, json& opts) {
  std::vector<std::string> metrics = {"perplexity", "size", "latency"};
  if (YAML::Node m = r.Get("metrics")) {
    if (!m.IsSequence()) return FieldError(r.Path("metrics"), "expected a list");
    metrics.clear();
    for (size_t i = 0; i < m.size(); ++i) {
      const std::string path = absl::StrCat(r.Path("metrics"), "[", i, "]");
      if (!m[i].IsScalar()) return FieldError(path, "expected a string");
      const std::string v = m[i].Scalar();
      if (v != "perplexity" && v != "size" && v != "latency") {
        return FieldError(
            path, absl::StrCat("must be one of perplexity, size, latency, got \"", v, "\""));
      }
      metrics.push_back(v);
    }
  }
  opts["metrics"] = metrics;
  int64_t window = 512, stride = 256, batch = 8, max_examples = 0;
  SQ_RETURN_IF_ERROR(r.Int("window", window, 2, 1 << 20));
  SQ_RETURN_IF_ERROR(r.Int("stride", stride, 1, 1 << 20));
  SQ_RETURN_IF_ERROR(r.Int("batch_size", batch, 1, 4096));
  SQ_RETURN_IF_ERROR(r.Int("max_examples", max_examples, 0, 1 << 30));
  if (stride >= window) return FieldError(r.Path("stride"), "must be smaller than window");
  opts["window"] = window;
  opts["stride"] = stride;
  opts["batch_size"] = batch;
  opts["max_examples"] = max_examples;
  if (YAML::Node g = r.Get("gate")) {
    MapReader gate(g, r.Path("gate"));
    SQ_RETURN_IF_ERROR(gate.CheckIsMap());
    double min_retention = 0.0;
    int64_t max_size_bytes = 0;
    SQ_RETURN_IF_ERROR(gate.Double("min_retention", min_retention, 0.0, 1.0));
    SQ_RETURN_IF_ERROR(gate.Int("max_size_bytes", max_size_bytes, 1, INT64_MAX));
    SQ_RETURN_IF_ERROR(gate.NoUnknownFields());
    opts["gate"] = json::object();
    if (g["min_retention"]) opts["gate"]["min_retention"] = min_retention;
    if (g["max_size_bytes"]) opts["gate"]["max_size_bytes"] = max_size_bytes;
  }
  return absl::OkStatus();
}

absl::Status ParseQuantize(MapReader& r, json& opts) {
  std::string method = "rtn";
  SQ_RETURN_IF_ERROR(r.Choice("method", method, {"rtn", "gptq"}));
  int64_t bits = 4, group_size = 128;
  bool sym = false;
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
  opts["method"] = method;
  opts["bits"] = bits;
  opts["group_size"] = group_size;
  opts["sym"] = sym;
  if (method == "gptq") {
    bool act_order = false, static_groups = false;
    double damp = 0.01;
    int64_t block_size = 128, samples = 128, seq_len = 256, seed = 0;
    SQ_RETURN_IF_ERROR(r.Bool("act_order", act_order));
    SQ_RETURN_IF_ERROR(r.Bool("static_groups", static_groups));
    if (static_groups && !act_order)
      return FieldError(r.Path("static_groups"), "needs act_order: true");
    SQ_RETURN_IF_ERROR(r.Double("damp", damp, 1e-6, 0.999));
    SQ_RETURN_IF_ERROR(r.Int("block_size", block_size, 1, 1 << 16));
    SQ_RETURN_IF_ERROR(r.Int("calibration_samples", samples, 1, 1 << 20));
    SQ_RETURN_IF_ERROR(r.Int("calibration_seq_len", seq_len, 2, 1 << 20));
    SQ_RETURN_IF_ERROR(r.Int("seed", seed, 0, INT64_MAX));
    opts["act_order"] = act_order;
    opts["static_groups"] = static_groups;
    opts["damp"] = damp;
    opts["block_size"] = block_size;
    opts["calibration_samples"] = samples;
    opts["calibration_seq_len"] = seq_len;
    opts["seed"] = seed;
  }
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

absl::StatusOr<Recipe> ParseRecipe(absl::string_view text) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("recipe: not valid YAML: ", e.what()));
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
    if (YAML::Node e = data.Get("evaluation")) {
      if (e.IsScalar()) {
        recipe.evaluation.push_back(e.Scalar());
      } else if (e.IsSequence()) {
        for (size_t i = 0; i < e.size(); ++i) {
          if (!e[i].IsScalar())
            return FieldError(absl::StrCat("data.evaluation[", i, "]"), "expected a string");
          recipe.evaluation.push_back(e[i].Scalar());
        }
      } else {
        return FieldError("data.evaluation", "expected a path or a list of paths");
      }
    }
    SQ_RETURN_IF_ERROR(data.NoUnknownFields());
  }

  YAML::Node stages = top.Get("stages");
  if (!stages || !stages.IsSequence() || stages.size() == 0) {
    return FieldError("stages", "expected a non-empty list of stages");
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
    json opts = json::object();
    if (stage.kind == "evaluate") {
      SQ_RETURN_IF_ERROR(ParseEvaluate(r, opts));
      if (recipe.evaluation.empty()) {
        return FieldError("data.evaluation", absl::StrCat("required by ", path, ".evaluate"));
      }
    } else if (stage.kind == "quantize") {
      SQ_RETURN_IF_ERROR(ParseQuantize(r, opts));
      if (opts["method"] == "gptq" && recipe.calibration.empty()) {
        return FieldError("data.calibration",
                          absl::StrCat("required by ", path, ".quantize (method gptq)"));
      }
    } else if (stage.kind == "calibrate") {
      int64_t samples = 128, seq_len = 256, seed = 0;
      SQ_RETURN_IF_ERROR(r.Int("samples", samples, 1, 1 << 20));
      SQ_RETURN_IF_ERROR(r.Int("seq_len", seq_len, 2, 1 << 20));
      SQ_RETURN_IF_ERROR(r.Int("seed", seed, 0, INT64_MAX));
      opts["samples"] = samples;
      opts["seq_len"] = seq_len;
      opts["seed"] = seed;
      if (recipe.calibration.empty()) {
        return FieldError("data.calibration", absl::StrCat("required by ", path, ".calibrate"));
      }
    } else if (stage.kind == "distill" || stage.kind == "prune") {
      return FieldError(path, absl::StrCat("stage \"", stage.kind,
                                           "\" is not available in this version yet (available: "
                                           "calibrate, evaluate, quantize)"));
    } else {
      return FieldError(
          path, absl::StrCat("unknown stage \"", stage.kind,
                             "\" (expected evaluate, quantize, distill, prune or calibrate)"));
    }
    SQ_RETURN_IF_ERROR(r.NoUnknownFields());
    stage.options_json = opts.dump();
    recipe.stages.push_back(std::move(stage));
  }
  SQ_RETURN_IF_ERROR(top.NoUnknownFields());
  return recipe;
}

absl::StatusOr<std::string> ResolveRecipePaths(absl::string_view text,
                                               const std::string& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("recipe: not valid YAML: ", e.what()));
  }
  if (!root.IsMap())
    return absl::InvalidArgumentError("recipe: expected a mapping at the top level");
  auto resolve = [&](YAML::Node node) {
    if (!node || !node.IsScalar()) return;
    const std::string v = node.Scalar();
    if (v.empty() || v.find("://") != std::string::npos || v[0] == '/') return;
    node = (std::filesystem::absolute(base_dir) / v).lexically_normal().string();
  };
  resolve(root["model"]);
  if (YAML::Node data = root["data"]; data && data.IsMap()) {
    resolve(data["calibration"]);
    if (YAML::Node e = data["evaluation"]) {
      if (e.IsSequence()) {
        for (size_t i = 0; i < e.size(); ++i) resolve(e[i]);
      } else {
        resolve(e);
      }
    }
  }
  YAML::Emitter out;
  out << root;
  return std::string(out.c_str()) + "\n";
}

namespace {

// A model in S3 is checked without downloading it: config.json, and each safetensors header read
// by range and validated against the file's size.
absl::StatusOr<LlamaConfig> CheckRemoteModel(const std::string& uri) {
  const size_t bucket_end = uri.find('/', 5);
  auto store = OpenArtifactStore(uri.substr(0, bucket_end));
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
  return config;
}

}  // namespace

absl::Status CheckRecipeInputs(const Recipe& recipe) {
  namespace fs = std::filesystem;
  std::optional<LlamaConfig> config;
  if (recipe.model.rfind("s3://", 0) == 0) {
    auto remote = CheckRemoteModel(recipe.model);
    if (!remote.ok()) return remote.status();
    config = *remote;
  } else {
    auto model = LocalPathOf(recipe.model, "model");
    if (!model.ok()) return model.status();
    if (!fs::is_directory(*model)) {
      return absl::NotFoundError(absl::StrCat("model: \"", *model, "\" is not a directory"));
    }
    auto local = LoadLlamaConfig(*model);
    if (!local.ok())
      return absl::InvalidArgumentError(absl::StrCat("model: ", local.status().message()));
    auto weights = CheckpointReader::Open(*model);
    if (!weights.ok())
      return absl::InvalidArgumentError(absl::StrCat("model: ", weights.status().message()));
    config = *local;
  }
  // Quantization settings that cannot fit this model's shapes are known now, not in a worker later.
  for (size_t i = 0; i < recipe.stages.size(); ++i) {
    if (recipe.stages[i].kind != "quantize") continue;
    const json opts = json::parse(recipe.stages[i].options_json);
    const int64_t group = opts.value("group_size", int64_t{128});
    if (group == -1) continue;
    const LlamaConfig& c = *config;
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
  auto check_file = [](const std::string& uri, const std::string& field) -> absl::Status {
    auto path = LocalPathOf(uri, field);
    if (!path.ok()) return path.status();
    if (!fs::is_regular_file(*path)) {
      return absl::NotFoundError(absl::StrCat(field, ": \"", *path, "\" is not a file"));
    }
    return absl::OkStatus();
  };
  if (!recipe.calibration.empty()) {
    SQ_RETURN_IF_ERROR(check_file(recipe.calibration, "data.calibration"));
  }
  for (size_t i = 0; i < recipe.evaluation.size(); ++i) {
    SQ_RETURN_IF_ERROR(check_file(recipe.evaluation[i], absl::StrCat("data.evaluation[", i, "]")));
  }
  return absl::OkStatus();
}

}  // namespace squeeze
