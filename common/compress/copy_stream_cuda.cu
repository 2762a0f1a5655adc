#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/compress/copy_stream_cuda.h"

namespace squeeze {
namespace {

class CudaCopyStreamTransfer : public CopyStreamTransfer {
 public:
  CudaCopyStreamTransfer(std::vector<at::Tensor> host, at::Device device, at::ScalarType dtype)
      : host_(std::move(host)) {
    c10::cuda::CUDAGuard device_guard(device);
    c10::cuda::CUDAStream copy = c10::cuda::getStreamFromPool(/*isHighPriority=*/false);
    c10::cuda::CUDAStreamGuard stream_guard(copy);
    device_.reserve(host_.size());
    for (const at::Tensor& t : host_) device_.push_back(t.to(device, dtype, /*non_blocking=*/true));
    done_.record(copy);
  }

  std::vector<at::Tensor> Finish() override {
    const c10::cuda::CUDAStream compute = c10::cuda::getCurrentCUDAStream(done_.device_index());
    done_.block(compute);
    for (at::Tensor& t : device_) t.record_stream(compute);
    // The pinned sources may go: the host allocator keeps their blocks until the copies end.
    host_.clear();
    return std::move(device_);
  }

 private:
  std::vector<at::Tensor> host_;
  std::vector<at::Tensor> device_;
  at::cuda::CUDAEvent done_;
};

}  // namespace

std::unique_ptr<CopyStreamTransfer> CopyStreamTransfer::Start(std::vector<at::Tensor> host,
                                                              at::Device device,
                                                              at::ScalarType dtype) {
  return std::make_unique<CudaCopyStreamTransfer>(std::move(host), device, dtype);
}

}  // namespace squeeze
