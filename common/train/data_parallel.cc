#include "common/train/data_parallel.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#if __has_include(<gloo/config.h>)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#define SQUEEZE_HAS_GLOO 1
#endif
#ifdef SQUEEZE_HAS_CUDA
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace squeeze {

// The two collectives training needs, over a concrete process group type: libtorch 1.x derives
// the backends from ProcessGroup, 2.x from Backend, with the same methods.
class DataParallel::Collectives {
 public:
  virtual ~Collectives() = default;
  virtual c10::intrusive_ptr<c10d::Work> AllReduce(std::vector<at::Tensor>& tensors,
                                                   c10d::ReduceOp op) = 0;
  virtual c10::intrusive_ptr<c10d::Work> Broadcast(std::vector<at::Tensor>& tensors, int root) = 0;
};

namespace {

template <typename Group>
class CollectivesOf : public DataParallel::Collectives {
 public:
  explicit CollectivesOf(c10::intrusive_ptr<Group> group) : group_(std::move(group)) {}
  c10::intrusive_ptr<c10d::Work> AllReduce(std::vector<at::Tensor>& tensors,
                                           c10d::ReduceOp op) override {
    c10d::AllreduceOptions options;
    options.reduceOp = op;
    return group_->allreduce(tensors, options);
  }
  c10::intrusive_ptr<c10d::Work> Broadcast(std::vector<at::Tensor>& tensors, int root) override {
    c10d::BroadcastOptions options;
    options.rootRank = root;
    return group_->broadcast(tensors, options);
  }

 private:
  c10::intrusive_ptr<Group> group_;
};

}  // namespace

struct DataParallel::Bucket {
  std::vector<size_t> params;  // indices into params_
  std::vector<int64_t> offsets;
  at::Tensor flat;
  std::vector<bool> ready;
  size_t num_ready = 0;
  c10::intrusive_ptr<c10d::Work> work;
};

DataParallel::DataParallel(c10::intrusive_ptr<c10d::Store> store,
                           std::unique_ptr<Collectives> collectives, int rank, int world_size,
                           at::Device device)
    : store_(std::move(store)),
      collectives_(std::move(collectives)),
      rank_(rank),
      world_size_(world_size),
      device_(device) {}

DataParallel::~DataParallel() = default;

bool DataParallel::HasGloo() {
#ifdef SQUEEZE_HAS_GLOO
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::unique_ptr<DataParallel>> DataParallel::Connect(
    const std::string& rendezvous, int rank, int world_size, at::Device device,
    std::chrono::milliseconds timeout) {
  const size_t colon = rendezvous.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(rendezvous.substr(colon + 1), &port) ||
      port == 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous \"", rendezvous, "\": expected host:port"));
  }
  if (rank < 0 || world_size < 1 || rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " is outside a world of ", world_size));
  }
  const std::string host = rendezvous.substr(0, colon);
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(port);
    options.isServer = rank == 0;
    options.numWorkers = world_size;
    options.waitWorkers = true;
    options.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(host, options);
    std::unique_ptr<Collectives> collectives;
    if (device.is_cuda()) {
#ifdef SQUEEZE_HAS_CUDA
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      collectives = std::make_unique<CollectivesOf<c10d::ProcessGroupNCCL>>(
          c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world_size, nccl_options));
#else
      return absl::FailedPreconditionError("this build has no CUDA, so no NCCL");
#endif
    } else {
#ifdef SQUEEZE_HAS_GLOO
      auto gloo_options = c10d::ProcessGroupGloo::Options::create(timeout);
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
      collectives = std::make_unique<CollectivesOf<c10d::ProcessGroupGloo>>(
          c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, gloo_options));
#else
      return absl::FailedPreconditionError("this build has no Gloo for CPU ranks");
#endif
    }
    return std::unique_ptr<DataParallel>(
        new DataParallel(std::move(store), std::move(collectives), rank, world_size, device));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("rank ", rank, " of ", world_size,
                                               ": rendezvous at ", rendezvous, ": ", e.what()));
  }
}

absl::Status DataParallel::Broadcast(const std::vector<at::Tensor>& tensors, int root) {
  try {
    c10::NoGradGuard no_grad;
    for (const at::Tensor& t : tensors) {
      std::vector<at::Tensor> one = {t.detach()};
      collectives_->Broadcast(one, root)->wait();
    }
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("broadcast from rank ", root, ": ", e.what()));
  }
  return absl::OkStatus();
}

absl::Status DataParallel::AllReduceSum(const at::Tensor& tensor) {
  try {
    c10::NoGradGuard no_grad;
    std::vector<at::Tensor> one = {tensor.detach()};
    collectives_->AllReduce(one, c10d::ReduceOp::SUM)->wait();
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("all-reduce: ", e.what()));
  }
  return absl::OkStatus();
}

