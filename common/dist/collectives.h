// The collective operations that a computation spread over ranks (one per GPU, or per process
// on CPU) needs, whatever carries them: DataParallel implements them over c10d (Gloo on CPU, NCCL
// on CUDA). Code that only needs these (a multi-rank quantization) depends on this header alone.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "absl/status/status.h"

namespace squeeze {

class RankCollectives {
 public:
  virtual ~RankCollectives() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Sums `tensor` over ranks, in place, on every rank.
  virtual absl::Status AllReduceSum(const at::Tensor& tensor) = 0;
  // Overwrites `tensors` on every rank with rank `root`'s (same shapes and dtypes everywhere).
  virtual absl::Status Broadcast(const std::vector<at::Tensor>& tensors, int root) = 0;
};

}  // namespace squeeze
