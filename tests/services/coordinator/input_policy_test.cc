// A tenant's recipe names only the store and the tenant's own roots: not another tenant's
// directory, not by "..", not through a symbolic link, and the answer does not reveal whether a
// path exists.
#include "services/coordinator/input_policy.h"

#include <unistd.h>

#include <filesystem>

#include "common/base/file_util.h"
#include "gtest/gtest.h"

namespace squeeze::coordinator {
namespace {

namespace fs = std::filesystem;

class InputPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("input_policy_" + std::to_string(::getpid()));
    RemoveTree(dir_).IgnoreError();
    fs::create_directories(dir_ / "a" / "model");
    fs::create_directories(dir_ / "b" / "model");
    fs::create_directories(dir_ / "store" / "jobs");
    fs::create_symlink(dir_ / "b" / "model", dir_ / "a" / "sneaky");
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }

  TenantInputPolicy Policy() {
    auto roots = TenantInputPolicy::ParseRoots(
        "team-a=" + (dir_ / "a").string() + ":s3://shared/models,team-b=" + (dir_ / "b").string());
    EXPECT_TRUE(roots.ok()) << roots.status();
    return TenantInputPolicy("file://" + (dir_ / "store").string(), *roots);
  }
  absl::Status Check(const std::string& model, const std::string& tenant,
                     const std::string& calibration = "") {
    Recipe r;
    r.model = model;
    r.calibration = calibration;
    return Policy().Check(r, tenant);
  }
  fs::path dir_;
};

TEST_F(InputPolicyTest, TenantsReadTheirRootsAndTheStoreOnly) {
  EXPECT_TRUE(Check((dir_ / "a" / "model").string(), "team-a").ok());
  EXPECT_TRUE(Check("file://" + (dir_ / "a" / "model").string(), "team-a").ok());
  EXPECT_TRUE(Check((dir_ / "store" / "jobs" / "x").string(), "team-a").ok());
  EXPECT_TRUE(Check("s3://shared/models/llama", "team-a").ok());

  const absl::Status other = Check((dir_ / "b" / "model").string(), "team-a");
  EXPECT_EQ(other.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(other.message().find("model: "), absl::string_view::npos) << other;
  EXPECT_NE(other.message().find("tenant \"team-a\""), absl::string_view::npos) << other;
  // Neither ".." nor a symbolic link leads out of a root.
  EXPECT_EQ(Check((dir_ / "a" / ".." / "b" / "model").string(), "team-a").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Check((dir_ / "a" / "sneaky").string(), "team-a").code(),
            absl::StatusCode::kPermissionDenied);
  // A missing path answers the same as another tenant's.
  const absl::Status missing = Check((dir_ / "b" / "none").string(), "team-a");
  EXPECT_EQ(missing.code(), absl::StatusCode::kPermissionDenied);
  // Every data field is checked; other prefixes and tenants without roots get the store only.
  EXPECT_NE(Check((dir_ / "a" / "model").string(), "team-a", (dir_ / "b" / "c.jsonl").string())
                .message()
                .find("data.calibration: "),
            absl::string_view::npos);
  EXPECT_EQ(Check("s3://shared/other", "team-a").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Check((dir_ / "a" / "model").string(), "team-c").code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(InputPolicyTest, RootsFlagIsParsedAndChecked) {
  auto roots = TenantInputPolicy::ParseRoots("t=/x:/y:s3://b/p,u=/z");
  ASSERT_TRUE(roots.ok()) << roots.status();
  EXPECT_EQ(roots->at("t"), (std::vector<std::string>{"/x", "/y", "s3://b/p"}));
  EXPECT_EQ(roots->at("u"), (std::vector<std::string>{"/z"}));
  EXPECT_FALSE(TenantInputPolicy::ParseRoots("t").ok());
  EXPECT_FALSE(TenantInputPolicy::ParseRoots("t=relative/dir").ok());
  EXPECT_TRUE(TenantInputPolicy::ParseRoots("")->empty());
}

}  // namespace
}  // namespace squeeze::coordinator
