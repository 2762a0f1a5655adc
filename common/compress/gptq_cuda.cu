#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cublas_v2.h>

#include "common/compress/gptq_cuda.h"

namespace squeeze {
namespace {

constexpr int kBlock = static_cast<int>(kGptqCudaBlock);
constexpr int kLanes = 4;  // threads sharing one row's columns
constexpr int kRowsPerCta = 32;
constexpr int kThreads = kRowsPerCta * kLanes;
constexpr int kPerLane = kBlock / kLanes;  // columns (registers) per thread
constexpr int kSharedBytes = kBlock * kBlock * static_cast<int>(sizeof(float));

// Column j of the block lives in lane j % kLanes, register j / kLanes, so that the loop over i,
// fully unrolled, indexes registers with constants. The owner lane of column i quantizes it and
// hands the scaled error to the row's other lanes with one shuffle; each lane then updates its
// later columns with the inverse Hessian's row i, read from shared memory (a broadcast: every row
// reads the same element).
__global__ void __launch_bounds__(kThreads)
    GptqBlockKernel(float* __restrict__ w, int64_t ldw, const float* __restrict__ hinv, int64_t ldh,
                    int64_t rows, int64_t i1, int count, const float* __restrict__ scales,
                    const float* __restrict__ zeros, int64_t groups,
                    const int* __restrict__ group_of, float maxq, uint8_t* __restrict__ codes,
                    int64_t ldc, float* __restrict__ err, float* __restrict__ losses,
                    bool* __restrict__ pruned, int prune_n, int prune_m, bool quantize) {
  extern __shared__ float hs[];
  for (int idx = threadIdx.x; idx < kBlock * kBlock; idx += kThreads) {
    const int r = idx / kBlock, c = idx % kBlock;
    hs[idx] = (r < count && c < count) ? hinv[(i1 + r) * ldh + i1 + c] : 0.f;
  }
  const int lane = threadIdx.x % kLanes;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerCta + threadIdx.x / kLanes;
  const bool active = row < rows;
  float wr[kPerLane];
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
    const int j = k * kLanes + lane;
    wr[k] = active && j < count ? w[row * ldw + i1 + j] : 0.f;
  }
  __syncthreads();
  const int base = (threadIdx.x & 31) & ~(kLanes - 1);
  float loss = 0.f;
#pragma unroll
  for (int i = 0; i < kBlock; ++i) {
    if (i >= count) break;  // the same for the whole block
    const int owner = i % kLanes, slot = i / kLanes;
    // SparseGPT's n:m mask for columns [i, i + m): the n least salient (w^2 / d^2, the weights as
    // they are now), ties to the lower column. m is 4 or 8, so each lane holds m / 4 of them.
    if (prune_m > 0 && i % prune_m == 0) {
      float mine[2];
      int cols_of[2];
      const int per_lane = prune_m / kLanes;
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        const int j = i + t * kLanes + lane;  // column of this lane's t-th value
        cols_of[t] = j;
        const int k = j / kLanes;
        float v = 0.f;
#pragma unroll
        for (int kk = 0; kk < kPerLane; ++kk) v = kk == k ? wr[kk] : v;
        const float d = j < kBlock ? hs[j * kBlock + j] : 1.f;
        mine[t] = t < per_lane ? v * v / (d * d) : 0.f;
      }
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        if (t >= per_lane) break;
        int rank = 0;
#pragma unroll
        for (int u = 0; u < 2; ++u) {
#pragma unroll
          for (int other = 0; other < kLanes; ++other) {
            const float theirs = __shfl_sync(0xffffffffu, mine[u], base + other);
            const int their_col = i + u * kLanes + other;
            if (u < per_lane && (theirs < mine[t] || (theirs == mine[t] && their_col < cols_of[t])))
              ++rank;
          }
        }
        if (active && cols_of[t] < count) pruned[row * ldw + i1 + cols_of[t]] = rank < prune_n;
      }
      __syncwarp();
    }
    float e = 0.f;
    if (lane == owner && active) {
      const int g = group_of[i1 + i];
      const float s = scales[row * groups + g], z = zeros[row * groups + g];
      const float wv = wr[slot];
      const bool cut = pruned != nullptr && pruned[row * ldw + i1 + i];
      // As ATen computes it: true division, round half to even, clamp; a pruned weight is the
      // zero point (exactly 0), and without quantization a kept weight stays as it is.
      float q = quantize ? fminf(fmaxf(rintf(wv / s) + z, 0.f), maxq) : 0.f;
      if (cut) q = z;
      const float kept = quantize ? s * (q - z) : (cut ? 0.f : wv);
      const float diff = wv - kept;
      const float d = hs[i * kBlock + i];
      loss += diff * diff / (d * d) / 2.f;
      e = diff / d;
      if (quantize) codes[row * ldc + i1 + i] = static_cast<uint8_t>(q);
      // SparseGPT needs the block's final weights (pruned, or kept as they are); only this thread
      // ever reads this element, and it did so before the loop.
      if (pruned != nullptr || !quantize) w[row * ldw + i1 + i] = kept;
      err[row * kBlock + i] = e;
    }
    e = __shfl_sync(0xffffffffu, e, base + owner);
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int j = k * kLanes + lane;
      if (j > i) wr[k] -= e * hs[i * kBlock + j];
    }
  }
  // The row's lanes hold the losses of their own columns.
  loss += __shfl_xor_sync(0xffffffffu, loss, 1);
  loss += __shfl_xor_sync(0xffffffffu, loss, 2);
  if (active && lane == 0) losses[row] += loss;
}

}  // namespace

