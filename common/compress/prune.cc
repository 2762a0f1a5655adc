#include "common/compress/prune.h"

#include <cmath>
#include <functional>

#include "absl/strings/str_cat.h"
#include "common/compress/sequential_quantizer.h"

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

// How many of `count` units (channels, heads) a structured prune at `sparsity` keeps: at least
// one, and fewer than all.
absl::StatusOr<int64_t> StructuredKeep(double sparsity, int64_t count, absl::string_view units) {
  if (!(sparsity > 0 && sparsity < 1))
    return absl::InvalidArgumentError(
        absl::StrCat("prune.sparsity: must be in (0, 1), got ", sparsity));
  const int64_t keep = count - static_cast<int64_t>(std::llround(sparsity * count));
  if (keep < 1 || keep == count) {
    return absl::InvalidArgumentError(absl::StrCat("prune.sparsity: ", sparsity, " of ", count, " ",
                                                   units, " removes none or all of them"));
  }
  return keep;
}

// The calibration input norms of one linear layer, on `device`.
absl::StatusOr<at::Tensor> InputNormsOf(const std::map<std::string, at::Tensor>& norms,
                                        int64_t layer, absl::string_view linear,
                                        const at::Device& device) {
  auto it = norms.find(LinearKey(layer, linear));
  if (it == norms.end())
    return absl::InternalError(
        absl::StrCat(LinearKey(layer, linear), ": no calibration input was seen"));
  return it->second.to(device);
}

// A copy of `model` under `narrow`, each decoder-layer tensor passed through
// `select(layer, name within the layer, tensor)`.
absl::StatusOr<LlamaModel> Rebuild(
    const LlamaModel& model, const LlamaConfig& narrow,
    const std::function<at::Tensor(int64_t, const std::string&, const at::Tensor&)>& select) {
  return model.Derive(narrow, [&](int64_t layer, const std::string& name) {
    auto t = model.LayerTensor(layer, name);
    return t.ok() ? absl::StatusOr<at::Tensor>(select(layer, name, *t)) : t;
  });
}

}  // namespace

absl::StatusOr<PruneMethod> ParsePruneMethod(absl::string_view name) {
  if (name == "magnitude") return PruneMethod::kMagnitude;
  if (name == "wanda") return PruneMethod::kWanda;
  if (name == "sparsegpt") return PruneMethod::kSparseGpt;
  return absl::InvalidArgumentError(
      absl::StrCat("prune.method: \"", name, "\" is not one of magnitude, wanda, sparsegpt"));
}

absl::StatusOr<PrunePattern> ParsePrunePattern(absl::string_view name) {
  if (name == "unstructured") return PrunePattern::kUnstructured;
  if (name == "2:4") return PrunePattern::k2of4;
  if (name == "4:8") return PrunePattern::k4of8;
  if (name == "channels") return PrunePattern::kMlpChannels;
  if (name == "heads") return PrunePattern::kAttentionHeads;
  return absl::InvalidArgumentError(absl::StrCat(
      "prune.pattern: \"", name, "\" is not one of unstructured, 2:4, 4:8, channels, heads"));
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
  if (pattern == PrunePattern::kMlpChannels || pattern == PrunePattern::kAttentionHeads) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": structured patterns remove channels or heads; they are not masks"));
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

