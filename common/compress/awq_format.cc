#include "common/compress/awq_format.h"

#include "absl/strings/str_cat.h"

namespace squeeze {
namespace {

constexpr int64_t kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};  // nibble i holds column kOrder[i]

// [rows, cols] integers in 0..15 -> [rows, cols / 8] int32.
at::Tensor PackRows(const at::Tensor& values) {
  const int64_t rows = values.size(0), cols = values.size(1);
  const at::Tensor v = values.to(at::kInt).view({rows, cols / 8, 8});
  at::Tensor packed = at::zeros({rows, cols / 8}, v.options());
  for (int64_t i = 0; i < 8; ++i)
    packed = packed.bitwise_or(v.select(2, kOrder[i]).bitwise_left_shift(4 * i));
  return packed;
}

// The inverse: [rows, packed] int32 -> [rows, packed * 8] int32 in 0..15.
at::Tensor UnpackRows(const at::Tensor& packed) {
  const int64_t rows = packed.size(0), cols = packed.size(1) * 8;
  at::Tensor out = at::empty({rows, cols / 8, 8}, packed.options().dtype(at::kInt));
  for (int64_t i = 0; i < 8; ++i) {
    out.select(2, kOrder[i]).copy_(packed.bitwise_right_shift(4 * i).bitwise_and(0xF));
  }
  return out.view({rows, cols});
}

}  // namespace

absl::StatusOr<AwqGemmLinear> PackAwqGemm(const QuantizedWeight& q) {
  if (q.spec.bits != 4)
    return absl::InvalidArgumentError(
        absl::StrCat("awq gemm layout: bits must be 4, got ", q.spec.bits));
  const int64_t out = q.codes.size(0), in = q.codes.size(1);
  // A g_idx that only spells out runs of input columns (what the sequential quantizer records
  // without act_order) is the layout's own order; any other order cannot be stored.
  if (q.g_idx.defined()) {
    const int64_t group = q.spec.group_size == -1 ? in : q.spec.group_size;
    const at::Tensor runs =
        at::div(at::arange(in, q.g_idx.options().dtype(at::kLong)), group, "floor");
    if (!at::equal(q.g_idx.to(at::kLong), runs))
      return absl::InvalidArgumentError("awq gemm layout: act_order (g_idx) cannot be stored");
  }
  if (out % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("awq gemm layout: out_features must be a multiple of 8, got ", out));
  }
  AwqGemmLinear p;
  p.qweight = PackRows(q.codes.t().contiguous());
  p.qzeros = PackRows(q.zeros.t().contiguous());
  p.scales = q.scales.t().contiguous().to(at::kHalf);
  return p;
}

absl::StatusOr<QuantizedWeight> UnpackAwqGemm(const AwqGemmLinear& p, int64_t group_size) {
  if (p.qweight.dim() != 2 || p.qzeros.dim() != 2 || p.scales.dim() != 2 ||
      p.qweight.scalar_type() != at::kInt || p.qzeros.scalar_type() != at::kInt) {
    return absl::InvalidArgumentError(
        "awq gemm layout: qweight and qzeros must be 2-D int32, scales 2-D");
  }
  const int64_t in = p.qweight.size(0), out = p.qweight.size(1) * 8;
  const int64_t group = group_size == -1 ? in : group_size;
  if (group <= 0 || in % group != 0 || p.scales.size(0) != in / group || p.scales.size(1) != out ||
      p.qzeros.size(0) != in / group || p.qzeros.size(1) * 8 != out) {
    return absl::InvalidArgumentError(
        absl::StrCat("awq gemm layout: shapes qweight [", in, ", ", out / 8, "], qzeros [",
                     p.qzeros.size(0), ", ", p.qzeros.size(1), "], scales [", p.scales.size(0),
                     ", ", p.scales.size(1), "] do not fit group_size ", group_size));
  }
  QuantizedWeight q;
  q.spec.bits = 4;
  q.spec.group_size = group_size;
  q.codes = UnpackRows(p.qweight).t().contiguous().to(at::kByte);
  q.zeros = UnpackRows(p.qzeros).t().contiguous().to(at::kFloat);
  q.scales = p.scales.t().contiguous().to(at::kFloat);
  return q;
}

}  // namespace squeeze
