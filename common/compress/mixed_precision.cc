#include "common/compress/mixed_precision.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/compress/bit_allocation.h"

namespace squeeze {
namespace {

using json = nlohmann::json;

int64_t Elements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// "model.layers.3.mlp.down_proj.weight" for a linear of `config`'s decoder layers.
bool IsLinearWeight(const LlamaConfig& config, const std::string& name) {
  const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return false;
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos) return false;
  const std::string inner = name.substr(dot + 1);
  for (const LinearShape& l : DecoderLinearShapes(config)) {
    if (inner == std::string(l.name) + ".weight") return true;
  }
  return false;
}

}  // namespace

double StoredLinearBits(int64_t out, int64_t in, int bits, int64_t group_size) {
  const int64_t groups = group_size == -1 ? 1 : in / group_size;
  return static_cast<double>(out) * in * bits + static_cast<double>(groups) * out * (16 + bits) +
         32.0 * in;
}

int64_t UnquantizedTensorBytes(const LlamaConfig& config) {
  int64_t elements = 0;
  for (const auto& [name, shape] : CheckpointTensorShapes(config)) {
    if (!IsLinearWeight(config, name)) elements += Elements(shape);
  }
  return elements * 2;
}

int64_t QuantizedCheckpointBytes(const LlamaConfig& config, int bits, int64_t group_size) {
  double linear_bits = 0;
  for (const LinearShape& l : DecoderLinearShapes(config))
    linear_bits += StoredLinearBits(l.out, l.in, bits, group_size);
  return UnquantizedTensorBytes(config) +
         static_cast<int64_t>(linear_bits * static_cast<double>(config.num_hidden_layers) / 8);
}

std::string WidthGroupOf(const std::string& module) {
  const size_t dot = module.rfind('.');
  const std::string prefix = module.substr(0, dot + 1), name = module.substr(dot + 1);
  if (name == "q_proj" || name == "k_proj" || name == "v_proj") return prefix + "qkv";
  if (name == "gate_proj" || name == "up_proj") return prefix + "gate_up";
  return module;
}

absl::StatusOr<MixedPrecisionPlan> PlanMixedPrecision(const LlamaConfig& config, int64_t group_size,
                                                      const MixedPrecisionBudget& budget,
                                                      std::vector<LinearSensitivity> linears) {
  if ((budget.average_bits > 0) == (budget.max_size_bytes > 0))
    return absl::InvalidArgumentError(
        "mixed_precision: needs exactly one budget, average_bits or max_size_bytes");
  if (budget.bits.empty())
    return absl::InvalidArgumentError("mixed_precision.bits: no width to choose from");
  const bool by_average = budget.average_bits > 0;
  // Groups in the order their first member comes.
  std::vector<std::string> order;
  std::map<std::string, LinearCandidates> groups;
  int64_t weights = 0;
  for (const LinearSensitivity& l : linears) {
    const std::string group = WidthGroupOf(l.module);
    auto [it, inserted] = groups.try_emplace(group);
    if (inserted) {
      order.push_back(group);
      it->second.name = group;
      for (int b : budget.bits) it->second.choices.push_back({b, 0.0, 0.0});
    }
    weights += l.out * l.in;
    for (BitChoice& c : it->second.choices) {
      auto error = l.error_by_bits.find(c.bits);
      if (error == l.error_by_bits.end())
        return absl::InvalidArgumentError(
            absl::StrCat(l.module, ": no error measured at ", c.bits, " bits"));
      c.sensitivity += error->second;
      c.cost_bits += by_average ? static_cast<double>(l.out) * l.in * c.bits
                                : StoredLinearBits(l.out, l.in, c.bits, group_size);
    }
  }
  std::vector<LinearCandidates> units;
  for (const std::string& g : order) units.push_back(groups.at(g));
  double budget_bits = 0;
  const int narrowest = *std::min_element(budget.bits.begin(), budget.bits.end());
  if (by_average) {
    if (budget.average_bits < narrowest)
      return absl::InvalidArgumentError(
          absl::StrCat("mixed_precision.average_bits: ", budget.average_bits,
                       " is below the smallest width (", narrowest, ")"));
    budget_bits = budget.average_bits * static_cast<double>(weights);
  } else {
    const int64_t smallest = QuantizedCheckpointBytes(config, narrowest, group_size);
    if (budget.max_size_bytes < smallest)
      return absl::InvalidArgumentError(
          absl::StrCat("mixed_precision.max_size_bytes: ", budget.max_size_bytes,
                       " is below the smallest this model is stored in (", smallest,
                       " bytes, every linear at ", narrowest, " bits)"));
    budget_bits = static_cast<double>(budget.max_size_bytes - UnquantizedTensorBytes(config)) * 8;
  }
  auto allocation = AllocateBits(units, budget_bits);
  if (!allocation.ok())
    return absl::InvalidArgumentError(absl::StrCat(
        by_average ? "mixed_precision.average_bits: " : "mixed_precision.max_size_bytes: ",
        allocation.status().message()));
  std::map<std::string, int> group_bits;
  for (size_t i = 0; i < order.size(); ++i) group_bits[order[i]] = allocation->bits[i];

  MixedPrecisionPlan plan;
  std::map<int, int64_t> weights_at;
  double code_bits = 0, stored_bits = 0;
  for (const LinearSensitivity& l : linears) {
    const int b = group_bits.at(WidthGroupOf(l.module));
    plan.bits_by_module[l.module] = b;
    weights_at[b] += l.out * l.in;
    code_bits += static_cast<double>(l.out) * l.in * b;
    stored_bits += StoredLinearBits(l.out, l.in, b, group_size);
    plan.error += l.error_by_bits.at(b);
  }
  plan.base_bits =
      std::max_element(weights_at.begin(), weights_at.end(), [](const auto& a, const auto& b) {
        return a.second < b.second;
      })->first;
  plan.average_bits = weights ? code_bits / static_cast<double>(weights) : 0.0;
  plan.checkpoint_bytes = UnquantizedTensorBytes(config) + static_cast<int64_t>(stored_bits / 8);
  plan.linears = std::move(linears);
  return plan;
}

