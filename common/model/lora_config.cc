#include "common/model/lora_config.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace squeeze {

using json = nlohmann::json;

std::vector<std::string> LoraTargetLinears(const LlamaConfig& config, absl::string_view target) {
  std::vector<std::string> out;
  if (target.empty()) return out;
  for (const LinearShape& s : DecoderLinearShapes(config)) {
    const absl::string_view name = s.name;
    if (name == target || absl::EndsWith(name, absl::StrCat(".", target))) out.emplace_back(s.name);
  }
  return out;
}

absl::Status ValidateLoraOptions(const LoraOptions& o, const LlamaConfig& config,
                                 absl::string_view field) {
  auto bad = [&](absl::string_view option, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".", option, ": ", what));
  };
  if (o.targets.empty())
    return bad("targets",
               "expected at least one linear (q_proj, k_proj, v_proj, o_proj, "
               "gate_proj, up_proj, down_proj)");
  std::vector<std::string> names;
  for (const LinearShape& s : DecoderLinearShapes(config)) names.emplace_back(s.name);
  int64_t smallest = INT64_MAX;
  std::string smallest_name;
  for (size_t i = 0; i < o.targets.size(); ++i) {
    const std::vector<std::string> hit = LoraTargetLinears(config, o.targets[i]);
    if (hit.empty()) {
      std::string known;
      for (const std::string& n : names) absl::StrAppend(&known, known.empty() ? "" : ", ", n);
      return bad(absl::StrCat("targets[", i, "]"),
                 absl::StrCat("\"", o.targets[i], "\" names no linear of a decoder layer of this ",
                              config.model_type, " model (", known, ")"));
    }
    for (const LinearShape& s : DecoderLinearShapes(config)) {
      if (std::find(hit.begin(), hit.end(), s.name) == hit.end()) continue;
      if (std::min(s.out, s.in) < smallest) {
        smallest = std::min(s.out, s.in);
        smallest_name = s.name;
      }
    }
  }
  if (o.rank <= 0) return bad("rank", absl::StrCat("must be positive, got ", o.rank));
  if (o.rank > smallest)
    return bad("rank", absl::StrCat(o.rank, " exceeds ", smallest_name, "'s smaller dimension (",
                                    smallest, "); a rank above it adds nothing"));
  if (!(o.alpha > 0) || !std::isfinite(o.alpha))
    return bad("alpha", absl::StrCat("must be positive, got ", o.alpha));
  if (!(o.dropout >= 0 && o.dropout < 1))
    return bad("dropout", absl::StrCat("must be in [0, 1), got ", o.dropout));
  return absl::OkStatus();
}

std::string LoraAdapterConfigJson(const LoraOptions& o, const std::string& base_model) {
  json targets = json::array();
  for (const std::string& t : o.targets) targets.push_back(t);
  json j = {{"peft_type", "LORA"},
            {"task_type", "CAUSAL_LM"},
            {"base_model_name_or_path", base_model},
            {"r", o.rank},
            {"lora_alpha", o.alpha},
            {"lora_dropout", o.dropout},
            {"target_modules", targets},
            {"bias", "none"},
            {"fan_in_fan_out", false},
            {"inference_mode", true},
            {"init_lora_weights", true},
            {"use_rslora", false},
            {"use_dora", false},
            {"modules_to_save", nullptr},
            {"layers_to_transform", nullptr},
            {"rank_pattern", json::object()},
            {"alpha_pattern", json::object()}};
  return j.dump(2) + "\n";
}

absl::StatusOr<LoraOptions> ParseLoraAdapterConfig(absl::string_view text,
                                                   absl::string_view source) {
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
  };
  const json j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  if (j.value("peft_type", std::string()) != "LORA") return bad("peft_type: expected \"LORA\"");
  if (!j.contains("r") || !j["r"].is_number_integer() || j["r"].get<int64_t>() <= 0)
    return bad("r: expected a positive integer");
  if (!j.contains("lora_alpha") || !j["lora_alpha"].is_number())
    return bad("lora_alpha: expected a number");
  if (j.value("fan_in_fan_out", false)) return bad("fan_in_fan_out: true is not supported");
  if (j.contains("bias") && j["bias"] != "none") return bad("bias: only \"none\" is supported");
  for (const char* pattern : {"rank_pattern", "alpha_pattern"}) {
    if (j.contains(pattern) && j[pattern].is_object() && !j[pattern].empty())
      return bad(absl::StrCat(pattern, ": per-module ranks are not supported"));
  }
  if (j.value("use_dora", false)) return bad("use_dora: DoRA adapters are not supported");
  if (j.value("use_rslora", false))
    return bad("use_rslora: rank-stabilised scaling is not supported");
  LoraOptions o;
  o.rank = j["r"].get<int64_t>();
  o.alpha = j["lora_alpha"].get<double>();
  if (j.contains("lora_dropout") && j["lora_dropout"].is_number())
    o.dropout = j["lora_dropout"].get<double>();
  const json& t = j.contains("target_modules") ? j["target_modules"] : json();
  if (t.is_string()) {
    o.targets.push_back(t.get<std::string>());
  } else if (t.is_array()) {
    for (const json& e : t) {
      if (!e.is_string()) return bad("target_modules: expected names");
      o.targets.push_back(e.get<std::string>());
    }
  } else {
    return bad("target_modules: expected a list of names");
  }
  return o;
}

}  // namespace squeeze
