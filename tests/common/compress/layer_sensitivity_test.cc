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

TEST(LayerSensitivityTest, FallsWithWidthAndGptqLeavesLessThanRounding) {
  at::manual_seed(4);
  const at::Tensor w = at::randn({16, 128});
  // Correlated inputs, where GPTQ's error feedback has something to work with.
  const at::Tensor x =
      at::matmul(at::randn({400, 128}), at::randn({128, 128}) * 0.3 + at::eye(128));
  const at::Tensor h = 2.0 * at::matmul(x.t(), x) / 400.0;
  QuantSpec base;
  base.group_size = 64;
  auto rtn = ErrorByWidth(w, h, {2, 3, 4, 8}, base);
  ASSERT_TRUE(rtn.ok()) << rtn.status();
  ASSERT_EQ(rtn->size(), 4u);
  EXPECT_GT(rtn->at(2), rtn->at(3));
  EXPECT_GT(rtn->at(3), rtn->at(4));
  EXPECT_GT(rtn->at(4), rtn->at(8));
  QuantSpec three = base;
  three.bits = 3;
  EXPECT_DOUBLE_EQ(rtn->at(3), *QuantizationSensitivity(w, h, three));
  GptqOptions options;
  options.quant = base;
  auto solver = GptqSolver::Prepare(h, options);
  ASSERT_TRUE(solver.ok()) << solver.status();
  auto gptq = ErrorByWidth(w, h, {2, 3, 4}, base, &*solver);
  ASSERT_TRUE(gptq.ok()) << gptq.status();
  for (int b : {2, 3, 4}) {
    EXPECT_LT(gptq->at(b), rtn->at(b)) << b << " bits";
    // The same as solving at that width directly and measuring it here.
    GptqOptions at_b = options;
    at_b.quant.bits = b;
    const at::Tensor q = QuantizeGptq(w, h, at_b)->weight.Dequantize();
    EXPECT_NEAR(gptq->at(b), OutputError(w, q, h), 1e-6 * gptq->at(b)) << b << " bits";
  }
  EXPECT_FALSE(QuantizationSensitivity(w, at::eye(64), base).ok()) << "Hessian of the wrong size";
}

}  // namespace
}  // namespace squeeze
