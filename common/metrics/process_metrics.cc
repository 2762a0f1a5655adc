#include "common/metrics/process_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <sstream>

#include "common/base/file_util.h"
#include "common/metrics/gauge_family.h"

namespace squeeze {
namespace {

// A /proc file (regular, reported as 0 bytes, read to its end); empty when unreadable.
std::string ReadProcFile(const std::string& path) {
  return ReadFileToString(path, int64_t{1} << 20).value_or("");
}

prometheus::MetricFamily OneCounter(const std::string& name, const std::string& help,
                                    double value) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = prometheus::MetricType::Counter;
  prometheus::ClientMetric m;
  m.counter.value = value;
  f.metric.push_back(std::move(m));
  return f;
}

}  // namespace

ProcessMetrics::ProcessMetrics(std::string proc_dir, std::string proc_root)
    : proc_dir_(std::move(proc_dir)), proc_root_(std::move(proc_root)) {}

std::vector<prometheus::MetricFamily> ProcessMetrics::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  // /proc/PID/stat: "pid (comm) state ppid ...": the command may hold spaces and parentheses,
  // so fields are counted from the last ')'. After it, field 3 (state) is index 0.
  const std::string stat = ReadProcFile(proc_dir_ + "/stat");
  const size_t paren = stat.rfind(')');
  if (paren != std::string::npos) {
    std::istringstream fields(stat.substr(paren + 2));
    std::vector<std::string> f;
    for (std::string v; fields >> v;) f.push_back(v);
    // Fields 14 utime, 15 stime, 20 num_threads, 22 starttime, 23 vsize, 24 rss (1-based).
    if (f.size() >= 22) {
      const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
      const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
      out.push_back(OneCounter("process_cpu_seconds_total",
                               "User and system CPU time spent, in seconds.",
                               (std::stod(f[11]) + std::stod(f[12])) / ticks));
      out.push_back(OneGauge("process_threads", "Threads of the process.", std::stod(f[17])));
      out.push_back(OneGauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                             std::stod(f[20])));
      out.push_back(OneGauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                             std::stod(f[21]) * page));
      // Start time: boot time (btime in /proc/stat) plus the start in ticks since boot.
      std::istringstream system(ReadProcFile(proc_root_ + "/stat"));
      for (std::string line; std::getline(system, line);) {
        if (line.rfind("btime ", 0) == 0) {
          out.push_back(OneGauge("process_start_time_seconds",
                                 "Start time of the process since the Unix epoch, in seconds.",
                                 std::stod(line.substr(6)) + std::stod(f[19]) / ticks));
        }
      }
    }
  }
  std::error_code ec;
  double fds = 0;
  for (auto it = std::filesystem::directory_iterator(proc_dir_ + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++fds;
  if (!ec) out.push_back(OneGauge("process_open_fds", "Open file descriptors.", fds));
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    out.push_back(OneGauge("process_max_fds", "The limit on open file descriptors.",
                           static_cast<double>(limit.rlim_cur)));
  }
  return out;
}

}  // namespace squeeze
