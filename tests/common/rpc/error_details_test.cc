#include "common/rpc/error_details.h"

#include "gtest/gtest.h"

namespace squeeze {
namespace {

TEST(ErrorDetailsTest, LeadingFieldPathIsThePathBeforeTheColon) {
  EXPECT_EQ(LeadingFieldPath("stages[1].quantize.bits: must be between 2 and 8"),
            "stages[1].quantize.bits");
  EXPECT_EQ(LeadingFieldPath("page_size: must not be negative"), "page_size");
  EXPECT_EQ(LeadingFieldPath("data.evaluation[0]: file not found"), "data.evaluation[0]");
  EXPECT_EQ(LeadingFieldPath("cannot read /tmp/x: no such file"), "") << "a sentence is no path";
  EXPECT_EQ(LeadingFieldPath("no colon here"), "");
  EXPECT_EQ(LeadingFieldPath(": empty"), "");
  EXPECT_EQ(LeadingFieldPath("[0]: starts with a bracket"), "");
}

TEST(ErrorDetailsTest, InvalidArgumentCarriesABadRequestNamingTheField) {
  const grpc::Status s =
      ToGrpcStatus(absl::InvalidArgumentError("priority: must be between -1000 and 1000"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "priority: must be between -1000 and 1000");
  auto violations = FieldViolations(s);
  ASSERT_EQ(violations.size(), 1u);
  EXPECT_EQ(violations[0].first, "priority");
  EXPECT_EQ(violations[0].second, "priority: must be between -1000 and 1000");
}

TEST(ErrorDetailsTest, RecipeFieldsAreReportedUnderTheRequestField) {
  auto violations = FieldViolations(ToGrpcStatus(
      absl::InvalidArgumentError("stages[1].quantize.bits: must be between 2 and 8, got 9"),
      "recipe_yaml"));
  ASSERT_EQ(violations.size(), 1u);
  EXPECT_EQ(violations[0].first, "recipe_yaml.stages[1].quantize.bits");
  violations = FieldViolations(
      ToGrpcStatus(absl::InvalidArgumentError("recipe: not valid YAML: line 3"), "recipe_yaml"));
  ASSERT_EQ(violations.size(), 1u);
  EXPECT_EQ(violations[0].first, "recipe_yaml");
}

TEST(ErrorDetailsTest, OtherCodesCarryNoDetails) {
  const grpc::Status s = ToGrpcStatus(absl::NotFoundError("job \"x\" not found"));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(s.error_details().empty());
  EXPECT_TRUE(FieldViolations(s).empty());
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
}

}  // namespace
}  // namespace squeeze
