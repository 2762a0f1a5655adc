// One logger for the services: SQ_LOG(INFO) << "..."; writes one line to stderr,
//   2026-12-02T11:42:07.123Z W coordinator.cc:415] lost the leader lease ...
// whole (lines of concurrent threads do not interleave). Lines below the level in
// SQUEEZE_LOG_LEVEL (debug, info, warning, error; default info) are dropped. Output meant for a
// user of a command (squeezectl's tables and errors) does not go through here.
#pragma once

#include <sstream>

namespace squeeze {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// The level from SQUEEZE_LOG_LEVEL, read once.
LogLevel MinLogLevel();

// Collects one line and writes it when destroyed.
class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line);
  ~LogLine();
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;
  std::ostream& stream() { return text_; }

 private:
  LogLevel level_;
  std::ostringstream text_;
};

}  // namespace squeeze

#define SQ_LOG_LEVEL_DEBUG ::squeeze::LogLevel::kDebug
#define SQ_LOG_LEVEL_INFO ::squeeze::LogLevel::kInfo
#define SQ_LOG_LEVEL_WARNING ::squeeze::LogLevel::kWarning
#define SQ_LOG_LEVEL_ERROR ::squeeze::LogLevel::kError
#define SQ_LOG(severity)                                    \
  if (SQ_LOG_LEVEL_##severity < ::squeeze::MinLogLevel()) { \
  } else                                                    \
    ::squeeze::LogLine(SQ_LOG_LEVEL_##severity, __FILE__, __LINE__).stream()
