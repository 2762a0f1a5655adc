// The task runners this version ships.
#pragma once

#include "services/worker/task_runner.h"

namespace squeeze::worker {

// Perplexity (overall and per category) on the evaluation files, size and throughput; with a
// baseline (the job's first evaluation) also retention, checked against the gate.
class EvaluateRunner : public TaskRunner {
 public:
  absl::StatusOr<TaskOutput> Run(TaskContext& context) override;
};

// Round-to-nearest quantization, one decoder layer at a time with a checkpoint after each, so a
// retried task resumes at the next layer.
class QuantizeRunner : public TaskRunner {
 public:
  absl::StatusOr<TaskOutput> Run(TaskContext& context) override;
};

}  // namespace squeeze::worker
