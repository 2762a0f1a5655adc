// Mixed precision's planning without a model: stored sizes by the GPTQ layout's formula, groups
// that share a width, the least-error allocation against an exhaustive search written here, the
// budget refusals, and the plan file's round trip.
#include "common/compress/mixed_precision.h"

#include <cmath>
#include <limits>
#include <random>

#include "gtest/gtest.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

// A made-up measurement of every linear of `c`: error falling by ~4x per added bit, scaled by a
// per-linear factor so that some linears matter much more than others.
std::vector<LinearSensitivity> Measured(const LlamaConfig& c, const std::vector<int>& bits,
                                        uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> factor(0.1, 10.0);
  std::vector<LinearSensitivity> out;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    for (const LinearShape& l : DecoderLinearShapes(c)) {
      LinearSensitivity s{"model.layers." + std::to_string(i) + "." + l.name, l.out, l.in, {}};
      const double f = factor(rng);
      for (int b : bits) s.error_by_bits[b] = f * std::pow(4.0, -b) * static_cast<double>(l.in);
      out.push_back(s);
    }
  }
  return out;
}

TEST(MixedPrecisionTest, StoredBitsFollowTheGptqLayout) {
  // 64 x 256 at 4 bits, groups of 128: codes, 2 groups x 64 rows x (16-bit scale + 4-bit zero),
  // and a 32-bit g_idx entry per input.
  EXPECT_DOUBLE_EQ(StoredLinearBits(64, 256, 4, 128), 64.0 * 256 * 4 + 2 * 64 * 20 + 32 * 256);
  EXPECT_DOUBLE_EQ(StoredLinearBits(64, 256, 8, -1), 64.0 * 256 * 8 + 64 * 24 + 32 * 256);
  const LlamaConfig c = TinyLlamaConfig(2, 64, 256);
  // Tied embeddings (256 x 64), a final norm and two norms per layer, all float16.
  EXPECT_EQ(UnquantizedTensorBytes(c), (256 * 64 + 64 + 2 * 2 * 64) * 2);
  double linears = 0;
  for (const LinearShape& l : DecoderLinearShapes(c))
    linears += StoredLinearBits(l.out, l.in, 3, 32);
  EXPECT_EQ(QuantizedCheckpointBytes(c, 3, 32),
            UnquantizedTensorBytes(c) + static_cast<int64_t>(2 * linears / 8));
}

TEST(MixedPrecisionTest, FusedLinearsShareAGroup) {
  EXPECT_EQ(WidthGroupOf("model.layers.3.self_attn.k_proj"), "model.layers.3.self_attn.qkv");
  EXPECT_EQ(WidthGroupOf("model.layers.3.self_attn.q_proj"), "model.layers.3.self_attn.qkv");
  EXPECT_EQ(WidthGroupOf("model.layers.12.mlp.up_proj"), "model.layers.12.mlp.gate_up");
  EXPECT_EQ(WidthGroupOf("model.layers.3.self_attn.o_proj"), "model.layers.3.self_attn.o_proj");
  EXPECT_EQ(WidthGroupOf("model.layers.3.mlp.down_proj"), "model.layers.3.mlp.down_proj");
}

// The least total error over every assignment of widths to groups (bits.size()^groups of them),
// within `budget_bits` of code bits: the straightforward answer PlanMixedPrecision must match.
double ExhaustiveLeastError(const std::vector<LinearSensitivity>& linears,
                            const std::vector<int>& bits, double budget_bits) {
  std::vector<std::string> groups;
  for (const auto& l : linears) {
    const std::string g = WidthGroupOf(l.module);
    if (std::find(groups.begin(), groups.end(), g) == groups.end()) groups.push_back(g);
  }
  double best = std::numeric_limits<double>::infinity();
  std::vector<size_t> pick(groups.size(), 0);
  while (true) {
    double cost = 0, error = 0;
    for (const auto& l : linears) {
      const size_t g =
          std::find(groups.begin(), groups.end(), WidthGroupOf(l.module)) - groups.begin();
      const int b = bits[pick[g]];
      cost += static_cast<double>(l.out) * l.in * b;
      error += l.error_by_bits.at(b);
    }
    if (cost <= budget_bits) best = std::min(best, error);
    size_t k = 0;
    while (k < pick.size() && ++pick[k] == bits.size()) pick[k++] = 0;
    if (k == pick.size()) break;
  }
  return best;
}

