// The prune schedule: rounds at 0, r, 2r, ... reaching the final sparsity in equal steps, and
// nothing between them or after the last.
#include "common/compress/prune_schedule.h"

#include <vector>

#include "gtest/gtest.h"

namespace squeeze {
namespace {

TEST(PruneScheduleTest, RoundsAreEvenlySpacedAndReachTheFinalSparsity) {
  const PruneSchedule s{/*rounds=*/3, /*recover_steps=*/30, /*final_sparsity=*/0.6};
  std::vector<std::pair<int64_t, double>> seen;
  for (int64_t step = 0; step < 200; ++step) {
    if (auto r = s.RoundAt(step)) seen.emplace_back(step, r->sparsity);
  }
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].first, 0);
  EXPECT_EQ(seen[1].first, 30);
  EXPECT_EQ(seen[2].first, 60);
  EXPECT_NEAR(seen[0].second, 0.2, 1e-12);
  EXPECT_NEAR(seen[1].second, 0.4, 1e-12);
  EXPECT_DOUBLE_EQ(seen[2].second, 0.6) << "the last round reaches the final sparsity exactly";
  EXPECT_EQ(s.RoundAt(60)->round, 2);
}

TEST(PruneScheduleTest, OneRoundPrunesOnceAtTheStart) {
  const PruneSchedule s{1, 100, 0.5};
  ASSERT_TRUE(s.RoundAt(0));
  EXPECT_DOUBLE_EQ(s.RoundAt(0)->sparsity, 0.5);
  for (int64_t step = 1; step < 500; ++step) EXPECT_FALSE(s.RoundAt(step)) << step;
}

TEST(PruneScheduleTest, NonsenseSchedulesPruneNothing) {
  EXPECT_FALSE((PruneSchedule{0, 10, 0.5}.RoundAt(0)));
  EXPECT_FALSE((PruneSchedule{2, 0, 0.5}.RoundAt(0)));
  EXPECT_FALSE((PruneSchedule{2, 10, 0.5}.RoundAt(-10)));
}

}  // namespace
}  // namespace squeeze
