// Data parallelism over c10d: one rank per GPU (per process on CPU), Gloo on CPU and NCCL on
// CUDA. Gradients are all-reduced in buckets that start as soon as autograd has produced every
// gradient of the bucket, so communication overlaps the rest of the backward pass; after
// Finish() every rank holds the mean gradient, so identical optimizers keep identical models.
#pragma once

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dist/collectives.h"

namespace c10d {
class Store;
}  // namespace c10d

namespace squeeze {

class DataParallel : public RankCollectives {
 public:
  // Joins the group whose rank 0 serves a TCP store at `rendezvous` ("host:port"; rank 0 listens
  // on that port). Waits up to `timeout` for every rank.
  static absl::StatusOr<std::unique_ptr<DataParallel>> Connect(const std::string& rendezvous,
                                                               int rank, int world_size,
                                                               at::Device device,
                                                               std::chrono::milliseconds timeout);
  ~DataParallel();
  // Whether this build can run CPU ranks (Gloo's headers were found at build time).
  static bool HasGloo();

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }

  // Overwrites `tensors` on every rank with rank 0's values.
  absl::Status Broadcast(const std::vector<at::Tensor>& tensors) { return Broadcast(tensors, 0); }
  absl::Status Broadcast(const std::vector<at::Tensor>& tensors, int root) override;
  absl::Status AllReduceSum(const at::Tensor& tensor) override;
  // The mean over ranks of `value` (a loss for the log), or the max (a stop flag).
  double AllReduceMean(double value);
  double AllReduceMax(double value);

  class Collectives;  // Gloo or NCCL, whichever base class this libtorch gives them

  // Registers gradient hooks on `params` (leaf tensors that require grad), grouped into buckets
  // of about `bucket_bytes`, in reverse order (the order backward produces them).
  void Attach(const std::vector<at::Tensor>& params, int64_t bucket_bytes = 25ll << 20);
  // The next backward pass is the last of an optimizer step: its hooks start the all-reduce of
  // the accumulated gradients.
  void ArmForNextBackward();
  // Waits for every bucket (starting any whose parameters got no gradient, as zeros) and leaves
  // the mean gradient in each parameter's .grad.
  absl::Status FinishGradients();

 private:
  struct Bucket;
  DataParallel(c10::intrusive_ptr<c10d::Store> store, std::unique_ptr<Collectives> collectives,
               int rank, int world_size, at::Device device);
  // Called by a parameter's hook with its full (accumulated) gradient.
  void OnGradient(size_t bucket, size_t slot, const at::Tensor& grad);
  void Launch(Bucket& bucket) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  c10::intrusive_ptr<c10d::Store> store_;
  std::unique_ptr<Collectives> collectives_;
  const int rank_;
  const int world_size_;
  const at::Device device_;
  std::vector<at::Tensor> params_;
  std::mutex mu_;  // autograd may run hooks on its own threads
  std::vector<std::unique_ptr<Bucket>> buckets_ ABSL_GUARDED_BY(mu_);
  bool armed_ ABSL_GUARDED_BY(mu_) = false;
  size_t next_launch_ ABSL_GUARDED_BY(mu_) = 0;  // buckets start in index order on every rank
};

}  // namespace squeeze
