#include "common/compress/gptq.h"

#include "gtest/gtest.h"

namespace squeeze {
namespace {

// Inputs with correlated features, as activations are: X = Z A with a random mixing matrix.
at::Tensor CorrelatedInputs(int64_t n, int64_t d, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor z = at::randn({n, d});
  at::Tensor a = at::randn({d, d}) / std::sqrt(static_cast<double>(d)) + at::eye(d) * 0.5;
  return z.matmul(a);
}

at::Tensor Hessian(const at::Tensor& x) {
  HessianAccumulator acc(x.size(1), at::kCPU);
  acc.Add(x.slice(0, 0, x.size(0) / 2));
  acc.Add(x.slice(0, x.size(0) / 2));
  return acc.hessian();
}

double OutputError(const at::Tensor& x, const at::Tensor& w, const at::Tensor& q) {
  return (x.matmul(w.t()) - x.matmul(q.t())).pow(2).sum().item<double>();
}

// The algorithm as the paper states it, without lazy blocks or Cholesky tricks: quantize column j,
// push its error onto the remaining columns through the inverse Hessian, then remove j from the
// inverse (the OBS update).
at::Tensor ReferenceGptq(at::Tensor w, at::Tensor h, const QuantSpec& spec, double damp) {
  w = w.clone();
  const int64_t cols = w.size(1);
  const int64_t group = spec.group_size == -1 ? cols : spec.group_size;
  const double maxq = (1 << spec.bits) - 1;
  h = h + at::eye(cols) * (h.diagonal().mean() * damp);
  at::Tensor hinv = at::inverse(h.to(at::kDouble)).to(at::kFloat);
  at::Tensor q_out = at::zeros_like(w);
  at::Tensor scale, zero;
  for (int64_t j = 0; j < cols; ++j) {
    if (j % group == 0) std::tie(scale, zero) = ComputeScaleZero(w.slice(1, j, j + group), spec);
    at::Tensor col = w.select(1, j);
    at::Tensor q = scale * (at::clamp(at::round(col / scale) + zero, 0.0, maxq) - zero);
    q_out.select(1, j).copy_(q);
    at::Tensor err = (col - q) / hinv[j][j];
    w.slice(1, j + 1).sub_(err.unsqueeze(1).matmul(hinv[j].slice(0, j + 1).unsqueeze(0)));
    hinv = hinv - hinv.select(1, j).unsqueeze(1).matmul(hinv[j].unsqueeze(0)) / hinv[j][j];
  }
  return q_out;
}

TEST(GptqTest, HessianIsTwiceTheInputSecondMoment) {
  at::Tensor x = at::randn({40, 6});
  EXPECT_TRUE(at::allclose(Hessian(x), 2 * x.t().matmul(x) / 40, 1e-4, 1e-5));
}

TEST(GptqTest, MatchesAStraightforwardReferenceWithinOnePercent) {
  const int64_t d = 128;
  at::Tensor x = CorrelatedInputs(2048, d, 1);
  at::manual_seed(2);
  at::Tensor w = at::randn({64, d});
  const at::Tensor h = Hessian(x);
  for (auto [bits, group] : {std::pair{4, -1}, std::pair{3, 64}, std::pair{4, 32}}) {
    GptqOptions o;
    o.quant = {bits, group, false};
    o.block_size = group == -1 ? 128 : group;  // group starts on block starts, as in the reference
    auto r = QuantizeGptq(w, h, o);
    ASSERT_TRUE(r.ok()) << r.status();
    const double ours = OutputError(x, w, r->weight.Dequantize());
    const double ref = OutputError(x, w, ReferenceGptq(w, h, o.quant, o.damp));
    EXPECT_NEAR(ours / ref, 1.0, 0.01) << bits << "-bit, group " << group;
  }
}

TEST(GptqTest, BeatsRoundToNearestOnCorrelatedInputs) {
  const int64_t d = 256;
  at::Tensor x = CorrelatedInputs(4096, d, 3);
  at::manual_seed(4);
  at::Tensor w = at::randn({96, d}) * 0.05;
  const at::Tensor h = Hessian(x);
  for (int bits : {3, 4}) {
    for (bool act_order : {false, true}) {
      GptqOptions o;
      o.quant = {bits, 128, false};
      o.act_order = act_order;
      auto g = QuantizeGptq(w, h, o);
      ASSERT_TRUE(g.ok()) << g.status();
      const double gptq = OutputError(x, w, g->weight.Dequantize());
      const double rtn = OutputError(x, w, QuantizeRtn(w, o.quant)->Dequantize());
      EXPECT_LT(gptq, 0.8 * rtn) << bits << "-bit act_order=" << act_order;
    }
  }
}

TEST(GptqTest, ActOrderGroupsAreConsistent) {
  const int64_t d = 128;
  at::Tensor x = CorrelatedInputs(1024, d, 5);
  at::Tensor w = at::randn({32, d});
  for (bool static_groups : {false, true}) {
    GptqOptions o;
    o.quant = {4, 32, true};
    o.act_order = true;
    o.static_groups = static_groups;
    auto r = QuantizeGptq(w, Hessian(x), o);
    ASSERT_TRUE(r.ok()) << r.status();
    const QuantizedWeight& q = r->weight;
    EXPECT_EQ(q.g_idx.size(0), d);
    EXPECT_LE(q.g_idx.max().item<int>(), 3);
    // Every group holds exactly group_size columns.
    at::Tensor counts = at::bincount(q.g_idx.to(at::kLong));
    EXPECT_TRUE((counts == 32).all().item<bool>()) << counts;
    if (static_groups) {
      // Static groups are the natural column blocks.
      EXPECT_TRUE(at::equal(q.g_idx, at::div(at::arange(d, at::kLong), 32, "floor").to(at::kInt)));
    }
    EXPECT_TRUE((q.zeros == 8).all().item<bool>()) << "symmetric 4-bit zero point is 8";
    EXPECT_LE(q.codes.max().item<int>(), 15);
  }
}

TEST(GptqTest, DeadInputsAreZeroedAndBadInputRejected) {
  at::Tensor x = CorrelatedInputs(512, 64, 6);
  x.select(1, 5).zero_();
  at::Tensor w = at::randn({16, 64});
  GptqOptions o;
  o.quant = {4, -1, false};
  auto r = QuantizeGptq(w, Hessian(x), o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((r->weight.Dequantize().select(1, 5) == 0).all().item<bool>());

  at::Tensor bad = w.clone();
  bad[0][0] = NAN;
  EXPECT_NE(QuantizeGptq(bad, Hessian(x), o).status().message().find("weight"), std::string::npos);
  at::Tensor bad_h = Hessian(x);
  bad_h[1][1] = INFINITY;
  EXPECT_NE(QuantizeGptq(w, bad_h, o).status().message().find("hessian"), std::string::npos);
  o.quant.group_size = 48;
  EXPECT_NE(QuantizeGptq(w, Hessian(x), o).status().message().find("group_size"),
            std::string::npos);
  o.quant.group_size = -1;
  o.static_groups = true;
  EXPECT_NE(QuantizeGptq(w, Hessian(x), o).status().message().find("static_groups"),
            std::string::npos);
}

TEST(GptqTest, AllZeroInputsStillQuantize) {
  // A Hessian of zeros is made positive definite by the dead-input fix and damping.
  at::Tensor w = at::randn({8, 32});
  GptqOptions o;
  o.quant = {4, -1, false};
  auto r = QuantizeGptq(w, at::zeros({32, 32}), o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((r->weight.Dequantize() == 0).all().item<bool>());
}

}  // namespace
}  // namespace squeeze
