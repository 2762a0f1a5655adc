#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "common/model/fused_ops_cuda.h"

namespace squeeze {
namespace {

constexpr int kNormThreads = 256;
constexpr int kMaxColsPerThread = kFusedRmsNormMaxHidden / kNormThreads;
constexpr int64_t kRowsPerBlock = 8;

__device__ __forceinline__ float BlockSum(float v) {
  __shared__ float partial[kNormThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // `partial` may still be read from the previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float total = 0.f;
  for (int i = 0; i < kNormThreads / 32; ++i) total += partial[i];
  return total;
}

// Rounds as the reference does: the normalised row is cast to the input dtype before the weight
// multiplies it.
template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    RmsNormForwardKernel(const T* __restrict__ x, const T* __restrict__ w, int64_t hidden,
                         float eps, T* __restrict__ y, float* __restrict__ rstd) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * hidden;
  T* yr = y + row * hidden;
  float ss = 0.f;
  for (int64_t j = threadIdx.x; j < hidden; j += kNormThreads) {
    const float v = static_cast<float>(xr[j]);
    ss += v * v;
  }
  const float r = rsqrtf(BlockSum(ss) / static_cast<float>(hidden) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  for (int64_t j = threadIdx.x; j < hidden; j += kNormThreads) {
    const float n = static_cast<float>(static_cast<T>(static_cast<float>(xr[j]) * r));
    yr[j] = static_cast<T>(static_cast<float>(w[j]) * n);
  }
}

// dx = rstd * (g - n * mean(g * n)) with g = dy * w and n = x * rstd; dw = sum over rows of
// dy * n (n rounded to T, as the forward used it). A block takes kRowsPerBlock rows and keeps its
// columns' dw in registers.
template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    RmsNormBackwardKernel(const T* __restrict__ dy, const T* __restrict__ x,
                          const T* __restrict__ w, const float* __restrict__ rstd, int64_t rows,
                          int64_t hidden, T* __restrict__ dx, float* __restrict__ dw_partial) {
  float dw[kMaxColsPerThread], wv[kMaxColsPerThread], n[kMaxColsPerThread], g[kMaxColsPerThread];
#pragma unroll
  for (int c = 0; c < kMaxColsPerThread; ++c) {
    const int64_t j = threadIdx.x + static_cast<int64_t>(c) * kNormThreads;
    dw[c] = 0.f;
    wv[c] = j < hidden ? static_cast<float>(w[j]) : 0.f;
  }
  const int64_t first = blockIdx.x * kRowsPerBlock;
  const int64_t last = min(rows, first + kRowsPerBlock);
  for (int64_t row = first; row < last; ++row) {
    const float r = rstd[row];
    const T* xr = x + row * hidden;
    const T* dyr = dy + row * hidden;
    float dot = 0.f;
#pragma unroll
    for (int c = 0; c < kMaxColsPerThread; ++c) {
      const int64_t j = threadIdx.x + static_cast<int64_t>(c) * kNormThreads;
      n[c] = 0.f;
      g[c] = 0.f;
      if (j < hidden) {
        const float d = static_cast<float>(dyr[j]);
        n[c] = static_cast<float>(xr[j]) * r;
        g[c] = d * wv[c];
        dw[c] += d * static_cast<float>(static_cast<T>(n[c]));
        dot += g[c] * n[c];
      }
    }
    const float mean = BlockSum(dot) / static_cast<float>(hidden);
    T* dxr = dx + row * hidden;
#pragma unroll
    for (int c = 0; c < kMaxColsPerThread; ++c) {
      const int64_t j = threadIdx.x + static_cast<int64_t>(c) * kNormThreads;
      if (j < hidden) dxr[j] = static_cast<T>(r * (g[c] - n[c] * mean));
    }
  }
#pragma unroll
  for (int c = 0; c < kMaxColsPerThread; ++c) {
    const int64_t j = threadIdx.x + static_cast<int64_t>(c) * kNormThreads;
    if (j < hidden) dw_partial[blockIdx.x * hidden + j] = dw[c];
  }
}

__device__ __forceinline__ float Sigmoid(float v) { return 1.f / (1.f + __expf(-v)); }

// silu(g) is rounded to T before it multiplies up, as the two reference ops round.
template <typename T>
__global__ void SwiGluForwardKernel(const T* __restrict__ gate, const T* __restrict__ up, int64_t n,
                                    T* __restrict__ out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = static_cast<float>(gate[i]);
    const float s = static_cast<float>(static_cast<T>(g * Sigmoid(g)));
    out[i] = static_cast<T>(s * static_cast<float>(up[i]));
  }
}

template <typename T>
__global__ void SwiGluBackwardKernel(const T* __restrict__ dout, const T* __restrict__ gate,
                                     const T* __restrict__ up, int64_t n, T* __restrict__ dgate,
                                     T* __restrict__ dup) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float d = static_cast<float>(dout[i]), g = static_cast<float>(gate[i]);
    const float u = static_cast<float>(up[i]), sig = Sigmoid(g);
    const float s = static_cast<float>(static_cast<T>(g * sig));
    dup[i] = static_cast<T>(d * s);
    dgate[i] = static_cast<T>(d * u * sig * (1.f + g * (1.f - sig)));
  }
}

