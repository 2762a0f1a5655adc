#include "common/compress/rtn.h"

#include "gtest/gtest.h"

namespace squeeze {
namespace {

double RelativeError(const at::Tensor& w, const at::Tensor& approx) {
  return ((w - approx).norm() / w.norm()).item<double>();
}

TEST(RtnTest, CodesInRangeAndErrorShrinksWithBits) {
  at::manual_seed(0);
  at::Tensor w = at::randn({64, 256});
  double previous = 1e9;
  for (int bits : {2, 3, 4, 8}) {
    for (bool sym : {false, true}) {
      auto q = QuantizeRtn(w, {bits, 64, sym});
      ASSERT_TRUE(q.ok()) << q.status();
      EXPECT_EQ(q->codes.sizes(), w.sizes());
      EXPECT_EQ(q->scales.sizes(), (at::IntArrayRef{64, 4}));
      EXPECT_LE(q->codes.max().item<int>(), (1 << bits) - 1);
      if (sym) {
        EXPECT_TRUE((q->zeros == (1 << (bits - 1))).all().item<bool>());
      }
    }
    const double err = RelativeError(w, QuantizeRtn(w, {bits, 64, false})->Dequantize());
    EXPECT_LT(err, previous) << bits;
    previous = err;
  }
  EXPECT_LT(previous, 0.01);  // 8 bits
}

TEST(RtnTest, RepresentableWeightsAreExact) {
  // A grid of 4-bit values times a scale per group is reproduced exactly (asymmetric).
  at::Tensor codes = at::randint(0, 16, {8, 32}, at::kLong).to(at::kFloat);
  codes.select(1, 0).fill_(0);
  codes.select(1, 1).fill_(15);
  at::Tensor w = (codes - 3.0) * 0.125;  // zero point 3, scale 1/8, range includes 0
  auto q = QuantizeRtn(w, {4, -1, false});
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(at::allclose(q->Dequantize(), w, 0, 1e-6));
  EXPECT_NEAR(q->BitsPerWeight(), 4.0 + 20.0 / 32, 1e-12);
}

TEST(RtnTest, ZeroRowsStayZero) {
  at::Tensor w = at::zeros({4, 16});
  auto q = QuantizeRtn(w, {4, 8, false});
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(at::equal(q->Dequantize(), w));
}

TEST(RtnTest, InvalidSpecsNameTheField) {
  at::Tensor w = at::randn({4, 96});
  EXPECT_NE(QuantizeRtn(w, {5, 32, false}).status().message().find("bits"), std::string::npos);
  EXPECT_NE(QuantizeRtn(w, {4, 64, false}).status().message().find("group_size"),
            std::string::npos);
  EXPECT_TRUE(QuantizeRtn(w, {4, 32, false}).ok());
  EXPECT_TRUE(QuantizeRtn(w, {4, -1, false}).ok());
}

}  // namespace
}  // namespace squeeze
