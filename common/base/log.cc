#include "common/base/log.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

namespace squeeze {

LogLevel MinLogLevel() {
  static const LogLevel level = [] {
    const char* v = std::getenv("SQUEEZE_LOG_LEVEL");
    const std::string s = v ? v : "";
    if (s == "debug") return LogLevel::kDebug;
    if (s == "warning") return LogLevel::kWarning;
    if (s == "error") return LogLevel::kError;
    return LogLevel::kInfo;
  }();
  return level;
}

LogLine::LogLine(LogLevel level, const char* file, int line) : level_(level) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm utc;
  ::gmtime_r(&seconds, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
  const char* base = std::strrchr(file, '/');
  static constexpr char kLetters[] = {'D', 'I', 'W', 'E'};
  char ms_text[8];
  std::snprintf(ms_text, sizeof(ms_text), ".%03dZ", ms);
  text_ << stamp << ms_text << ' ' << kLetters[static_cast<int>(level)] << ' '
        << (base ? base + 1 : file) << ':' << line << "] ";
}

LogLine::~LogLine() {
  text_ << '\n';
  const std::string s = text_.str();
  // One write(2) per line: lines of concurrent threads and processes stay whole.
  ssize_t unused = ::write(STDERR_FILENO, s.data(), s.size());
  (void)unused;
  (void)level_;
}

}  // namespace squeeze
