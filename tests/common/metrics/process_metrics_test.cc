#include "common/metrics/process_metrics.h"

#include <prometheus/metric_family.h>

#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>

#include "gtest/gtest.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

std::map<std::string, double> Values(const ProcessMetrics& metrics) {
  std::map<std::string, double> out;
  for (const auto& f : metrics.Collect()) {
    EXPECT_EQ(f.metric.size(), 1u) << f.name;
    out[f.name] = f.type == prometheus::MetricType::Counter ? f.metric[0].counter.value
                                                            : f.metric[0].gauge.value;
  }
  return out;
}

TEST(ProcessMetricsTest, ReadsAHandWrittenProcEntry) {
  const fs::path root = fs::temp_directory_path() / ("proc_fixture_" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root / "self" / "fd");
  for (const char* fd : {"0", "1", "2", "7"}) std::ofstream(root / "self" / "fd" / fd);
  // A command name with a space and a parenthesis, as a process may have.
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::ofstream(root / "self" / "stat")
      << "4242 (squeeze (w) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 " << 3 * ticks << " "
      << 1 * ticks << " 0 0 20 0 9 0 " << 50 * ticks << " 123456789 1000 18446744073709551615\n";
  std::ofstream(root / "stat") << "cpu  1 2 3\nbtime 1700000000\nprocesses 10\n";
  const auto v = Values(ProcessMetrics((root / "self").string(), root.string()));
  EXPECT_DOUBLE_EQ(v.at("process_cpu_seconds_total"), 4.0);
  EXPECT_DOUBLE_EQ(v.at("process_threads"), 9);
  EXPECT_DOUBLE_EQ(v.at("process_virtual_memory_bytes"), 123456789);
  EXPECT_DOUBLE_EQ(v.at("process_resident_memory_bytes"), 1000.0 * ::sysconf(_SC_PAGESIZE));
  EXPECT_DOUBLE_EQ(v.at("process_start_time_seconds"), 1700000050);
  EXPECT_DOUBLE_EQ(v.at("process_open_fds"), 4);
  EXPECT_GT(v.at("process_max_fds"), 0);
  fs::remove_all(root);
}

TEST(ProcessMetricsTest, ThisProcessLooksAlive) {
  const auto v = Values(ProcessMetrics());
  EXPECT_GT(v.at("process_resident_memory_bytes"), 1 << 20);
  EXPECT_GE(v.at("process_open_fds"), 3);
  EXPECT_GE(v.at("process_threads"), 1);
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(v.at("process_start_time_seconds"), now + 1);
  EXPECT_GT(v.at("process_start_time_seconds"), now - 3600) << "this test started recently";
}

}  // namespace
}  // namespace squeeze
