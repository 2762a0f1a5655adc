// Knowledge distillation: a student trained on the teacher's soft outputs.
//
//   loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
//        + (1 - alpha) * CE(student, labels)
//        + hidden_weight * sum over layer pairs of MSE or (1 - cosine) between student and
//          teacher hidden states (through a learned projection when the widths differ)
//
// (Hinton et al. 2015 for the T^2 scaling, which keeps gradient magnitudes comparable across T.)
// The teacher runs under no-grad in its own dtype and device placement.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model/llama_model.h"
#include "common/train/trainer.h"

namespace squeeze {

struct DistillOptions {
  double temperature = 2.0;
  double alpha = 0.5;  // weight of the soft (teacher) loss; 1 - alpha goes to the labels
  enum class HiddenLoss { kNone, kMse, kCosine };
  HiddenLoss hidden_loss = HiddenLoss::kNone;
  double hidden_weight = 1.0;
  std::vector<std::pair<int64_t, int64_t>> hidden_layers;  // (student layer, teacher layer)
  bool projection = false;  // learn a student->teacher width projection per pair
};

// Checks the options against the two models. Errors name the option ("temperature: ...").
absl::Status ValidateDistillOptions(const DistillOptions& options, const LlamaConfig& teacher,
                                    const LlamaConfig& student);

// The teacher's layers `layers` (in that order) with its embeddings, final norm and head, copied:
// the student initialisation of DistilBERT (every other layer) and Minitron (chosen layers).
absl::StatusOr<LlamaModel> StudentFromTeacherLayers(const LlamaModel& teacher,
                                                    const std::vector<int64_t>& layers);
// 0, k, 2k, ... below `num_layers`.
std::vector<int64_t> EveryKthLayer(int64_t num_layers, int64_t k);

// The teacher's top-k logits of one micro-batch: values [rows, seq, k] and token ids [rows, seq,
// k]. Stored once, they replace the teacher's forward pass on later runs over the same data.
struct TopKLogits {
  at::Tensor values;
  at::Tensor indices;
};
// For (step, micro): the cached teacher outputs of that micro-batch.
using TopKSource = std::function<absl::StatusOr<TopKLogits>(int64_t step, int64_t micro)>;

// The teacher's top-k logits of `ids` [rows, seq + 1] (inputs are all but the last position).
TopKLogits TeacherTopK(const LlamaModel& teacher, const at::Tensor& ids, int64_t k);

class DistillationObjective : public TrainingObjective {
 public:
  // `teacher` must outlive the objective; it may be null when alpha is 0 and there is no hidden
  // loss (cross-entropy alone, through the same chunked loss kernel). Projections, when asked
  // for, start as the identity on the shared dimensions (zeros elsewhere), so they begin as a
  // plain comparison.
  DistillationObjective(const LlamaModel* teacher, DistillOptions options,
                        const LlamaConfig& student, at::Device device);

  at::Tensor Loss(const LlamaModel& student, const at::Tensor& ids) override;
  void BeginMicroBatch(int64_t step, int64_t micro) override {
    step_ = step;
    micro_ = micro;
  }
  // From now on the soft targets come from `source` (cached top-k logits) and the teacher does
  // not run. Not with a hidden-state loss, which needs the live teacher.
  void UseCachedTeacher(TopKSource source) { cached_ = std::move(source); }
  std::vector<at::Tensor> Parameters() override { return projections_; }
  absl::Status SaveState(const std::string& dir) const override;
  absl::Status LoadState(const std::string& dir) override;

  // The parts of the last loss, for logs. Read back from the device only when asked, so that the
  // training step itself never waits for the GPU.
  struct Parts {
    double kd = 0, ce = 0, hidden = 0;
  };
  Parts last_parts() const;

 private:
  const LlamaModel* teacher_;
  DistillOptions options_;
  std::vector<at::Tensor> projections_;         // [teacher_hidden, student_hidden] per hidden pair
  at::Tensor last_kd_, last_ce_, last_hidden_;  // detached scalars of the last Loss
  TopKSource cached_;
  int64_t step_ = 0, micro_ = 0;
};

// The soft-target loss alone: T^2 * KL(softmax(t / T) || softmax(s / T)), mean over positions.
at::Tensor SoftTargetLoss(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                          double temperature);
// The whole objective over logits, fused: (1 - alpha) * CE(student, labels) + alpha *
// SoftTargetLoss(student, teacher, T), as {loss, ce, kd} (ce and kd are for logs and carry no
// gradient). The gradient with respect to the student's logits has a closed form,
//   [(1 - alpha) * (softmax(s) - onehot(label)) + alpha * T * (softmax(s / T) - softmax(t / T))] /
//   N,
// so it is computed in the forward pass, a few thousand rows at a time, and kept in the logits'
// dtype: no float32 copy of the [N, vocab] logits, and no autograd graph through the softmaxes,
// is kept or replayed. `teacher_logits` may be undefined when alpha is 0. `chunk_rows` 0 picks
// the chunk from the vocabulary size.
struct DistillLossParts {
  at::Tensor loss, ce, kd;
};
DistillLossParts FusedDistillLoss(const at::Tensor& student_logits,
                                  const at::Tensor& teacher_logits, const at::Tensor& labels,
                                  double temperature, double alpha, int64_t chunk_rows = 0);
// The same against the teacher's top-k logits: the teacher distribution is the softmax over its
// k largest logits (renormalised), compared with the student's full-vocabulary log-probabilities
// at those tokens. Equal to SoftTargetLoss when k is the vocabulary size.
at::Tensor SoftTargetLossTopK(const at::Tensor& student_logits, const TopKLogits& teacher,
                              double temperature);

}  // namespace squeeze
