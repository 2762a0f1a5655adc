// The teacher's top-k logits for every micro-batch one rank of a distill run will see, computed
// once and kept in the store, so that later runs over the same model, data and batch plan skip
// the teacher's forward passes (and the teacher's memory) entirely.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/model/llama_model.h"
#include "common/train/distill.h"
#include "common/train/trainer.h"

namespace squeeze {

// Which micro-batches a rank sees: everything the cache depends on besides model and data.
struct TeacherLogitsPlan {
  int64_t steps = 0;
  int64_t grad_accum = 1;
  int64_t batch_size = 0;  // global, all ranks and micro-batches
  int64_t seq_len = 0;
  int64_t world_size = 1;
  int64_t rank = 0;
  uint64_t seed = 0;
  int64_t top_k = 0;

  int64_t rows() const { return batch_size / grad_accum / world_size; }
};

class TeacherLogitsCache {
 public:
  // The cache's identity: the digests of the teacher and of the data, and the plan.
  static std::string Key(const std::string& model_digest, const std::string& data_digest,
                         const TeacherLogitsPlan& plan);

  // Runs the teacher over every micro-batch of the plan as `sampler` draws it. `on_step(step)`
  // is called before each step; an error from it (cancellation) stops the computation.
  static absl::StatusOr<TeacherLogitsCache> Compute(
      const LlamaModel& teacher, const WindowSampler& sampler, const TeacherLogitsPlan& plan,
      const std::function<absl::Status(int64_t step)>& on_step);

  // One safetensors file: "values" (bfloat16) and "indices" (int32), [steps, micro, rows, seq, k].
  absl::Status Write(const std::string& path) const;
  // DataLoss naming `path` when the file does not hold the plan's shapes.
  static absl::StatusOr<TeacherLogitsCache> Read(const std::string& path,
                                                 const TeacherLogitsPlan& plan);

  // The cached outputs of micro-batch `micro` of `step`.
  TopKLogits At(int64_t step, int64_t micro) const {
    return TopKLogits{values_[step][micro], indices_[step][micro]};
  }

 private:
  at::Tensor values_;
  at::Tensor indices_;
};

}  // namespace squeeze
