// AWQ against a straightforward implementation written here: the same alpha grid and scale
// formula evaluated one candidate at a time with plain loops over linears, and the clip search
// one (row, group) at a time. Then the properties that make AWQ worth running: never worse than
// RTN on its data, and much better where a few input channels carry large activations.
#include "common/compress/awq.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace squeeze {
namespace {

// x with `outliers` input channels 30x larger than the rest, as in LLM activations.
at::Tensor Activations(int64_t tokens, int64_t in, int64_t outliers, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor x = at::randn({tokens, in});
  for (int64_t j = 0; j < outliers; ++j) x.select(1, (j * 7) % in).mul_(30.0);
  return x;
}

TEST(AwqTest, ScaleSearchMatchesAStraightforwardSearch) {
  const at::Tensor x = Activations(64, 128, 4, 1);
  at::manual_seed(2);
  const std::vector<at::Tensor> w = {at::randn({32, 128}) * 0.05, at::randn({48, 128}) * 0.05};
  AwqOptions o;
  o.quant.bits = 4;
  o.quant.group_size = 32;
  o.grid = 10;
  auto got = SearchAwqScales(x, w, o);
  ASSERT_TRUE(got.ok()) << got.status();

  // The search written out: every alpha, every linear quantized on its own, outputs compared.
  double best = std::numeric_limits<double>::infinity(), best_alpha = -1;
  at::Tensor best_s;
  std::vector<double> mean_abs(128);
  for (int64_t j = 0; j < 128; ++j) mean_abs[j] = x.select(1, j).abs().mean().item<double>();
  for (int k = 0; k < 10; ++k) {
    const double alpha = k / 10.0;
    at::Tensor s = at::empty({128});
    double lo = 1e30, hi = 0;
    for (int64_t j = 0; j < 128; ++j) {
      const double v = std::max(std::pow(mean_abs[j], alpha), 1e-4);
      s[j] = v;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    s = s / std::sqrt(lo * hi);
    double sum = 0;
    int64_t count = 0;
    for (const at::Tensor& wi : w) {
      at::Tensor q = QuantizeRtn(wi * s, o.quant)->Dequantize() / s;
      at::Tensor diff = at::matmul(x, q.t()) - at::matmul(x, wi.t());
      sum += diff.pow(2).sum().item<double>();
      count += diff.numel();
    }
    if (sum / count < best) {
      best = sum / count;
      best_alpha = alpha;
      best_s = s;
    }
  }
  EXPECT_DOUBLE_EQ(got->alpha, best_alpha);
  EXPECT_NEAR(got->error, best, best * 1e-4);
  EXPECT_LT((got->scales - best_s).abs().max().item<double>(), 1e-4);
}

TEST(AwqTest, NeverWorseThanRtnAndMuchBetterWithOutlierChannels) {
  const at::Tensor x = Activations(256, 256, 8, 3);
  at::manual_seed(4);
  const at::Tensor w = at::randn({64, 256}) * 0.05;
  for (int bits : {3, 4}) {
    AwqOptions o;
    o.quant.bits = bits;
    o.quant.group_size = 64;
    auto s = SearchAwqScales(x, {w}, o);
    ASSERT_TRUE(s.ok()) << s.status();
    // alpha = 0 is plain RTN.
    const double rtn = (at::matmul(x, FakeQuantize(w, o.quant).t()) - at::matmul(x, w.t()))
                           .pow(2)
                           .mean()
                           .item<double>();
    EXPECT_NEAR(s->error_unscaled, rtn, rtn * 1e-5);
    EXPECT_LE(s->error, s->error_unscaled);
    EXPECT_GT(s->alpha, 0.0) << bits;
    EXPECT_LT(s->error, 0.7 * rtn) << bits << " bits: AWQ " << s->error << " vs RTN " << rtn;
  }
}

TEST(AwqTest, ABlockObjectiveReplacesTheLinearOutputs) {
  const at::Tensor x = Activations(32, 64, 2, 5);
  at::manual_seed(6);
  const at::Tensor w = at::randn({16, 64}) * 0.05;
  AwqOptions o;
  o.quant.group_size = 32;
  int calls = 0;
  auto s = SearchAwqScales(x, {w}, o, [&](const std::vector<at::Tensor>& ws) {
    ++calls;
    return at::gelu(at::matmul(x, ws[0].t()));  // a nonlinearity after the linear
  });
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(calls, o.grid + 1);  // the reference, then every alpha
}

TEST(AwqTest, ClipSearchMatchesAStraightforwardSearchPerGroup) {
  const at::Tensor x = Activations(40, 64, 2, 7);
  at::manual_seed(8);
  at::Tensor w = at::randn({8, 64}) * 0.05;
  w[3][5] = 1.0;  // one large weight: its group gains from clipping
  AwqOptions o;
  o.quant.bits = 4;
  o.quant.group_size = 32;
  o.clip_grid = 10;
  o.max_shrink = 0.5;
  o.clip_rows = 3;  // several steps over the rows
  auto got = SearchAwqClip(x, w, o);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->sizes(), (std::vector<int64_t>{8, 2}));
  for (int64_t r = 0; r < 8; ++r) {
    for (int64_t g = 0; g < 2; ++g) {
      const at::Tensor wg = w[r].slice(0, g * 32, (g + 1) * 32);
      const at::Tensor xg = x.slice(1, g * 32, (g + 1) * 32);
      const double m = wg.abs().max().item<double>();
      double best = std::numeric_limits<double>::infinity(), best_m = m;
      for (int i = 0; i <= 5; ++i) {
        const double cut = m * (1.0 - i / 10.0);
        QuantSpec one = o.quant;
        one.group_size = 32;
        at::Tensor q = QuantizeRtn(wg.clamp(-cut, cut).unsqueeze(0), one)->Dequantize()[0];
        const double e = (at::matmul(xg, q) - at::matmul(xg, wg)).pow(2).mean().item<double>();
        if (e < best) {
          best = e;
          best_m = cut;
        }
      }
      EXPECT_NEAR((*got)[r][g].item<double>(), best_m, 1e-6) << r << "," << g;
    }
  }
  // The outlier's group was clipped.
  EXPECT_LT((*got)[3][0].item<double>(), 1.0);
  const at::Tensor clipped = ClipWeight(w, *got, 32);
  EXPECT_LE(clipped[3][5].item<double>(), (*got)[3][0].item<double>() + 1e-7);
}

TEST(AwqTest, BadShapesAndSpecsAreErrors) {
  AwqOptions o;
  o.quant.group_size = 48;  // does not divide 64
  EXPECT_FALSE(SearchAwqScales(at::randn({4, 64}), {at::randn({8, 64})}, o).ok());
  o.quant.group_size = 32;
  EXPECT_FALSE(SearchAwqScales(at::randn({4, 64}), {at::randn({8, 32})}, o).ok());
  EXPECT_FALSE(SearchAwqScales(at::randn({4, 64}), {}, o).ok());
  EXPECT_FALSE(SearchAwqClip(at::randn({64}), at::randn({8, 64}), o).ok());
}

}  // namespace
}  // namespace squeeze
