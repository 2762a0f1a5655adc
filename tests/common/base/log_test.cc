#include "common/base/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "gtest/gtest.h"

namespace squeeze {
namespace {

// Runs `f` with stderr sent to a file; returns what it wrote.
template <typename F>
std::string CaptureStderr(F f) {
  char path[] = "/tmp/log_test_XXXXXX";
  const int fd = ::mkstemp(path);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(fd, STDERR_FILENO);
  f();
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::string out;
  char buf[4096];
  ::lseek(fd, 0, SEEK_SET);
  for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  ::unlink(path);
  return out;
}

TEST(LogTest, OneStampedLineNamingTheSeverityAndTheFile) {
  const std::string out = CaptureStderr([] { SQ_LOG(WARNING) << "lease " << 7 << " lapsed"; });
  // 2026-12-02T11:42:07.123Z W log_test.cc:NN] lease 7 lapsed
  ASSERT_GT(out.size(), 25u);
  EXPECT_EQ(out[4], '-');
  EXPECT_EQ(out[10], 'T');
  EXPECT_EQ(out.substr(23, 4), "Z W ");
  EXPECT_NE(out.find("log_test.cc:"), std::string::npos);
  const std::string tail = "] lease 7 lapsed\n";
  EXPECT_EQ(out.substr(out.size() - tail.size()), tail);
}

TEST(LogTest, BelowTheLevelNothingIsEvaluatedOrWritten) {
  ASSERT_EQ(MinLogLevel(), LogLevel::kInfo) << "SQUEEZE_LOG_LEVEL is unset in tests";
  int evaluated = 0;
  const std::string out = CaptureStderr([&] { SQ_LOG(DEBUG) << ++evaluated; });
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(evaluated, 0);
}

TEST(LogTest, LinesOfConcurrentThreadsStayWhole) {
  const std::string out = CaptureStderr([] {
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([t] {
        for (int i = 0; i < 200; ++i) SQ_LOG(INFO) << "thread " << t << " line " << i << " end";
      });
    }
    for (std::thread& th : threads) th.join();
  });
  int lines = 0;
  for (size_t start = 0, end; (end = out.find('\n', start)) != std::string::npos; start = end + 1) {
    const std::string line = out.substr(start, end - start);
    EXPECT_EQ(line.substr(line.size() - 4), " end") << line;
    ++lines;
  }
  EXPECT_EQ(lines, 800);
}

}  // namespace
}  // namespace squeeze

namespace squeeze {
namespace {

TEST(LogTest, JsonLinesCarryLevelServiceSourceIdsAndTheEscapedMessage) {
  LogLine line(LogLevel::kError, "services/worker/worker.cc", 42, "job-1", "task-2");
  line.stream() << "failed: \"quoted\"\n\tback\\slash \x01 naïve";
  const auto j = nlohmann::json::parse(line.Render(LogFormat::kJson));
  EXPECT_EQ(j["level"], "error");
  EXPECT_EQ(j["source"], "worker.cc:42");
  EXPECT_EQ(j["job_id"], "job-1");
  EXPECT_EQ(j["task_id"], "task-2");
  EXPECT_FALSE(j["service"].get<std::string>().empty());
  EXPECT_EQ(j["msg"], "failed: \"quoted\"\n\tback\\slash \x01 naïve");
  EXPECT_EQ(j["time"].get<std::string>().size(), 24u) << j["time"];
}

TEST(LogTest, TextLinesNameTheJobAndTask) {
  LogLine line(LogLevel::kInfo, "coordinator.cc", 7, "job-1", "task-2");
  line.stream() << "leased";
  const std::string text = line.Render(LogFormat::kText);
  EXPECT_NE(text.find(" I coordinator.cc:7] job=job-1 task=task-2 leased"), std::string::npos)
      << text;
  LogLine plain(LogLevel::kInfo, "coordinator.cc", 7);
  plain.stream() << "started";
  EXPECT_NE(plain.Render(LogFormat::kText).find("coordinator.cc:7] started"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(plain.Render(LogFormat::kJson)).count("job_id"), 0u);
}

}  // namespace
}  // namespace squeeze