TEST(MixedPrecisionTest, AverageBudgetGivesTheLeastErrorAnExhaustiveSearchFinds) {
  const LlamaConfig c = TinyLlamaConfig(2, 32, 256);  // 2 layers x 4 groups = 8 groups
  const std::vector<int> bits = {2, 3, 4};
  for (uint32_t seed : {1u, 2u, 3u}) {
    const auto linears = Measured(c, bits, seed);
    MixedPrecisionBudget budget;
    budget.bits = bits;
    budget.average_bits = 3.0;
    auto plan = PlanMixedPrecision(c, 32, budget, linears);
    ASSERT_TRUE(plan.ok()) << plan.status();
    int64_t weights = 0;
    for (const auto& l : linears) weights += l.out * l.in;
    const double exhaustive = ExhaustiveLeastError(linears, bits, 3.0 * weights);
    // Code bits are whole multiples of the layers' sizes' gcd: the allocation is exact.
    EXPECT_NEAR(plan->error, exhaustive, 1e-9 * exhaustive) << "seed " << seed;
    EXPECT_LE(plan->average_bits, 3.0 + 1e-12);
    EXPECT_GT(plan->average_bits, 2.5) << "the budget is used";
    // Members of a group take one width.
    for (int64_t i = 0; i < 2; ++i) {
      const std::string p = "model.layers." + std::to_string(i) + ".";
      EXPECT_EQ(plan->bits_by_module.at(p + "self_attn.q_proj"),
                plan->bits_by_module.at(p + "self_attn.v_proj"));
      EXPECT_EQ(plan->bits_by_module.at(p + "mlp.gate_proj"),
                plan->bits_by_module.at(p + "mlp.up_proj"));
    }
    EXPECT_EQ(plan->bits_by_module.size(), linears.size());
  }
}

TEST(MixedPrecisionTest, SizeBudgetCountsEveryStoredTensor) {
  const LlamaConfig c = TinyLlamaConfig(2, 64, 256);
  const std::vector<int> bits = {2, 4, 8};
  const auto linears = Measured(c, bits, 5);
  MixedPrecisionBudget budget;
  budget.bits = bits;
  // Between all-4 and all-8: some linears go to 8 bits, and the checkpoint fits.
  budget.max_size_bytes =
      (QuantizedCheckpointBytes(c, 4, 32) + QuantizedCheckpointBytes(c, 8, 32)) / 2;
  auto plan = PlanMixedPrecision(c, 32, budget, linears);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_LE(plan->checkpoint_bytes, budget.max_size_bytes);
  EXPECT_GT(plan->checkpoint_bytes, QuantizedCheckpointBytes(c, 4, 32));
  EXPECT_GT(plan->average_bits, 4.0);
  EXPECT_LT(plan->average_bits, 8.0);
}

TEST(MixedPrecisionTest, BudgetsThatFitNothingNameTheirField) {
  const LlamaConfig c = TinyLlamaConfig(2, 32, 256);
  const auto linears = Measured(c, {3, 4}, 1);
  MixedPrecisionBudget budget;
  budget.bits = {3, 4};
  budget.average_bits = 2.5;
  auto plan = PlanMixedPrecision(c, 32, budget, linears);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("mixed_precision.average_bits"), std::string::npos)
      << plan.status();
  budget.average_bits = 0;
  budget.max_size_bytes = QuantizedCheckpointBytes(c, 3, 32) - 1;
  plan = PlanMixedPrecision(c, 32, budget, linears);
  ASSERT_FALSE(plan.ok());
  EXPECT_NE(plan.status().message().find("mixed_precision.max_size_bytes"), std::string::npos)
      << plan.status();
  budget.max_size_bytes = QuantizedCheckpointBytes(c, 3, 32);
  plan = PlanMixedPrecision(c, 32, budget, linears);
  ASSERT_TRUE(plan.ok()) << "exactly the smallest size fits: " << plan.status();
  for (const auto& [module, b] : plan->bits_by_module) EXPECT_EQ(b, 3) << module;
  // A width that was not measured is an error, not a silent zero.
  budget.bits = {3, 4, 8};
  EXPECT_FALSE(PlanMixedPrecision(c, 32, budget, linears).ok());
}

TEST(MixedPrecisionTest, PlanFileRoundTrips) {
  const LlamaConfig c = TinyLlamaConfig(2, 32, 256);
  const auto linears = Measured(c, {2, 3, 4, 8}, 9);
  MixedPrecisionBudget budget;
  budget.average_bits = 3.5;
  auto plan = PlanMixedPrecision(c, 32, budget, linears);
  ASSERT_TRUE(plan.ok()) << plan.status();
  auto back = ParseMixedPrecisionPlan(MixedPrecisionPlanJson(*plan, budget), "plan.json");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->bits_by_module, plan->bits_by_module);
  EXPECT_EQ(back->base_bits, plan->base_bits);
  EXPECT_DOUBLE_EQ(back->average_bits, plan->average_bits);
  EXPECT_EQ(back->checkpoint_bytes, plan->checkpoint_bytes);
  ASSERT_EQ(back->linears.size(), linears.size());
  EXPECT_EQ(back->linears[0].error_by_bits.size(), 4u);
  auto broken = ParseMixedPrecisionPlan("{\"modules\": {\"x\": {\"bits\": 5}}}", "plan.json");
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find("plan.json"), std::string::npos);
}

}  // namespace
}  // namespace squeeze
