#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <cfloat>

#include "common/train/distill_loss_cuda.h"

namespace squeeze {
namespace {

constexpr int kThreads = 512;

// Softmax statistics of one row, kept online (rescaled whenever a larger maximum appears):
// student max and normaliser at temperature 1 and T, teacher max and normaliser at T, and
// a = sum over tokens of exp((t - mt) / T) * (t - s) / T, which gives the KL without a second
// look at the teacher.
struct RowStats {
  float ms, zs, zst, mt, zt, a;
};

__device__ __forceinline__ RowStats Identity() { return {-FLT_MAX, 0.f, 0.f, -FLT_MAX, 0.f, 0.f}; }

__device__ __forceinline__ void Merge(RowStats& x, const RowStats& y, float inv_t) {
  const float ms = fmaxf(x.ms, y.ms);
  const float dx = x.ms - ms, dy = y.ms - ms;
  x.zs = x.zs * __expf(dx) + y.zs * __expf(dy);
  x.zst = x.zst * __expf(dx * inv_t) + y.zst * __expf(dy * inv_t);
  x.ms = ms;
  const float mt = fmaxf(x.mt, y.mt);
  const float gx = __expf((x.mt - mt) * inv_t), gy = __expf((y.mt - mt) * inv_t);
  x.zt = x.zt * gx + y.zt * gy;
  x.a = x.a * gx + y.a * gy;
  x.mt = mt;
}

__device__ __forceinline__ RowStats ShuffleDown(const RowStats& v, int offset) {
  RowStats o;
  o.ms = __shfl_down_sync(0xffffffffu, v.ms, offset);
  o.zs = __shfl_down_sync(0xffffffffu, v.zs, offset);
  o.zst = __shfl_down_sync(0xffffffffu, v.zst, offset);
  o.mt = __shfl_down_sync(0xffffffffu, v.mt, offset);
  o.zt = __shfl_down_sync(0xffffffffu, v.zt, offset);
  o.a = __shfl_down_sync(0xffffffffu, v.a, offset);
  return o;
}

template <typename scalar_t, bool kSoft>
__global__ void __launch_bounds__(kThreads)
    DistillLossKernel(const scalar_t* __restrict__ student, const scalar_t* __restrict__ teacher,
                      const int64_t* __restrict__ labels, int64_t vocab, float temperature,
                      float alpha, float grad_scale, scalar_t* __restrict__ grad,
                      float* __restrict__ ce_rows, float* __restrict__ kd_rows) {
  const int64_t row = blockIdx.x;
  const scalar_t* s = student + row * vocab;
  const scalar_t* t = kSoft ? teacher + row * vocab : nullptr;
  const float inv_t = 1.f / temperature;

  // Pass 1: statistics.
  RowStats st = Identity();
  for (int64_t j = threadIdx.x; j < vocab; j += kThreads) {
    const float sv = static_cast<float>(s[j]);
    if (sv > st.ms) {
      const float d = st.ms - sv;
      st.zs = st.zs * __expf(d) + 1.f;
      st.zst = st.zst * __expf(d * inv_t) + 1.f;
      st.ms = sv;
    } else {
      const float d = sv - st.ms;
      st.zs += __expf(d);
      st.zst += __expf(d * inv_t);
    }
    if (kSoft) {
      const float tv = static_cast<float>(t[j]);
      const float diff = (tv - sv) * inv_t;
      if (tv > st.mt) {
        const float f = __expf((st.mt - tv) * inv_t);
        st.zt = st.zt * f + 1.f;
        st.a = st.a * f + diff;
        st.mt = tv;
      } else {
        const float e = __expf((tv - st.mt) * inv_t);
        st.zt += e;
        st.a += e * diff;
      }
    }
  }
  __shared__ RowStats partial[kThreads / 32];
  for (int offset = 16; offset > 0; offset >>= 1) Merge(st, ShuffleDown(st, offset), inv_t);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) partial[warp] = st;
  __syncthreads();
  if (warp == 0) {
    st = lane < kThreads / 32 ? partial[lane] : Identity();
    for (int offset = 16; offset > 0; offset >>= 1) Merge(st, ShuffleDown(st, offset), inv_t);
    if (lane == 0) partial[0] = st;
  }
  __syncthreads();
  st = partial[0];
  const float lse_s = st.ms + logf(st.zs);
  const float lse_st = st.ms * inv_t + logf(st.zst);
  const float lse_t = kSoft ? st.mt * inv_t + logf(st.zt) : 0.f;
  const int64_t label = labels[row];
  const bool label_ok = label >= 0 && label < vocab;
  if (threadIdx.x == 0) {
    ce_rows[row] = label_ok ? lse_s - static_cast<float>(s[label]) : NAN;
    // T^2 * sum p_t (log p_t - log q) = T^2 * (a / zt - lse_t + lse_st), as sum p_t = 1.
    kd_rows[row] = kSoft ? temperature * temperature * (st.a / st.zt - lse_t + lse_st) : 0.f;
  }

  // Pass 2: the gradient.
  const float w_hard = (1.f - alpha) * grad_scale, w_soft = alpha * temperature * grad_scale;
  scalar_t* g = grad + row * vocab;
  for (int64_t j = threadIdx.x; j < vocab; j += kThreads) {
    const float sv = static_cast<float>(s[j]);
    float v = w_hard * __expf(sv - lse_s);
    if (kSoft) {
      const float tv = static_cast<float>(t[j]);
      v += w_soft * (__expf(sv * inv_t - lse_st) - __expf(tv * inv_t - lse_t));
    }
    if (j == label) v -= w_hard;
    g[j] = static_cast<scalar_t>(v);
  }
}

}  // namespace

void DistillLossRowsCuda(const at::Tensor& student, const at::Tensor& teacher,
                         const at::Tensor& labels, double temperature, double alpha,
                         double grad_scale, at::Tensor& grad, at::Tensor& ce_rows,
                         at::Tensor& kd_rows) {
  const c10::cuda::CUDAGuard guard(student.device());
  const int64_t rows = student.size(0), vocab = student.size(1);
  if (rows == 0) return;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, student.scalar_type(), "DistillLossRowsCuda", [&] {
        const scalar_t* t = alpha > 0 ? teacher.data_ptr<scalar_t>() : nullptr;
        auto launch =
            alpha > 0 ? DistillLossKernel<scalar_t, true> : DistillLossKernel<scalar_t, false>;
        launch<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
            student.data_ptr<scalar_t>(), t, labels.data_ptr<int64_t>(), vocab,
            static_cast<float>(temperature), static_cast<float>(alpha),
            static_cast<float>(grad_scale), grad.data_ptr<scalar_t>(), ce_rows.data_ptr<float>(),
            kd_rows.data_ptr<float>());
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace squeeze
