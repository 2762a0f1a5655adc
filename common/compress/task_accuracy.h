// Multiple-choice accuracy: each choice scored by its log-likelihood given the context, as
// lm-evaluation-harness does. `acc` picks the highest sum of log-probabilities, `acc_norm` the
// highest per byte of the choice's text (which does not favour short choices). Bootstrap 95%
// intervals resample the questions.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/data/choice_tasks.h"
#include "common/model/llama_model.h"

namespace squeeze {

struct AccuracyOptions {
  int64_t max_questions = 0;  // 0: all
  int64_t batch_size = 8;     // sequences (question x choice) per forward pass
  int64_t bootstrap = 1000;   // resamples for the intervals; 0: none
  uint64_t seed = 0;
  std::function<bool()> should_stop;  // polled between batches
  std::function<void(int64_t done, int64_t total)> progress;
};

struct Accuracy {
  int64_t questions = 0;
  int64_t correct = 0;       // by acc
  int64_t correct_norm = 0;  // by acc_norm
  double acc() const { return questions ? static_cast<double>(correct) / questions : 0.0; }
  double acc_norm() const {
    return questions ? static_cast<double>(correct_norm) / questions : 0.0;
  }
};

struct AccuracyResult {
  Accuracy total;
  std::map<std::string, Accuracy> by_category;
  double acc_low = 0, acc_high = 0;            // bootstrap 95% interval of acc
  double acc_norm_low = 0, acc_norm_high = 0;  // and of acc_norm
  // Per question: whether acc and acc_norm chose the label (for tests and reports).
  std::vector<bool> right, right_norm;
};

// Cancelled when `should_stop` said so.
absl::StatusOr<AccuracyResult> EvaluateChoiceAccuracy(const LlamaModel& model,
                                                      const std::vector<ChoiceQuestion>& questions,
                                                      const AccuracyOptions& options);

// Sum of log p(choice | context) under `model`, for each choice of `q` (the reference the batched
// scorer is checked against).
std::vector<double> ChoiceLogLikelihoods(const LlamaModel& model, const ChoiceQuestion& q);

}  // namespace squeeze
