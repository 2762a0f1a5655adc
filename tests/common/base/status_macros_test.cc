#include "common/base/status_macros.h"

#include <string>

#include "gtest/gtest.h"

namespace squeeze {
namespace {

absl::StatusOr<int> Parse(const std::string& text) {
  if (text.empty()) return absl::InvalidArgumentError("empty");
  return static_cast<int>(text.size());
}

absl::Status Check(const std::string& text, int* steps) {
  ++*steps;
  SQ_RETURN_IF_ERROR(text == "bad" ? absl::NotFoundError("bad") : absl::OkStatus());
  ++*steps;
  return absl::OkStatus();
}

absl::StatusOr<int> Twice(const std::string& text) {
  SQ_ASSIGN_OR_RETURN(const int n, Parse(text));
  int m = 0;
  SQ_ASSIGN_OR_RETURN(m, Parse(text));  // into an existing variable
  return n + m;
}

TEST(StatusMacrosTest, ReturnIfErrorStopsAtTheFirstError) {
  int steps = 0;
  EXPECT_TRUE(Check("good", &steps).ok());
  EXPECT_EQ(steps, 2);
  steps = 0;
  absl::Status s = Check("bad", &steps);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(steps, 1) << "nothing after the error ran";
}

TEST(StatusMacrosTest, AssignOrReturnMovesTheValueOrReturnsTheStatus) {
  EXPECT_EQ(*Twice("abc"), 6);
  auto empty = Twice("");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().message(), "empty");
}

}  // namespace
}  // namespace squeeze
