#include "common/compress/prune.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace squeeze {
namespace {

std::string LinearKey(int64_t layer, absl::string_view name) {
  return absl::StrCat("model.layers.", layer, ".", name);
}

// Sums x^2 per input feature of every linear layer's input.
class InputSquareSums : public LinearObserver {
 public:
  void OnLinearInput(int64_t layer, absl::string_view name, const at::Tensor& input) override {
    const at::Tensor x = input.reshape({-1, input.size(-1)}).to(at::kFloat);
    at::Tensor& sum = sums_[LinearKey(layer, name)];
    const at::Tensor s = x.pow(2).sum(0);
    sum = sum.defined() ? sum + s : s;
  }
  std::map<std::string, at::Tensor> Norms() const {
    std::map<std::string, at::Tensor> out;
    for (const auto& [key, sum] : sums_) out[key] = sum.sqrt();
    return out;
  }

 private:
  std::map<std::string, at::Tensor> sums_;
};

}  // namespace

absl::StatusOr<PruneMethod> ParsePruneMethod(absl::string_view name) {
  if (name == "magnitude") return PruneMethod::kMagnitude;
  if (name == "wanda") return PruneMethod::kWanda;
  return absl::InvalidArgumentError(
      absl::StrCat("prune.method: \"", name, "\" is not one of magnitude, wanda"));
}

absl::StatusOr<PrunePattern> ParsePrunePattern(absl::string_view name) {
  if (name == "unstructured") return PrunePattern::kUnstructured;
  if (name == "2:4") return PrunePattern::k2of4;
  if (name == "channels") return PrunePattern::kMlpChannels;
  return absl::InvalidArgumentError(
      absl::StrCat("prune.pattern: \"", name, "\" is not one of unstructured, 2:4, channels"));
}

at::Tensor PruneScores(PruneMethod method, const at::Tensor& weight,
                       const at::Tensor& input_norms) {
  const at::Tensor magnitude = weight.detach().abs().to(at::kFloat);
  if (method == PruneMethod::kMagnitude) return magnitude;
  return magnitude * input_norms.to(magnitude.device(), at::kFloat).unsqueeze(0);
}

absl::StatusOr<at::Tensor> PruneMask(const at::Tensor& scores, double sparsity,
                                     PrunePattern pattern, const at::Tensor& keep_so_far,
                                     absl::string_view name) {
  if (!(sparsity >= 0 && sparsity < 1))
    return absl::InvalidArgumentError(
        absl::StrCat("prune.sparsity: must be in [0, 1), got ", sparsity));
  if (scores.dim() != 2)
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected a matrix to prune"));
  const int64_t rows = scores.size(0), cols = scores.size(1);
  at::Tensor s = scores.to(at::kFloat);
  // What was pruned before ranks below everything, so it is pruned again first.
  if (keep_so_far.defined())
    s = s.masked_fill(keep_so_far.logical_not(), -std::numeric_limits<float>::infinity());
  at::Tensor keep = at::ones({rows, cols}, s.options().dtype(at::kBool));
  if (pattern == PrunePattern::kMlpChannels) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": MLP channels are removed (PruneMlpChannels), not masked"));
  }
  if (pattern == PrunePattern::k2of4) {
    if (std::abs(sparsity - 0.5) > 1e-9)
      return absl::InvalidArgumentError(
          absl::StrCat("prune.sparsity: the 2:4 pattern is 0.5 sparse, got ", sparsity));
    if (cols % 4 != 0)
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": ", cols, " input features are not a multiple of 4, as 2:4 sparsity needs"));
    const at::Tensor groups = s.reshape({rows, cols / 4, 4});
    const at::Tensor lowest = std::get<1>(groups.topk(2, -1, /*largest=*/false));
    keep = keep.reshape({rows, cols / 4, 4}).scatter(-1, lowest, false).reshape({rows, cols});
  } else {
    const int64_t drop = static_cast<int64_t>(std::llround(sparsity * cols));
    if (drop > 0) {
      const at::Tensor lowest = std::get<1>(s.topk(drop, -1, /*largest=*/false));
      keep = keep.scatter(-1, lowest, false);
    }
  }
  if (keep_so_far.defined()) keep = keep.logical_and(keep_so_far.to(keep.device()));
  return keep;
}

std::map<std::string, at::Tensor> LinearInputNorms(const LlamaModel& model,
                                                   const std::vector<at::Tensor>& batches) {
  c10::NoGradGuard no_grad;
  InputSquareSums sums;
  for (const at::Tensor& ids : batches) {
    const at::Tensor inputs = ids.to(model.device());
    at::Tensor h = model.Embed(inputs);
    const RotaryTables rope = model.Rotary(inputs.size(1), h.device(), h.scalar_type());
    for (int64_t i = 0; i < model.num_layers(); ++i)
      h = model.layer(i).Forward(model.config(), h, rope, i, &sums);
  }
  return sums.Norms();
}

SparsityMasks SparsityMasks::FromZeros(LlamaModel& model) {
  SparsityMasks out;
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (auto& [name, linear] : model.layer(i).Linears()) {
      const at::Tensor keep = linear->weight.ne(0);
      if (keep.all().item<bool>()) continue;
      out.masks_.push_back({LinearKey(i, name), &linear->weight, keep});
    }
  }
  return out;
}

