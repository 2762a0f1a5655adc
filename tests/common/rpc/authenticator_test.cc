#include "common/rpc/authenticator.h"

#include "gtest/gtest.h"

namespace squeeze {
namespace {

TEST(AuthenticatorTest, TokensMapToTenantsAndRoles) {
  const std::string text = "# tokens\n" + TokenDigest("alice-token") + " team-a user\n" +
                           TokenDigest("root-token") + "  ops  admin\n" +
                           TokenDigest("node-token") + " workers worker\n" +
                           TokenDigest("old-token") + " team-a user 1000\n";
  auto auth = Authenticator::Parse(text, "tokens");
  ASSERT_TRUE(auth.ok()) << auth.status();
  auto alice = (*auth)->Authenticate("Bearer alice-token", 2000);
  ASSERT_TRUE(alice.ok());
  EXPECT_EQ(alice->tenant, "team-a");
  EXPECT_EQ(alice->role, Role::kUser);
  EXPECT_EQ((*auth)->Authenticate("Bearer root-token", 2000)->role, Role::kAdmin);
  EXPECT_EQ((*auth)->Authenticate("Bearer node-token", 2000)->role, Role::kWorker);
  // Expiry is honoured, and the message says so without echoing the token.
  EXPECT_TRUE((*auth)->Authenticate("Bearer old-token", 999).ok());
  auto expired = (*auth)->Authenticate("Bearer old-token", 1000);
  EXPECT_EQ(expired.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(expired.status().message().find("expired"), absl::string_view::npos);
  EXPECT_EQ(expired.status().message().find("old-token"), absl::string_view::npos);
  for (const char* bad : {"", "alice-token", "Bearer ", "Basic YWxpY2U=", "Bearer nope"}) {
    EXPECT_EQ((*auth)->Authenticate(bad, 0).status().code(), absl::StatusCode::kUnauthenticated)
        << bad;
  }
}

TEST(AuthenticatorTest, MalformedFilesNameTheLine) {
  EXPECT_NE(Authenticator::Parse("alice team user\n", "t").status().message().find("t:1"),
            absl::string_view::npos);
  auto role = Authenticator::Parse("\n" + TokenDigest("x") + " a root\n", "t");
  EXPECT_NE(role.status().message().find("t:2: role \"root\""), absl::string_view::npos)
      << role.status();
  EXPECT_FALSE(Authenticator::Parse(TokenDigest("x") + " a user soon\n", "t").ok());
  EXPECT_EQ(Authenticator::LoadFile("/nonexistent/tokens").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace squeeze
