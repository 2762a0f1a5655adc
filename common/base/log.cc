#include "common/base/log.h"

#include <errno.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

namespace squeeze {
namespace {

constexpr const char* kLevelNames[] = {"debug", "info", "warning", "error"};
constexpr char kLevelLetters[] = {'D', 'I', 'W', 'E'};

std::string NowUtc() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  const int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm utc;
  ::gmtime_r(&seconds, &utc);
  char stamp[40];
  const size_t n = std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(stamp + n, sizeof(stamp) - n, ".%03dZ", ms);
  return stamp;
}

}  // namespace

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

LogFormat CurrentLogFormat() {
  static const LogFormat format = [] {
    const char* v = std::getenv("SQUEEZE_LOG_FORMAT");
    return v != nullptr && std::string(v) == "json" ? LogFormat::kJson : LogFormat::kText;
  }();
  return format;
}

std::string JsonQuote(absl::string_view message) {
  std::string out = "\"";
  for (unsigned char c : message) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);  // UTF-8 passes through
        }
    }
  }
  return out + "\"";
}

LogLine::LogLine(LogLevel level, const char* file, int line, std::string job_id,
                 std::string task_id)
    : level_(level),
      file_(file),
      line_(line),
      job_id_(std::move(job_id)),
      task_id_(std::move(task_id)),
      time_(NowUtc()) {}

std::string LogLine::Render(LogFormat format) const {
  const char* base = std::strrchr(file_, '/');
  const std::string source = std::string(base ? base + 1 : file_) + ":" + std::to_string(line_);
  const int level = static_cast<int>(level_);
  if (format == LogFormat::kJson) {
    std::string out = "{\"time\":\"" + time_ + "\",\"level\":\"" + kLevelNames[level] +
                      "\",\"service\":" + JsonQuote(program_invocation_short_name) +
                      ",\"source\":" + JsonQuote(source);
    if (!job_id_.empty()) out += ",\"job_id\":" + JsonQuote(job_id_);
    if (!task_id_.empty()) out += ",\"task_id\":" + JsonQuote(task_id_);
    return out + ",\"msg\":" + JsonQuote(text_.str()) + "}";
  }
  std::string out = time_ + " " + kLevelLetters[level] + " " + source + "] ";
  if (!job_id_.empty()) out += "job=" + job_id_ + " ";
  if (!task_id_.empty()) out += "task=" + task_id_ + " ";
  return out + text_.str();
}

LogLine::~LogLine() {
  const std::string s = Render(CurrentLogFormat()) + "\n";
  // One write(2) per line: lines of concurrent threads and processes stay whole.
  ssize_t unused = ::write(STDERR_FILENO, s.data(), s.size());
  (void)unused;
}

}  // namespace squeeze
