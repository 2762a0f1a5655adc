// Host-to-GPU copies on a copy stream of their own (CUDA builds only), so that the next layer's
// weights move while the compute stream is still busy with this one.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <vector>

namespace squeeze {

class CopyStreamTransfer {
 public:
  // Starts copying `host` (pinned, for the copy to be asynchronous) to `device` as `dtype` on a
  // pooled copy stream of that device. May be called from any thread.
  static std::unique_ptr<CopyStreamTransfer> Start(std::vector<at::Tensor> host, at::Device device,
                                                   at::ScalarType dtype);
  virtual ~CopyStreamTransfer() = default;
  // Makes the calling thread's current stream wait (on the GPU, not the host) for the copies and
  // returns the device tensors, in `host` order. They are marked as used by that stream, so the
  // caching allocator does not hand their memory to the copy stream while kernels still read it.
  virtual std::vector<at::Tensor> Finish() = 0;
};

}  // namespace squeeze
