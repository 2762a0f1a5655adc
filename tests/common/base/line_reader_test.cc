#include "common/base/line_reader.h"

#include <gtest/gtest.h>

#include <sstream>

namespace squeeze {
namespace {

TEST(BoundedLineReaderTest, ReadsLinesWithAndWithoutAFinalNewline) {
  std::istringstream in("one\n\ntwo\r\nthree");
  BoundedLineReader reader(in, "f.jsonl", 16);
  std::string line;
  std::vector<std::string> lines;
  for (;;) {
    auto more = reader.Next(&line);
    ASSERT_TRUE(more.ok()) << more.status();
    if (!*more) break;
    lines.push_back(line);
  }
  EXPECT_EQ(lines, (std::vector<std::string>{"one", "", "two\r", "three"}));
  EXPECT_EQ(reader.line_number(), 4);
}

TEST(BoundedLineReaderTest, ALineOverTheLimitIsAnErrorNamingFileAndLine) {
  std::istringstream in("short\n" + std::string(100, 'x') + "\nafter\n");
  BoundedLineReader reader(in, "tasks.jsonl", 10);
  std::string line;
  ASSERT_TRUE(*reader.Next(&line));
  auto second = reader.Next(&line);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(second.status().message(), "tasks.jsonl:2: line longer than the limit of 10 bytes");
  // A line of exactly the limit is fine.
  std::istringstream exact(std::string(10, 'y'));
  BoundedLineReader exact_reader(exact, "e", 10);
  auto ok = exact_reader.Next(&line);
  ASSERT_TRUE(ok.ok() && *ok);
  EXPECT_EQ(line.size(), 10u);
}

}  // namespace
}  // namespace squeeze
