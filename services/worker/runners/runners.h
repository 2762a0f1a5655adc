// The task runners this version ships, one file each beside this header; MakeRunners
// (registry.cc) lists them by kind. A new stage kind adds a class here, its file and a line there.
#pragma once

#include <string>

#include "common/model/llama_model.h"
#include "common/train/data_parallel.h"
#include "services/worker/runners/stage_io.h"
#include "services/worker/task_runner.h"

namespace squeeze::worker {

// Perplexity (overall and per category) on the evaluation files, size and throughput; with a
// baseline (the job's first evaluation) also retention, checked against the gate.
class EvaluateRunner : public TaskRunner {
 public:
  absl::StatusOr<TaskOutput> Run(TaskContext& context) override;
};

// Samples calibration windows (stratified by category) and records, for every linear layer of the
// uncompressed model, the Hessian proxy H = 2 X^T X / n, the per-channel input L2 norms (Wanda) and
// the activation absmax. The artifact is keyed by the digests of the model and the data and by the
// sampling parameters, so a later job with the same inputs reuses it instead of recomputing.
class CalibrateRunner : public TaskRunner {
 public:
  absl::StatusOr<TaskOutput> Run(TaskContext& context) override;
};

// Round-to-nearest quantization, one decoder layer at a time with a checkpoint after each, so a
// retried task resumes at the next layer.
class QuantizeRunner : public TaskRunner {
 public:
  absl::StatusOr<TaskOutput> Run(TaskContext& context) override;
};

// One-shot pruning of every linear layer of the input model: magnitude or Wanda scores (Wanda's
// input norms from the calibration windows), unstructured per row or 2:4. Writes the pruned
// model (same shapes, zeros in place) for the next stage, such as a distill stage that recovers
// it from the original teacher with keep_sparsity.
class PruneRunner : public TaskRunner {
 public:
  absl::StatusOr<TaskOutput> Run(TaskContext& context) override;
};

// Knowledge distillation of the input model (the teacher) into a student cut from its layers or
// built from a config; data parallel over the gang's ranks; checkpoints in the store, from which
// a retried task resumes.
class DistillRunner : public TaskRunner {
 public:
  absl::StatusOr<TaskOutput> Run(TaskContext& context) override;
};

}  // namespace squeeze::worker