void GptqSolveBlockCuda(const at::Tensor& w, const at::Tensor& hinv, int64_t i1, int64_t count,
                        const at::Tensor& scales, const at::Tensor& zeros,
                        const at::Tensor& group_of, double maxq, at::Tensor& codes, at::Tensor& err,
                        at::Tensor& losses, const SparseBlockOptions& sparse) {
  TORCH_CHECK(!sparse.pruned.defined() ||
                  (sparse.pruned.is_contiguous() && sparse.pruned.scalar_type() == at::kBool &&
                   sparse.pruned.sizes() == w.sizes()),
              "pruned: a contiguous bool tensor of w's shape expected");
  TORCH_CHECK(sparse.m == 0 || ((sparse.m == 4 || sparse.m == 8) && sparse.pruned.defined() &&
                                count % sparse.m == 0),
              "n:m: m must be 4 or 8, dividing the block, with a pruned tensor to write");
  TORCH_CHECK(sparse.quantize || sparse.pruned.defined(), "nothing to do without quantize");
  TORCH_CHECK(w.is_cuda() && w.scalar_type() == at::kFloat && w.is_contiguous(), "w");
  TORCH_CHECK(hinv.is_contiguous() && scales.is_contiguous() && zeros.is_contiguous() &&
                  (!sparse.quantize || codes.is_contiguous()) && err.is_contiguous() &&
                  group_of.is_contiguous(),
              "GptqSolveBlockCuda: contiguous tensors expected");
  TORCH_CHECK(count > 0 && count <= kBlock, "count");
  const c10::cuda::CUDAGuard guard(w.device());
  static const bool configured = [] {
    return cudaFuncSetAttribute(GptqBlockKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                kSharedBytes) == cudaSuccess;
  }();
  TORCH_CHECK(configured, "GptqBlockKernel: cannot reserve ", kSharedBytes,
              " bytes of shared memory");
  const int64_t rows = w.size(0);
  const dim3 grid(static_cast<unsigned>((rows + kRowsPerCta - 1) / kRowsPerCta));
  GptqBlockKernel<<<grid, kThreads, kSharedBytes, at::cuda::getCurrentCUDAStream()>>>(
      w.data_ptr<float>(), w.size(1), hinv.data_ptr<float>(), hinv.size(1), rows, i1,
      static_cast<int>(count), scales.data_ptr<float>(), zeros.data_ptr<float>(), scales.size(1),
      group_of.data_ptr<int>(), static_cast<float>(maxq),
      sparse.quantize ? codes.data_ptr<uint8_t>() : nullptr, sparse.quantize ? codes.size(1) : 0,
      err.data_ptr<float>(), losses.data_ptr<float>(),
      sparse.pruned.defined() ? sparse.pruned.data_ptr<bool>() : nullptr, sparse.n, sparse.m,
      sparse.quantize);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void AccumulateGramCuda(at::Tensor& h, const at::Tensor& x, double alpha, double beta) {
  TORCH_CHECK(h.is_cuda() && h.scalar_type() == at::kFloat && h.is_contiguous(), "h");
  TORCH_CHECK(x.is_cuda() && x.is_contiguous() && x.dim() == 2 &&
                  (x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf),
              "x: contiguous [m, n] bfloat16 or float16 expected");
  const c10::cuda::CUDAGuard guard(h.device());
  const int n = static_cast<int>(x.size(1)), m = static_cast<int>(x.size(0));
  const float a = static_cast<float>(alpha), b = static_cast<float>(beta);
  const cudaDataType type = x.scalar_type() == at::kBFloat16 ? CUDA_R_16BF : CUDA_R_16F;
  // Row-major x [m, n] is column-major x^T [n, m]; h = x^T (x^T)^T, symmetric either way.
  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();
  const cublasStatus_t s = cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, n, n, m, &a, x.data_ptr(),
                                        type, n, x.data_ptr(), type, n, &b, h.data_ptr<float>(),
                                        CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  TORCH_CHECK(s == CUBLAS_STATUS_SUCCESS, "cublasGemmEx (Hessian): status ", static_cast<int>(s));
}

}  // namespace squeeze
