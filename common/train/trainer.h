// The training loop shared by the example-model recipe and distillation: AdamW, linear warmup then
// cosine decay, gradient clipping and accumulation, periodic evaluation and resumable checkpoints.
// What is minimised is a TrainingObjective, so distillation plugs in its own loss.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/data/text_dataset.h"
#include "common/model/llama_model.h"

namespace squeeze {

struct TrainerOptions {
  int64_t steps = 1000;
  int64_t batch_size = 16;  // sequences per optimizer step (split into grad_accum micro-batches)
  int64_t seq_len = 256;
  int64_t grad_accum = 1;
  double lr = 3e-3;
  double min_lr_ratio = 0.1;  // the cosine decays to lr * min_lr_ratio
  int64_t warmup_steps = 100;
  double weight_decay = 0.1;  // matrices only; norms and biases are not decayed
  double beta1 = 0.9;
  double beta2 = 0.95;
  double grad_clip = 1.0;  // global L2 norm; <= 0 disables
  int64_t log_every = 50;
  int64_t eval_every = 0;        // 0: never
  int64_t checkpoint_every = 0;  // 0: only at the end when checkpoint_dir is set
  std::string checkpoint_dir;    // resumes from here when it holds a checkpoint
  uint64_t seed = 0;
  // Early stopping: stop after this many evaluations without an improvement of at least
  // min_delta in evaluation loss; 0 disables.
  // On CUDA: run forward passes under bf16 autocast (float32 master weights and optimizer).
  bool autocast_bf16 = false;
  int64_t early_stopping_patience = 0;
  double early_stopping_min_delta = 0.0;
};

absl::Status ValidateTrainerOptions(const TrainerOptions& options);

// Learning rate at `step` (0-based): linear warmup to lr, then cosine decay to lr * min_lr_ratio.
double LearningRateAt(const TrainerOptions& options, int64_t step);

// Fixed-length windows drawn from the examples laid end to end. The windows of a step depend only
// on (seed, step), so a resumed run trains on exactly the batches the first run would have.
class WindowSampler {
 public:
  WindowSampler(const std::vector<TextExample>& examples, int64_t seq_len, uint64_t seed);
  // [rows, seq_len + 1] int64 token ids for micro-batch `micro` of `step`: rows first_row ..
  // first_row + rows - 1 of it. Data-parallel ranks take disjoint rows of the same micro-batch, so
  // the global batch is the one a single process would train on.
  at::Tensor Batch(int64_t step, int64_t micro, int64_t rows, int64_t first_row = 0) const;
  int64_t num_tokens() const { return static_cast<int64_t>(stream_.size()); }

 private:
  std::vector<int32_t> stream_;
  int64_t seq_len_;
  uint64_t seed_;
};

// The loss of one micro-batch: ids [rows, seq_len + 1].
class TrainingObjective {
 public:
  virtual ~TrainingObjective() = default;
  virtual at::Tensor Loss(const LlamaModel& model, const at::Tensor& ids) = 0;
  // Called before Loss with the micro-batch's position in the run (objectives that read
  // precomputed teacher outputs look them up by it).
  virtual void BeginMicroBatch(int64_t step, int64_t micro) {}
  // Trainable tensors of the objective itself (a projection between hidden sizes), optimized
  // with the model's.
  virtual std::vector<at::Tensor> Parameters() { return {}; }
  // Saves or restores those tensors with the trainer's checkpoint.
  virtual absl::Status SaveState(const std::string& dir) const { return absl::OkStatus(); }
  virtual absl::Status LoadState(const std::string& dir) { return absl::OkStatus(); }
};

// Next-token cross-entropy.
class CrossEntropyObjective : public TrainingObjective {
 public:
  at::Tensor Loss(const LlamaModel& model, const at::Tensor& ids) override;
};

struct TrainStepStats {
  int64_t step = 0;  // 1-based: steps completed
  double loss = 0.0;
  double lr = 0.0;
  double grad_norm = 0.0;
  double tokens_per_second = 0.0;
};

struct TrainerCallbacks {
  std::function<void(const TrainStepStats&)> on_step;  // every step
  std::function<double(int64_t step)> evaluate;        // every eval_every steps
  std::function<void(int64_t step, double eval_loss)> on_eval;
  // Checked before every step; true stops the run with Cancelled (cancellation, preemption).
  std::function<bool()> should_stop;
  // Before step `step` (0-based) runs, on every rank, after a resumed checkpoint was loaded: where
  // a schedule changes the model (pruning rounds). An error stops the run.
  std::function<absl::Status(int64_t step)> before_step;
  // After every optimizer update (re-applying fixed sparsity masks).
  std::function<void()> after_update;
  // After a checkpoint was written to options.checkpoint_dir (upload it), on rank 0 only.
  std::function<absl::Status(int64_t step)> on_checkpoint;
};

class DataParallel;

class Trainer {
 public:
  // With `parallel`, this is one rank of a data-parallel group: the batch is split across ranks,
  // gradients are averaged, and only rank 0 writes checkpoints.
  Trainer(LlamaModel* model, TrainerOptions options, DataParallel* parallel = nullptr);
  ~Trainer();

  // Trains up to options.steps, resuming from options.checkpoint_dir when it holds a checkpoint.
  absl::Status Run(const WindowSampler& sampler, TrainingObjective& objective,
                   const TrainerCallbacks& callbacks = {});
  int64_t step() const { return step_; }
  // True when the last Run ended early because evaluation stopped improving.
  bool stopped_early() const { return stopped_early_; }
  double best_eval_loss() const { return best_eval_; }
  // The step a checkpoint in `dir` was taken at, or nullopt.
  static std::optional<int64_t> CheckpointStep(const std::string& dir);

 private:
  absl::Status SaveCheckpoint(const TrainingObjective& objective);
  absl::Status LoadCheckpoint(TrainingObjective& objective);

  LlamaModel* model_;
  TrainerOptions options_;
  DataParallel* parallel_;
  struct OptimizerState;
  std::unique_ptr<OptimizerState> optimizer_;
  int64_t step_ = 0;
  double best_eval_ = 0.0;
  int64_t evals_since_best_ = -1;  // -1: no evaluation yet
  bool stopped_early_ = false;
};

}  // namespace squeeze