absl::Status SparsityMasks::Prune(LlamaModel& model, PruneMethod method, PrunePattern pattern,
                                  double sparsity, const std::vector<at::Tensor>& batches) {
  c10::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> norms;
  if (method == PruneMethod::kWanda) norms = LinearInputNorms(model, batches);
  std::map<std::string, at::Tensor> previous;
  for (const Entry& e : masks_) previous[e.name] = e.keep;
  std::vector<Entry> next;
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (auto& [name, linear] : model.layer(i).Linears()) {
      const std::string key = LinearKey(i, name);
      at::Tensor input_norms;
      if (method == PruneMethod::kWanda) {
        auto it = norms.find(key);
        if (it == norms.end())
          return absl::InternalError(absl::StrCat(key, ": no calibration input was seen"));
        input_norms = it->second;
      }
      auto prev = previous.find(key);
      auto keep = PruneMask(PruneScores(method, linear->weight, input_norms), sparsity, pattern,
                            prev == previous.end() ? at::Tensor() : prev->second,
                            absl::StrCat(key, ".weight"));
      if (!keep.ok()) return keep.status();
      next.push_back({key, &linear->weight, *keep});
    }
  }
  masks_ = std::move(next);
  Apply();
  return absl::OkStatus();
}

void SparsityMasks::Apply() {
  c10::NoGradGuard no_grad;
  for (Entry& e : masks_) e.weight->masked_fill_(e.keep.logical_not(), 0);
}

double SparsityMasks::Sparsity() const {
  double pruned = 0, total = 0;
  for (const Entry& e : masks_) {
    total += static_cast<double>(e.keep.numel());
    pruned += static_cast<double>(e.keep.numel() - e.keep.sum().item<int64_t>());
  }
  return total > 0 ? pruned / total : 0.0;
}

absl::StatusOr<LlamaModel> PruneMlpChannels(LlamaModel& model, PruneMethod method, double sparsity,
                                            const std::vector<at::Tensor>& batches,
                                            std::vector<at::Tensor>* kept_out) {
  c10::NoGradGuard no_grad;
  if (!(sparsity > 0 && sparsity < 1))
    return absl::InvalidArgumentError(
        absl::StrCat("prune.sparsity: must be in (0, 1), got ", sparsity));
  const LlamaConfig& config = model.config();
  const int64_t width = config.intermediate_size;
  const int64_t keep = width - static_cast<int64_t>(std::llround(sparsity * width));
  if (keep < 1 || keep == width) {
    return absl::InvalidArgumentError(absl::StrCat("prune.sparsity: ", sparsity, " of ", width,
                                                   " MLP channels removes none or all of them"));
  }
  std::map<std::string, at::Tensor> norms;
  if (method == PruneMethod::kWanda) norms = LinearInputNorms(model, batches);
  std::vector<at::Tensor> kept(model.num_layers());
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    const DecoderLayer& layer = model.layer(i);
    const at::Tensor out_norm = layer.down_proj.weight.to(at::kFloat).norm(2, {0});  // [width]
    at::Tensor in_norm;
    if (method == PruneMethod::kWanda) {
      auto it = norms.find(LinearKey(i, "mlp.down_proj"));
      if (it == norms.end())
        return absl::InternalError(
            absl::StrCat(LinearKey(i, "mlp.down_proj"), ": no calibration input was seen"));
      in_norm = it->second.to(out_norm.device());
    } else {
      in_norm = layer.up_proj.weight.to(at::kFloat).norm(2, {1});
    }
    const at::Tensor top = std::get<1>((out_norm * in_norm).topk(keep));
    kept[i] = std::get<0>(top.sort());
  }
  std::map<std::string, at::Tensor> by_name;
  for (auto& [name, tensor] : model.NamedParameters()) by_name[name] = *tensor;
  LlamaConfig narrow = config;
  narrow.intermediate_size = keep;
  auto source = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
    std::string mapped = name;
    if (mapped == "lm_head.weight" && config.tie_word_embeddings)
      mapped = "model.embed_tokens.weight";
    auto it = by_name.find(mapped);
    if (it == by_name.end()) return absl::NotFoundError(absl::StrCat("model has no ", mapped));
    const at::Tensor& t = it->second;
    if (name.rfind("model.layers.", 0) != 0) return t.detach().clone();
    const size_t dot = name.find('.', 13);
    const int64_t layer = std::stoll(name.substr(13, dot - 13));
    const std::string rest = name.substr(dot + 1);
    const at::Tensor index = kept[layer].to(t.device());
    if (rest == "mlp.gate_proj.weight" || rest == "mlp.up_proj.weight" ||
        rest == "mlp.gate_proj.bias" || rest == "mlp.up_proj.bias")
      return t.detach().index_select(0, index);
    if (rest == "mlp.down_proj.weight") return t.detach().index_select(1, index);
    return t.detach().clone();
  };
  auto narrowed = LlamaModel::FromTensors(narrow, source, model.dtype(), model.device());
  if (narrowed.ok() && kept_out != nullptr) *kept_out = kept;
  return narrowed;
}

double LinearSparsity(LlamaModel& model) {
  double zeros = 0, total = 0;
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (auto& [name, linear] : model.layer(i).Linears()) {
      total += static_cast<double>(linear->weight.numel());
      zeros += static_cast<double>(linear->weight.eq(0).sum().item<int64_t>());
    }
  }
  return total > 0 ? zeros / total : 0.0;
}

}  // namespace squeeze