unsigned ElementwiseBlocks(int64_t n) {
  const int64_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 65535));
}

}  // namespace

void RmsNormForwardCuda(const at::Tensor& x, const at::Tensor& weight, double eps, at::Tensor& y,
                        at::Tensor& rstd) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = x.size(0), hidden = x.size(1);
  if (rows == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "RmsNormForward", [&] {
    RmsNormForwardKernel<scalar_t><<<static_cast<unsigned>(rows), kNormThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), hidden, static_cast<float>(eps),
        y.data_ptr<scalar_t>(), rstd.data_ptr<float>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

int64_t RmsNormBackwardBlocks(int64_t rows) { return (rows + kRowsPerBlock - 1) / kRowsPerBlock; }

void RmsNormBackwardCuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& weight,
                         const at::Tensor& rstd, at::Tensor& dx, at::Tensor& dweight_partial) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = x.size(0), hidden = x.size(1);
  if (rows == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, x.scalar_type(), "RmsNormBackward", [&] {
        RmsNormBackwardKernel<scalar_t>
            <<<static_cast<unsigned>(RmsNormBackwardBlocks(rows)), kNormThreads, 0, stream>>>(
                dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(),
                rstd.data_ptr<float>(), rows, hidden, dx.data_ptr<scalar_t>(),
                dweight_partial.data_ptr<float>());
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void SwiGluForwardCuda(const at::Tensor& gate, const at::Tensor& up, at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(gate.device());
  const int64_t n = gate.numel();
  if (n == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, gate.scalar_type(), "SwiGluForward", [&] {
        SwiGluForwardKernel<scalar_t><<<ElementwiseBlocks(n), 256, 0, stream>>>(
            gate.data_ptr<scalar_t>(), up.data_ptr<scalar_t>(), n, out.data_ptr<scalar_t>());
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void SwiGluBackwardCuda(const at::Tensor& dout, const at::Tensor& gate, const at::Tensor& up,
                        at::Tensor& dgate, at::Tensor& dup) {
  const c10::cuda::CUDAGuard guard(gate.device());
  const int64_t n = gate.numel();
  if (n == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, gate.scalar_type(), "SwiGluBackward", [&] {
        SwiGluBackwardKernel<scalar_t><<<ElementwiseBlocks(n), 256, 0, stream>>>(
            dout.data_ptr<scalar_t>(), gate.data_ptr<scalar_t>(), up.data_ptr<scalar_t>(), n,
            dgate.data_ptr<scalar_t>(), dup.data_ptr<scalar_t>());
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace squeeze