std::string MixedPrecisionPlanJson(const MixedPrecisionPlan& plan,
                                   const MixedPrecisionBudget& budget) {
  json b = {{"bits", budget.bits}};
  if (budget.average_bits > 0) b["average_bits"] = budget.average_bits;
  if (budget.max_size_bytes > 0) b["max_size_bytes"] = budget.max_size_bytes;
  json modules = json::object();
  for (const LinearSensitivity& l : plan.linears) {
    json errors = json::object();
    for (const auto& [bits, error] : l.error_by_bits) errors[std::to_string(bits)] = error;
    modules[l.module] = {{"bits", plan.bits_by_module.at(l.module)},
                         {"out_features", l.out},
                         {"in_features", l.in},
                         {"error_by_bits", errors}};
  }
  json out = {{"budget", b},
              {"base_bits", plan.base_bits},
              {"average_bits", plan.average_bits},
              {"checkpoint_bytes", plan.checkpoint_bytes},
              {"error", plan.error},
              {"modules", modules}};
  return out.dump(2) + "\n";
}

absl::StatusOr<MixedPrecisionPlan> ParseMixedPrecisionPlan(const std::string& text,
                                                           const std::string& where) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat(where, ": ", what));
  };
  if (!j.is_object() || !j.contains("modules") || !j["modules"].is_object())
    return bad("expected an object with \"modules\"");
  MixedPrecisionPlan plan;
  try {
    plan.base_bits = j.at("base_bits").get<int>();
    plan.average_bits = j.at("average_bits").get<double>();
    plan.checkpoint_bytes = j.at("checkpoint_bytes").get<int64_t>();
    plan.error = j.at("error").get<double>();
    for (const auto& [module, m] : j["modules"].items()) {
      LinearSensitivity l;
      l.module = module;
      l.out = m.at("out_features").get<int64_t>();
      l.in = m.at("in_features").get<int64_t>();
      for (const auto& [bits, error] : m.at("error_by_bits").items())
        l.error_by_bits[std::stoi(bits)] = error.get<double>();
      const int b = m.at("bits").get<int>();
      if (b != 2 && b != 3 && b != 4 && b != 8)
        return bad(absl::StrCat("modules.", module, ".bits: expected 2, 3, 4 or 8, got ", b));
      plan.bits_by_module[module] = b;
      plan.linears.push_back(std::move(l));
    }
  } catch (const std::exception& e) {
    return bad(e.what());
  }
  // The widths are what counts: the average and the most common width follow from them.
  std::map<int, double> weights_at;
  double weights = 0, code_bits = 0;
  for (const LinearSensitivity& l : plan.linears) {
    const int b = plan.bits_by_module.at(l.module);
    const double n = static_cast<double>(l.out) * static_cast<double>(l.in);
    weights_at[b] += n;
    weights += n;
    code_bits += n * b;
  }
  if (weights > 0) {
    plan.average_bits = code_bits / weights;
    plan.base_bits =
        std::max_element(weights_at.begin(), weights_at.end(), [](const auto& a, const auto& b) {
          return a.second < b.second;
        })->first;
  }
  return plan;
}

}  // namespace squeeze