double DataParallel::AllReduceMean(double value) {
  std::vector<at::Tensor> t = {at::full({1}, value, at::TensorOptions(device_).dtype(at::kDouble))};
  collectives_->AllReduce(t, c10d::ReduceOp::SUM)->wait();
  return t[0].item<double>() / world_size_;
}

double DataParallel::AllReduceMax(double value) {
  std::vector<at::Tensor> t = {at::full({1}, value, at::TensorOptions(device_).dtype(at::kDouble))};
  collectives_->AllReduce(t, c10d::ReduceOp::MAX)->wait();
  return t[0].item<double>();
}

void DataParallel::Attach(const std::vector<at::Tensor>& params, int64_t bucket_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  params_ = params;
  buckets_.clear();
  // Reverse order: the last layers' gradients come first in the backward pass.
  auto bucket = std::make_unique<Bucket>();
  int64_t bytes = 0;
  for (size_t i = params_.size(); i-- > 0;) {
    const at::Tensor& p = params_[i];
    if (!bucket->params.empty() &&
        (bytes + static_cast<int64_t>(p.numel() * p.element_size()) > bucket_bytes ||
         p.scalar_type() != params_[bucket->params.front()].scalar_type())) {
      buckets_.push_back(std::move(bucket));
      bucket = std::make_unique<Bucket>();
      bytes = 0;
    }
    bucket->params.push_back(i);
    bytes += p.numel() * p.element_size();
  }
  if (!bucket->params.empty()) buckets_.push_back(std::move(bucket));
  for (size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& bk = *buckets_[b];
    int64_t numel = 0;
    for (size_t idx : bk.params) {
      bk.offsets.push_back(numel);
      numel += params_[idx].numel();
    }
    bk.flat = at::zeros({numel}, params_[bk.params.front()].options().requires_grad(false));
    bk.ready.assign(bk.params.size(), false);
    for (size_t slot = 0; slot < bk.params.size(); ++slot) {
      params_[bk.params[slot]].register_hook([this, b, slot](const at::Tensor& grad) {
        OnGradient(b, slot, grad);
        return grad;
      });
    }
  }
}

void DataParallel::ArmForNextBackward() {
  std::lock_guard<std::mutex> lock(mu_);
  armed_ = true;
}

void DataParallel::OnGradient(size_t b, size_t slot, const at::Tensor& grad) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!armed_) return;  // an earlier micro-batch: gradients just accumulate locally
  Bucket& bucket = *buckets_[b];
  if (bucket.ready[slot]) return;
  const at::Tensor& p = params_[bucket.params[slot]];
  c10::NoGradGuard no_grad;
  // The hook runs before this backward's gradient is added to .grad: the full gradient of the
  // step is what earlier micro-batches accumulated plus this one.
  at::Tensor full = p.grad().defined() ? p.grad() + grad : grad;
  bucket.flat.narrow(0, bucket.offsets[slot], p.numel()).copy_(full.reshape({-1}));
  bucket.ready[slot] = true;
  ++bucket.num_ready;
  while (next_launch_ < buckets_.size() &&
         buckets_[next_launch_]->num_ready == buckets_[next_launch_]->params.size()) {
    Launch(*buckets_[next_launch_++]);
  }
}

void DataParallel::Launch(Bucket& bucket) {
  std::vector<at::Tensor> tensors = {bucket.flat};
  bucket.work = collectives_->AllReduce(tensors, c10d::ReduceOp::SUM);
}

absl::Status DataParallel::FinishGradients() {
  std::lock_guard<std::mutex> lock(mu_);
  c10::NoGradGuard no_grad;
  try {
    // Parameters that got no gradient this step contribute what they hold (or zeros).
    for (; next_launch_ < buckets_.size(); ++next_launch_) {
      Bucket& bucket = *buckets_[next_launch_];
      for (size_t slot = 0; slot < bucket.params.size(); ++slot) {
        if (bucket.ready[slot]) continue;
        const at::Tensor& p = params_[bucket.params[slot]];
        at::Tensor view = bucket.flat.narrow(0, bucket.offsets[slot], p.numel());
        if (p.grad().defined()) {
          view.copy_(p.grad().reshape({-1}));
        } else {
          view.zero_();
        }
      }
      Launch(bucket);
    }
    for (auto& bucket : buckets_) {
      bucket->work->wait();
      bucket->flat.div_(world_size_);
      for (size_t slot = 0; slot < bucket->params.size(); ++slot) {
        at::Tensor& p = params_[bucket->params[slot]];
        at::Tensor mean = bucket->flat.narrow(0, bucket->offsets[slot], p.numel()).view_as(p);
        if (p.grad().defined()) {
          p.mutable_grad().copy_(mean);
        } else {
          p.mutable_grad() = mean.clone();
        }
      }
      bucket->work.reset();
      bucket->ready.assign(bucket->params.size(), false);
      bucket->num_ready = 0;
    }
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("gradient all-reduce: ", e.what()));
  }
  next_launch_ = 0;
  armed_ = false;
  return absl::OkStatus();
}

}  // namespace squeeze
