// The exact knapsack against every assignment enumerated in the test.
#include "common/compress/bit_allocation.h"

#include <cmath>
#include <limits>
#include <random>

#include "gtest/gtest.h"

namespace squeeze {
namespace {

// The best assignment by enumeration: every combination of choices within the budget.
double BruteForce(const std::vector<LinearCandidates>& linears, double budget) {
  double best = std::numeric_limits<double>::infinity();
  std::vector<size_t> pick(linears.size(), 0);
  while (true) {
    double cost = 0, sensitivity = 0;
    for (size_t i = 0; i < linears.size(); ++i) {
      cost += linears[i].choices[pick[i]].cost_bits;
      sensitivity += linears[i].choices[pick[i]].sensitivity;
    }
    if (cost <= budget) best = std::min(best, sensitivity);
    size_t i = 0;
    while (i < pick.size() && ++pick[i] == linears[i].choices.size()) pick[i++] = 0;
    if (i == pick.size()) break;
  }
  return best;
}

TEST(BitAllocationTest, MatchesEnumerationOnRandomProblems) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int trial = 0; trial < 30; ++trial) {
    std::vector<LinearCandidates> linears(6);
    double full = 0, smallest = 0;
    for (size_t i = 0; i < linears.size(); ++i) {
      linears[i].name = "l" + std::to_string(i);
      // Integer-sized layers, so that costs land on whole units and the DP is exact.
      const double weights = 1000.0 * (1 + static_cast<int>(unit(rng) * 8));
      double sensitivity = 1.0 + unit(rng) * 10;
      for (int bits : {2, 3, 4, 8}) {
        linears[i].choices.push_back({bits, weights * bits, sensitivity});
        sensitivity *= 0.1 + unit(rng) * 0.4;  // wider is less sensitive
      }
      full += weights * 8;
      smallest += weights * 2;
    }
    // A budget of whole thousands, cut into units of 1000 bits: every cost is a whole number of
    // units, so the dynamic program is exact here.
    const double budget = 1000.0 * std::round((smallest + unit(rng) * (full - smallest)) / 1000);
    auto got = AllocateBits(linears, budget, static_cast<int64_t>(budget / 1000));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_LE(got->cost_bits, budget);
    EXPECT_NEAR(got->sensitivity, BruteForce(linears, budget), 1e-9) << "trial " << trial;
    double recomputed = 0;
    for (size_t i = 0; i < linears.size(); ++i) {
      for (const BitChoice& c : linears[i].choices)
        if (c.bits == got->bits[i]) recomputed += c.sensitivity;
    }
    EXPECT_NEAR(recomputed, got->sensitivity, 1e-9);
  }
}

TEST(BitAllocationTest, SpendsTheBudgetWhereItBuysTheMost) {
  // Two equal layers, budget for one at 8 bits and one at 2: the sensitive one gets the 8.
  std::vector<LinearCandidates> linears = {{"calm", {{2, 200, 1.0}, {8, 800, 0.9}}},
                                           {"sensitive", {{2, 200, 50.0}, {8, 800, 0.1}}}};
  auto got = AllocateBits(linears, 1000);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->bits, (std::vector<int>{2, 8}));
}

TEST(BitAllocationTest, ABudgetBelowTheSmallestWidthIsRefused) {
  std::vector<LinearCandidates> linears = {{"a", {{2, 200, 1.0}, {4, 400, 0.5}}}};
  auto got = AllocateBits(linears, 199);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("smallest"), std::string::npos) << got.status();
  EXPECT_FALSE(AllocateBits({{"empty", {}}}, 1000).ok());
}

}  // namespace
}  // namespace squeeze
