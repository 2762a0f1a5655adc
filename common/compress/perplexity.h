// Token-level negative log likelihood and perplexity of a model over a set of sequences.
#pragma once

#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/data/text_dataset.h"
#include "common/model/llama_model.h"

namespace squeeze {

struct PerplexityOptions {
  // Longest context the model sees at once; longer sequences are scored with a sliding window.
  int64_t window = 512;
  // How far the window advances; each token is scored once, with at least window - stride tokens
  // of context once the window slides.
  int64_t stride = 256;
  int64_t batch_size = 8;
  // Called after each batch with (windows done, windows total, tokens fed to the model so far).
  std::function<void(int64_t, int64_t, int64_t)> progress;
  // Checked before each batch; true stops with Cancelled.
  std::function<bool()> should_stop;
  // Evaluate only the first N examples (0: all).
  int64_t max_examples = 0;
};

struct NllSum {
  double nll = 0.0;  // natural log
  int64_t tokens = 0;
  double perplexity() const { return tokens > 0 ? std::exp(nll / tokens) : 0.0; }
  double bits_per_token() const { return tokens > 0 ? nll / tokens / std::log(2.0) : 0.0; }
};

struct PerplexityResult {
  NllSum total;
  std::map<std::string, NllSum> by_category;  // only categories that appear
  double seconds = 0.0;
  int64_t tokens_processed = 0;  // forward-pass tokens, including re-read context
  double tokens_per_second() const { return seconds > 0 ? tokens_processed / seconds : 0.0; }
};

// The options with the window shrunk to the model's max_position_embeddings (a model scores
// positions past its training context badly), the stride kept below the window.
PerplexityOptions FitToModel(PerplexityOptions options, const LlamaConfig& config);

absl::StatusOr<PerplexityResult> EvaluatePerplexity(const LlamaModel& model,
                                                    const std::vector<TextExample>& examples,
                                                    const PerplexityOptions& options = {});

// The reference point for a language model: a unigram model of token frequencies counted on
// `train` (add-one smoothed over `vocab_size`), scored on the same targets EvaluatePerplexity
// scores (every token but the first of each example).
NllSum UnigramPerplexity(const std::vector<TextExample>& train,
                         const std::vector<TextExample>& eval, int64_t vocab_size);

// One scoring window of one example: the tokens [begin, end) go through the model, and the
// predictions for targets [score_from, end) are counted.
struct ScoringWindow {
  size_t example;
  int64_t begin, end, score_from;
};
// Exposed for tests: the windows that score every target of each example exactly once.
std::vector<ScoringWindow> PlanScoringWindows(const std::vector<TextExample>& examples,
                                              int64_t window, int64_t stride);

}  // namespace squeeze