absl::StatusOr<SparsityRule> SparsityRuleOf(PrunePattern pattern, double sparsity) {
  SparsityRule rule;
  switch (pattern) {
    case PrunePattern::kUnstructured:
      rule.sparsity = sparsity;
      return rule;
    case PrunePattern::k2of4:
      rule.n = 2;
      rule.m = 4;
      return rule;
    case PrunePattern::k4of8:
      rule.n = 4;
      rule.m = 8;
      return rule;
    default:
      return absl::InvalidArgumentError("sparsegpt zeros single weights: unstructured, 2:4 or 4:8");
  }
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
  if (method == PruneMethod::kSparseGpt) {
    // Layer by layer on the Hessians of the batches (sequential_quantizer.h), the kept weights
    // updated; the zeros the masks hold stay zeros and count toward `sparsity`.
    if (batches.empty()) return absl::InvalidArgumentError("sparsegpt needs calibration batches");
    Apply();
    SequentialOptions seq;
    seq.method = SequentialOptions::Method::kSparseGpt;
    seq.device = model.layer(0).q_proj.weight.device();
    seq.gptq.quant.group_size = -1;  // nothing is quantized
    auto rule = SparsityRuleOf(pattern, sparsity);
    if (!rule.ok()) return rule.status();
    seq.sparsity = *rule;
    std::vector<at::Tensor> windows;
    for (const at::Tensor& b : batches) windows.push_back(b.to(at::kCPU, at::kLong));
    auto pruned = QuantizeSequential(model, at::cat(windows, 0), seq);
    if (!pruned.ok()) return pruned.status();
    *this = FromZeros(model);
    return absl::OkStatus();
  }
  if (pattern == PrunePattern::k4of8)
    return absl::InvalidArgumentError("4:8 masks are chosen by sparsegpt only");
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
        auto found = InputNormsOf(norms, i, name, linear->weight.device());
        if (!found.ok()) return found.status();
        input_norms = *found;
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

absl::StatusOr<LlamaModel> PruneMlpChannels(const LlamaModel& model, PruneMethod method,
                                            double sparsity, const std::vector<at::Tensor>& batches,
                                            std::vector<at::Tensor>* kept_out) {
  c10::NoGradGuard no_grad;
  const LlamaConfig& config = model.config();
  auto keep_or = StructuredKeep(sparsity, config.intermediate_size, "MLP channels");
  if (!keep_or.ok()) return keep_or.status();
  const int64_t keep = *keep_or;
  std::map<std::string, at::Tensor> norms;
  if (method == PruneMethod::kWanda) norms = LinearInputNorms(model, batches);
  std::vector<at::Tensor> kept(model.num_layers());
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    const DecoderLayer& layer = model.layer(i);
    const at::Tensor out_norm = layer.down_proj.weight.to(at::kFloat).norm(2, {0});  // [width]
    at::Tensor in_norm;
    if (method == PruneMethod::kWanda) {
      auto activation = InputNormsOf(norms, i, "mlp.down_proj", out_norm.device());
      if (!activation.ok()) return activation.status();
      in_norm = *activation;
    } else {
      in_norm = layer.up_proj.weight.to(at::kFloat).norm(2, {1});
    }
    const at::Tensor top = std::get<1>((out_norm * in_norm).topk(keep));
    kept[i] = std::get<0>(top.sort());
  }
  LlamaConfig narrow = config;
  narrow.intermediate_size = keep;
  auto select = [&](int64_t layer, const std::string& name, const at::Tensor& t) {
    const at::Tensor index = kept[layer].to(t.device());
    if (name == "mlp.gate_proj.weight" || name == "mlp.up_proj.weight" ||
        name == "mlp.gate_proj.bias" || name == "mlp.up_proj.bias")
      return t.index_select(0, index);
    if (name == "mlp.down_proj.weight") return t.index_select(1, index);
    return t.clone();
  };
  auto narrowed = Rebuild(model, narrow, select);
  if (narrowed.ok() && kept_out != nullptr) *kept_out = kept;
  return narrowed;
}

absl::StatusOr<LlamaModel> PruneAttentionHeads(const LlamaModel& model, PruneMethod method,
                                               double sparsity,
                                               const std::vector<at::Tensor>& batches,
                                               std::vector<at::Tensor>* kept_out) {
  c10::NoGradGuard no_grad;
  const LlamaConfig& config = model.config();
  const int64_t kv_heads = config.num_key_value_heads, group = config.num_kv_groups();
  const int64_t d = config.head_dim;
  auto keep_or = StructuredKeep(sparsity, kv_heads, "key/value heads");
  if (!keep_or.ok()) return keep_or.status();
  const int64_t keep = *keep_or;
  std::map<std::string, at::Tensor> norms;
  if (method == PruneMethod::kWanda) norms = LinearInputNorms(model, batches);
  std::vector<at::Tensor> kept(model.num_layers());
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    const DecoderLayer& layer = model.layer(i);
    // o_proj's input columns, grouped by the key/value head their query heads read.
    at::Tensor columns = layer.o_proj.weight.to(at::kFloat).norm(2, {0});  // [heads * d]
    at::Tensor score;
    if (method == PruneMethod::kWanda) {
      auto inputs = InputNormsOf(norms, i, "self_attn.o_proj", columns.device());
      if (!inputs.ok()) return inputs.status();
      score = (columns * *inputs).reshape({kv_heads, group * d}).sum(1);
    } else {
      const at::Tensor v = layer.v_proj.weight.to(at::kFloat).reshape({kv_heads, -1}).norm(2, {1});
      score = columns.reshape({kv_heads, group * d}).sum(1) * v;
    }
    kept[i] = std::get<0>(std::get<1>(score.topk(keep)).sort());
  }
  LlamaConfig narrow = config;
  narrow.num_key_value_heads = keep;
  narrow.num_attention_heads = keep * group;
  // Row (or column) indices of the kept heads, each head a block of d.
  auto rows = [&](int64_t layer, int64_t block, const at::Device& device) {
    const at::Tensor offsets = at::arange(block, kept[layer].options());
    return (kept[layer].unsqueeze(1) * block + offsets.unsqueeze(0)).reshape({-1}).to(device);
  };
  auto select = [&](int64_t layer, const std::string& name, const at::Tensor& t) {
    if (name == "self_attn.q_proj.weight" || name == "self_attn.q_proj.bias")
      return t.index_select(0, rows(layer, group * d, t.device()));
    if (name == "self_attn.k_proj.weight" || name == "self_attn.k_proj.bias" ||
        name == "self_attn.v_proj.weight" || name == "self_attn.v_proj.bias")
      return t.index_select(0, rows(layer, d, t.device()));
    if (name == "self_attn.o_proj.weight")
      return t.index_select(1, rows(layer, group * d, t.device()));
    return t.clone();
  };
  auto narrowed = Rebuild(model, narrow, select);
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
