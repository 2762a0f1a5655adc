#include "common/compress/perplexity.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"

namespace squeeze {

std::vector<ScoringWindow> PlanScoringWindows(const std::vector<TextExample>& examples,
                                              int64_t window, int64_t stride) {
  std::vector<ScoringWindow> out;
  for (size_t e = 0; e < examples.size(); ++e) {
    const int64_t n = static_cast<int64_t>(examples[e].ids.size());
    int64_t scored_until = 1;  // target 0 has no context and is never scored
    for (int64_t begin = 0; scored_until < n; begin += stride) {
      const int64_t end = std::min(begin + window, n);
      out.push_back({e, begin, end, scored_until});
      scored_until = end;
    }
  }
  return out;
}

PerplexityOptions FitToModel(PerplexityOptions options, const LlamaConfig& config) {
  if (config.max_position_embeddings > 1 && options.window > config.max_position_embeddings) {
    options.window = config.max_position_embeddings;
    options.stride = std::min(options.stride, options.window / 2);
  }
  return options;
}

NllSum UnigramPerplexity(const std::vector<TextExample>& train,
                         const std::vector<TextExample>& eval, int64_t vocab_size) {
  std::vector<double> counts(vocab_size, 1.0);  // add-one smoothing
  double total = static_cast<double>(vocab_size);
  for (const TextExample& e : train) {
    for (size_t t = 1; t < e.ids.size(); ++t) {
      if (e.ids[t] >= 0 && e.ids[t] < vocab_size) {
        counts[e.ids[t]] += 1.0;
        total += 1.0;
      }
    }
  }
  NllSum out;
  for (const TextExample& e : eval) {
    for (size_t t = 1; t < e.ids.size(); ++t) {
      const double c = e.ids[t] >= 0 && e.ids[t] < vocab_size ? counts[e.ids[t]] : 1.0;
      out.nll -= std::log(c / total);
      out.tokens += 1;
    }
  }
  return out;
}

absl::StatusOr<PerplexityResult> EvaluatePerplexity(const LlamaModel& model,
                                                    const std::vector<TextExample>& examples,
                                                    const PerplexityOptions& options) {
  if (options.window < 2)
    return absl::InvalidArgumentError("perplexity window: must be at least 2");
  if (options.stride < 1 || options.stride > options.window - 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("perplexity stride: must be in [1, window - 1], got ", options.stride));
  }
  if (options.batch_size < 1)
    return absl::InvalidArgumentError("perplexity batch_size: must be positive");
  for (size_t e = 0; e < examples.size(); ++e) {
    for (int32_t id : examples[e].ids) {
      if (id < 0 || id >= model.config().vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat("example ", e, ": token id ", id,
                                                       " is outside the vocabulary of ",
                                                       model.config().vocab_size));
      }
    }
  }

  std::vector<TextExample> subset;
  const std::vector<TextExample>* data = &examples;
  if (options.max_examples > 0 && static_cast<size_t>(options.max_examples) < examples.size()) {
    subset.assign(examples.begin(), examples.begin() + options.max_examples);
    data = &subset;
  }
  std::vector<ScoringWindow> windows = PlanScoringWindows(*data, options.window, options.stride);
  // Similar lengths together keep padding small.
  std::stable_sort(windows.begin(), windows.end(),
                   [](const ScoringWindow& a, const ScoringWindow& b) {
                     return a.end - a.begin > b.end - b.begin;
                   });

  const auto start = std::chrono::steady_clock::now();
  PerplexityResult result;
  c10::NoGradGuard no_grad;
  const int64_t total = static_cast<int64_t>(windows.size());
  for (int64_t first = 0; first < total; first += options.batch_size) {
    if (options.should_stop && options.should_stop()) {
      return absl::CancelledError(
          absl::StrCat("evaluation stopped after ", first, " of ", total, " windows"));
    }
    const int64_t count = std::min<int64_t>(options.batch_size, total - first);
    const int64_t len = windows[first].end - windows[first].begin;  // longest in the batch
    // Right padding: with a causal mask, padding after a sequence cannot change its predictions.
    at::Tensor ids = at::zeros({count, len}, at::kLong);
    at::Tensor weight = at::zeros({count, len - 1}, at::kFloat);
    auto ids_a = ids.accessor<int64_t, 2>();
    auto weight_a = weight.accessor<float, 2>();
    for (int64_t b = 0; b < count; ++b) {
      const ScoringWindow& w = windows[first + b];
      const auto& src = (*data)[w.example].ids;
      for (int64_t t = w.begin; t < w.end; ++t) ids_a[b][t - w.begin] = src[t];
      // Position p predicts token p + 1.
      for (int64_t t = w.score_from; t < w.end; ++t) weight_a[b][t - w.begin - 1] = 1.0f;
      result.tokens_processed += w.end - w.begin;
    }
    at::Tensor logits = model.Forward(ids.to(model.device()));
    at::Tensor logp = at::log_softmax(logits.slice(1, 0, len - 1).to(at::kFloat), -1);
    at::Tensor targets = ids.slice(1, 1).to(model.device());
    at::Tensor nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1);
    at::Tensor per_window = (nll.to(at::kCPU) * weight).sum(1).to(at::kDouble);
    auto per_window_a = per_window.accessor<double, 1>();
    for (int64_t b = 0; b < count; ++b) {
      const ScoringWindow& w = windows[first + b];
      const int64_t scored = w.end - w.score_from;
      result.total.nll += per_window_a[b];
      result.total.tokens += scored;
      const std::string& category = (*data)[w.example].category;
      if (!category.empty()) {
        result.by_category[category].nll += per_window_a[b];
        result.by_category[category].tokens += scored;
      }
    }
    if (options.progress) options.progress(first + count, total, result.tokens_processed);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace squeeze
