#include "common/compress/task_accuracy.h"

#include <c10/core/GradMode.h>

#include <algorithm>
#include <random>

namespace squeeze {
namespace {

// context + choice, cut from the left to the model's context length (the choice always whole
// when it fits); returns the ids and how many of them are the choice's.
std::pair<std::vector<int64_t>, int64_t> Sequence(const ChoiceQuestion& q, size_t c,
                                                  int64_t max_len) {
  std::vector<int64_t> ids(q.context.begin(), q.context.end());
  ids.insert(ids.end(), q.choices[c].begin(), q.choices[c].end());
  int64_t n = static_cast<int64_t>(q.choices[c].size());
  if (static_cast<int64_t>(ids.size()) > max_len) ids.erase(ids.begin(), ids.end() - max_len);
  // The first token is predicted by nothing.
  n = std::min<int64_t>(n, static_cast<int64_t>(ids.size()) - 1);
  return {ids, n};
}

// Log-likelihoods of a batch of sequences' last `n[i]` tokens.
std::vector<double> ScoreBatch(const LlamaModel& model,
                               const std::vector<std::pair<std::vector<int64_t>, int64_t>>& seqs) {
  int64_t len = 0;
  for (const auto& s : seqs) len = std::max<int64_t>(len, static_cast<int64_t>(s.first.size()));
  // Padded at the end: attention is causal, so padding never changes the real positions.
  at::Tensor ids = at::zeros({static_cast<int64_t>(seqs.size()), len}, at::kLong);
  for (size_t i = 0; i < seqs.size(); ++i) {
    const auto& s = seqs[i].first;
    ids[i]
        .slice(0, 0, static_cast<int64_t>(s.size()))
        .copy_(at::tensor(std::vector<int64_t>(s.begin(), s.end()), at::kLong));
  }
  const at::Tensor logits = model.Forward(ids.to(model.device()));
  std::vector<double> out;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const auto& [s, n] = seqs[i];
    const int64_t size = static_cast<int64_t>(s.size());
    // Token t is predicted at position t - 1: only the choice's rows are normalized.
    const at::Tensor rows =
        at::log_softmax(logits[i].slice(0, size - n - 1, size - 1).to(at::kFloat), -1);
    const at::Tensor targets =
        at::tensor(std::vector<int64_t>(s.end() - n, s.end()), at::kLong).to(rows.device());
    out.push_back(rows.gather(1, targets.unsqueeze(1)).sum().item<double>());
  }
  return out;
}

std::pair<double, double> Interval(const std::vector<bool>& right, int64_t resamples,
                                   uint64_t seed) {
  if (resamples <= 0 || right.empty()) return {0, 0};
  std::mt19937_64 rng(seed ^ 0x626f6f74ull);
  std::uniform_int_distribution<size_t> pick(0, right.size() - 1);
  std::vector<double> means;
  means.reserve(static_cast<size_t>(resamples));
  for (int64_t r = 0; r < resamples; ++r) {
    int64_t hits = 0;
    for (size_t i = 0; i < right.size(); ++i) hits += right[pick(rng)];
    means.push_back(static_cast<double>(hits) / right.size());
  }
  std::sort(means.begin(), means.end());
  auto at = [&](double q) {
    return means[std::min(means.size() - 1, static_cast<size_t>(q * (means.size() - 1) + 0.5))];
  };
  return {at(0.025), at(0.975)};
}

}  // namespace

std::vector<double> ChoiceLogLikelihoods(const LlamaModel& model, const ChoiceQuestion& q) {
  c10::NoGradGuard no_grad;
  std::vector<double> out;
  for (size_t c = 0; c < q.choices.size(); ++c)
    out.push_back(ScoreBatch(model, {Sequence(q, c, model.config().max_position_embeddings)})[0]);
  return out;
}

absl::StatusOr<AccuracyResult> EvaluateChoiceAccuracy(const LlamaModel& model,
                                                      const std::vector<ChoiceQuestion>& questions,
                                                      const AccuracyOptions& options) {
  c10::NoGradGuard no_grad;
  const size_t total = options.max_questions > 0
                           ? std::min(questions.size(), static_cast<size_t>(options.max_questions))
                           : questions.size();
  const int64_t max_len = model.config().max_position_embeddings;
  // Every (question, choice) as one sequence, scored in batches.
  std::vector<std::pair<size_t, size_t>> refs;
  for (size_t q = 0; q < total; ++q)
    for (size_t c = 0; c < questions[q].choices.size(); ++c) refs.emplace_back(q, c);
  std::vector<double> scores(refs.size());
  const size_t batch = static_cast<size_t>(std::max<int64_t>(1, options.batch_size));
  for (size_t b = 0; b < refs.size(); b += batch) {
    if (options.should_stop && options.should_stop())
      return absl::CancelledError("accuracy evaluation stopped");
    std::vector<std::pair<std::vector<int64_t>, int64_t>> seqs;
    for (size_t i = b; i < std::min(refs.size(), b + batch); ++i)
      seqs.push_back(Sequence(questions[refs[i].first], refs[i].second, max_len));
    const std::vector<double> s = ScoreBatch(model, seqs);
    std::copy(s.begin(), s.end(), scores.begin() + static_cast<int64_t>(b));
    if (options.progress)
      options.progress(static_cast<int64_t>(std::min(refs.size(), b + batch)),
                       static_cast<int64_t>(refs.size()));
  }
  AccuracyResult result;
  size_t k = 0;
  for (size_t q = 0; q < total; ++q) {
    const ChoiceQuestion& question = questions[q];
    size_t best = 0, best_norm = 0;
    double top = -1e300, top_norm = -1e300;
    for (size_t c = 0; c < question.choices.size(); ++c, ++k) {
      const double norm = scores[k] / std::max<int64_t>(1, question.choice_bytes[c]);
      if (scores[k] > top) top = scores[k], best = c;
      if (norm > top_norm) top_norm = norm, best_norm = c;
    }
    const bool right = static_cast<int64_t>(best) == question.label;
    const bool right_norm = static_cast<int64_t>(best_norm) == question.label;
    for (Accuracy* a : {&result.total, &result.by_category[question.category]}) {
      ++a->questions;
      a->correct += right;
      a->correct_norm += right_norm;
    }
    result.right.push_back(right);
    result.right_norm.push_back(right_norm);
  }
  result.by_category.erase("");  // questions without a category count only in the total
  std::tie(result.acc_low, result.acc_high) =
      Interval(result.right, options.bootstrap, options.seed);
  std::tie(result.acc_norm_low, result.acc_norm_high) =
      Interval(result.right_norm, options.bootstrap, options.seed + 1);
  return result;
}

}  // namespace squeeze
