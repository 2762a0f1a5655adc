#include "common/compress/packed_linear.h"

#include <utility>

namespace squeeze {
namespace {

int64_t Bytes(const at::Tensor& t) { return t.defined() ? t.numel() * t.element_size() : 0; }

class Float4PackedLinear : public PackedLinearWeight {
 public:
  explicit Float4PackedLinear(Float4Weight w) : w_(std::move(w)) {
    // Both codes of a byte at once: entry b is (code[b >> 4], code[b & 15]).
    const at::Tensor codes = Float4Codebook(w_.type).to(at::kCPU, at::kFloat).contiguous();
    at::Tensor pairs = at::empty({256, 2}, at::kFloat);
    auto c = codes.accessor<float, 1>();
    auto p = pairs.accessor<float, 2>();
    for (int b = 0; b < 256; ++b) {
      p[b][0] = c[b >> 4];
      p[b][1] = c[b & 15];
    }
    pairs_ = pairs.to(w_.packed.device());
  }

  at::Tensor Dequantize(at::ScalarType dtype) const override {
    c10::NoGradGuard no_grad;
    const int64_t n = out_features() * in_features();
    at::Tensor values =
        pairs_.index_select(0, w_.packed.reshape({-1}).to(at::kInt)).reshape({-1}).slice(0, 0, n);
    const at::Tensor scales = w_.BlockScales();
    if (n % w_.block_size == 0) {
      values = values.view({-1, w_.block_size}) * scales.unsqueeze(1);
    } else {
      values = values * scales.repeat_interleave(w_.block_size).slice(0, 0, n);
    }
    return values.reshape({out_features(), in_features()}).to(dtype);
  }
  int64_t out_features() const override { return w_.shape[0]; }
  int64_t in_features() const override { return w_.shape[1]; }
  int64_t StorageBytes() const override {
    return Bytes(w_.packed) + Bytes(w_.absmax) + Bytes(w_.nested_absmax) + Bytes(w_.nested_map);
  }
  std::shared_ptr<const PackedLinearWeight> To(at::Device device) const override {
    Float4Weight w = w_;
    for (at::Tensor* t : {&w.packed, &w.absmax, &w.nested_absmax, &w.nested_map}) {
      if (t->defined()) *t = t->to(device);
    }
    return std::make_shared<Float4PackedLinear>(std::move(w));
  }

 private:
  Float4Weight w_;
  at::Tensor pairs_;  // [256, 2] float32
};

class IntegerPackedLinear : public PackedLinearWeight {
 public:
  explicit IntegerPackedLinear(QuantizedWeight w) : w_(std::move(w)) {}

  at::Tensor Dequantize(at::ScalarType dtype) const override {
    c10::NoGradGuard no_grad;
    return w_.Dequantize().to(dtype);
  }
  int64_t out_features() const override { return w_.codes.size(0); }
  int64_t in_features() const override { return w_.codes.size(1); }
  int64_t StorageBytes() const override {
    return Bytes(w_.codes) + Bytes(w_.scales) + Bytes(w_.zeros) + Bytes(w_.g_idx);
  }
  std::shared_ptr<const PackedLinearWeight> To(at::Device device) const override {
    QuantizedWeight w = w_;
    for (at::Tensor* t : {&w.codes, &w.scales, &w.zeros, &w.g_idx}) {
      if (t->defined()) *t = t->to(device);
    }
    return std::make_shared<IntegerPackedLinear>(std::move(w));
  }

 private:
  QuantizedWeight w_;
};

}  // namespace

std::shared_ptr<const PackedLinearWeight> MakePackedLinear(Float4Weight w) {
  return std::make_shared<Float4PackedLinear>(std::move(w));
}

std::shared_ptr<const PackedLinearWeight> MakePackedLinear(QuantizedWeight w) {
  return std::make_shared<IntegerPackedLinear>(std::move(w));
}

}  // namespace squeeze
