#include "common/base/flags.h"

#include "gtest/gtest.h"

namespace squeeze {
namespace {

TEST(FlagsTest, ParsesValuesBoolsAndPositionals) {
  Flags f;
  f.Value("model").Value("bits", "4").Bool("json").Positional(0, 1);
  ASSERT_TRUE(f.Parse({"--model", "m", "--json", "--bits=3", "extra"}).ok());
  EXPECT_EQ(*f.Get("model"), "m");
  EXPECT_EQ(*f.GetInt("bits"), 3);
  EXPECT_TRUE(f.GetBool("json"));
  EXPECT_EQ(f.positional(), std::vector<std::string>{"extra"});
}

TEST(FlagsTest, DefaultsAndRequired) {
  Flags f;
  f.Value("model").Value("bits", "4");
  ASSERT_TRUE(f.Parse({}).ok());
  EXPECT_EQ(*f.GetInt("bits"), 4);
  EXPECT_FALSE(f.Has("bits"));
  auto model = f.Get("model");
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().message(), "--model is required");
}

TEST(FlagsTest, NearestNameSuggestsOnlyLikelyTypos) {
  const std::vector<std::string> names = {"submit", "watch", "store-gc", "store-rm", "list"};
  EXPECT_EQ(NearestName("sumbit", names), "submit");
  EXPECT_EQ(NearestName("store-gx", names), "store-gc");
  EXPECT_EQ(NearestName("lst", names), "list");
  EXPECT_EQ(NearestName("frobnicate", names), "");
  EXPECT_EQ(NearestName("ab", names), "") << "two edits of a two-letter word is not a typo";
  EXPECT_EQ(NearestName("x", {}), "");
}

TEST(FlagsTest, ErrorsNameTheFlag) {
  Flags f;
  f.Value("bits").Value("lr").Bool("json");
  EXPECT_EQ(f.Parse({"--bogus", "1"}).message(), "unknown flag --bogus");
  Flags typo;
  typo.Value("bits").Value("lr").Bool("json");
  EXPECT_EQ(typo.Parse({"--bist", "4"}).message(), "unknown flag --bist (did you mean --bits?)");
  EXPECT_EQ(typo.Parse({"--jsn"}).message(), "unknown flag --jsn (did you mean --json?)");
  Flags g;
  g.Value("bits");
  EXPECT_EQ(g.Parse({"--bits"}).message(), "--bits: expected a value");
  Flags h;
  h.Value("bits").Value("lr");
  ASSERT_TRUE(h.Parse({"--bits", "four", "--lr", "x"}).ok());
  EXPECT_NE(h.GetInt("bits").status().message().find("--bits: expected an integer"),
            std::string::npos);
  EXPECT_NE(h.GetDouble("lr").status().message().find("--lr"), std::string::npos);
  Flags k;
  EXPECT_FALSE(k.Parse({"stray"}).ok());
}

}  // namespace
}  // namespace squeeze
