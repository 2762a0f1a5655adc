// Sensitivity against its meaning, computed the plain way in the test: with H = 2 X^T X / n it is
// 2/n times the squared output error of the RTN-quantized layer on X.
#include "common/compress/layer_sensitivity.h"

#include "gtest/gtest.h"

namespace squeeze {
namespace {

TEST(LayerSensitivityTest, IsTheScaledSquaredOutputErrorOnTheInputs) {
  at::manual_seed(3);
  const at::Tensor w = at::randn({24, 64});
  const at::Tensor x = at::randn({200, 64});
  const at::Tensor h = 2.0 * at::matmul(x.t(), x) / 200.0;
  for (int bits : {2, 3, 4, 8}) {
    QuantSpec spec;
    spec.bits = bits;
    spec.group_size = 32;
    auto s = QuantizationSensitivity(w, h, spec);
    ASSERT_TRUE(s.ok()) << s.status();
    const at::Tensor q = QuantizeRtn(w, spec)->Dequantize();
    double expected = 0;
    for (int64_t t = 0; t < 200; ++t) {
      const at::Tensor diff = at::matmul(w, x[t]) - at::matmul(q, x[t]);
      expected += diff.pow(2).sum().item<double>();
    }
    expected *= 2.0 / 200.0;
    EXPECT_NEAR(*s, expected, 1e-3 * expected) << bits;
  }
}

TEST(LayerSensitivityTest, CandidatesFallWithWidthAndCostWhatIsStored) {
  at::manual_seed(4);
  const at::Tensor w = at::randn({16, 128});
  const at::Tensor x = at::randn({100, 128});
  const at::Tensor h = 2.0 * at::matmul(x.t(), x) / 100.0;
  QuantSpec base;
  base.group_size = 64;
  auto c = WidthCandidates(w, h, {2, 3, 4, 8}, base);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->size(), 4u);
  for (size_t i = 1; i < c->size(); ++i) {
    EXPECT_LT((*c)[i].sensitivity, (*c)[i - 1].sensitivity) << "wider rounds finer";
    EXPECT_GT((*c)[i].cost_bits, (*c)[i - 1].cost_bits);
  }
  QuantSpec four = base;
  four.bits = 4;
  EXPECT_DOUBLE_EQ((*c)[2].cost_bits, BitsPerWeight(four, 128) * 16 * 128);
  EXPECT_FALSE(QuantizationSensitivity(w, at::eye(64), base).ok()) << "Hessian of the wrong size";
}

}  // namespace
}  // namespace squeeze
