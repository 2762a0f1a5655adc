#include "common/compress/gptq_checkpoint.h"

#include <c10/core/GradMode.h>

#include <numeric>

#include "absl/strings/str_cat.h"

namespace squeeze {
namespace {

// Packs the rows of `values` ([n, m] small non-negative ints) along dim 0 into int32 words:
// value (i, j) occupies bits [i * bits, (i + 1) * bits) of column j's bit stream.
at::Tensor PackRows(const at::Tensor& values, int bits) {
  const int64_t n = values.size(0), m = values.size(1);
  const int64_t words = n * bits / 32;
  at::Tensor v = values.to(at::kLong).contiguous();
  std::vector<uint32_t> out(static_cast<size_t>(words * m), 0);
  auto a = v.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t bit = i * bits, word = bit / 32, shift = bit % 32;
    for (int64_t j = 0; j < m; ++j) {
      const uint64_t x = static_cast<uint64_t>(a[i][j]) << shift;
      out[word * m + j] |= static_cast<uint32_t>(x);
      if (shift + bits > 32) out[(word + 1) * m + j] |= static_cast<uint32_t>(x >> 32);
    }
  }
  return at::from_blob(out.data(), {words, m}, at::kInt).clone();
}

at::Tensor UnpackRows(const at::Tensor& packed, int bits, int64_t n) {
  const int64_t m = packed.size(1);
  at::Tensor p = packed.to(at::kInt).contiguous();
  const uint32_t* w = reinterpret_cast<const uint32_t*>(p.data_ptr<int32_t>());
  const uint64_t mask = (1u << bits) - 1;
  at::Tensor out = at::zeros({n, m}, at::kLong);
  auto a = out.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t bit = i * bits, word = bit / 32, shift = bit % 32;
    for (int64_t j = 0; j < m; ++j) {
      uint64_t x = w[word * m + j];
      if (shift + bits > 32) x |= static_cast<uint64_t>(w[(word + 1) * m + j]) << 32;
      a[i][j] = static_cast<int64_t>((x >> shift) & mask);
    }
  }
  return out;
}

// PackRows for widths that divide 32 (2, 4, 8 bits), as tensor operations on the values' device:
// word w of a column holds values [w * k, (w + 1) * k), value i shifted by (i % k) * bits.
at::Tensor PackRowsVectorized(const at::Tensor& values, int bits) {
  const int64_t n = values.size(0), m = values.size(1), k = 32 / bits;
  const at::Tensor shifts =
      (at::arange(k, values.options().dtype(at::kLong)) * bits).view({1, k, 1});
  const at::Tensor words =
      at::bitwise_left_shift(values.to(at::kLong).reshape({n / k, k, m}), shifts).sum(1);
  // Words are below 2^32; their low 32 bits, as int32, are what the format stores.
  return at::where(words >= (int64_t{1} << 31), words - (int64_t{1} << 32), words).to(at::kInt);
}

at::Tensor PackRowsAnyWidth(const at::Tensor& values, int bits) {
  if (32 % bits == 0) return PackRowsVectorized(values, bits);
  return PackRows(values.to(at::kCPU), bits);
}

}  // namespace

absl::StatusOr<PackedLinear> PackGptqLinear(const QuantizedWeight& q, GptqFormat format) {
  const int bits = q.spec.bits;
  const int64_t out = q.codes.size(0), in = q.codes.size(1);
  if ((in * bits) % 32 != 0 || (out * bits) % 32 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ", out, "x", in, " layer does not pack into 32-bit words at ", bits,
                     " bits (need in and out multiples of ", 32 / std::gcd(32, bits), ")"));
  }
  const int64_t group = q.spec.group_size == -1 ? in : q.spec.group_size;
  PackedLinear p;
  // On the codes' device (the GPU during a compression job) for 2, 4 and 8 bits.
  p.qweight = PackRowsAnyWidth(q.codes.t(), bits);       // [in, out] -> [in * bits / 32, out]
  at::Tensor zeros = q.zeros.t().round().to(at::kLong);  // [groups, out]
  if (format == GptqFormat::kV1)
    zeros = (zeros - 1).bitwise_and((1 << bits) - 1);  // 0 wraps, as loaders expect
  // Pack along outputs: [groups, out * bits / 32].
  p.qzeros = PackRowsAnyWidth(zeros.t(), bits).t().contiguous();
  p.scales = q.scales.t().to(at::kHalf).contiguous();
  p.g_idx = q.g_idx.defined()
                ? q.g_idx.to(at::kInt)
                : at::div(at::arange(in, q.codes.options().dtype(at::kLong)), group, "floor")
                      .to(at::kInt);
  return p;
}

absl::StatusOr<QuantizedWeight> UnpackGptqLinear(const PackedLinear& p, int bits,
                                                 int64_t group_size, GptqFormat format) {
  const int64_t in = p.qweight.size(0) * 32 / bits, out = p.qweight.size(1);
  const int64_t groups = p.scales.size(0);
  if (p.scales.size(1) != out || p.qzeros.size(0) != groups ||
      p.qzeros.size(1) * 32 / bits != out || p.g_idx.numel() != in) {
    return absl::InvalidArgumentError("qweight, qzeros, scales and g_idx shapes disagree");
  }
  QuantizedWeight q;
  q.spec = {bits, group_size, false};
  q.codes = UnpackRows(p.qweight, bits, in).t().to(at::kByte).contiguous();  // [out, in]
  at::Tensor zeros = UnpackRows(p.qzeros.t().contiguous(), bits, out);       // [out, groups]
  // v1 stores zero - 1 wrapped to `bits`, so a stored all-ones field is the zero point 0.
  if (format == GptqFormat::kV1) zeros = (zeros + 1).bitwise_and((1 << bits) - 1);
  q.zeros = zeros.to(at::kFloat);
  q.scales = p.scales.to(at::kFloat).t().contiguous();
  q.g_idx = p.g_idx.to(at::kInt);
  if (q.g_idx.max().item<int>() >= groups || q.g_idx.min().item<int>() < 0) {
    return absl::InvalidArgumentError("g_idx: names a group outside scales");
  }
  return q;
}

}  // namespace squeeze
