// One logger for the services: SQ_LOG(INFO) << "..."; writes one line to stderr,
//   2026-12-02T11:42:07.123Z W coordinator.cc:415] lost the leader lease ...
// whole (lines of concurrent threads do not interleave). Lines below the level in
// SQUEEZE_LOG_LEVEL (debug, info, warning, error; default info) are dropped. With
// SQUEEZE_LOG_FORMAT=json each line is a JSON object instead, for log pipelines:
//   {"time":"2026-12-02T11:42:07.123Z","level":"warning","service":"squeeze-coordinator",
//    "source":"coordinator.cc:415","msg":"lost the leader lease ..."}
// SQ_LOG_TASK(INFO, job_id, task_id) adds the job and task a line is about ("job_id", "task_id"
// in JSON; "job=... task=..." in text), so one job's lines can be found across services.
// Output meant for a user of a command (squeezectl's tables and errors) does not go through here.
#pragma once

#include <sstream>
#include <string>

#include "absl/strings/string_view.h"

namespace squeeze {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };
enum class LogFormat { kText, kJson };

// The level from SQUEEZE_LOG_LEVEL and the format from SQUEEZE_LOG_FORMAT, each read once.
LogLevel MinLogLevel();
LogFormat CurrentLogFormat();

// `message` as a JSON string literal (quoted, escaped).
std::string JsonQuote(absl::string_view message);

// Collects one line and writes it when destroyed.
class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line, std::string job_id = "",
          std::string task_id = "");
  ~LogLine();
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;
  std::ostream& stream() { return text_; }

  // The finished line (without its newline) in `format`; what the destructor writes.
  std::string Render(LogFormat format) const;

 private:
  LogLevel level_;
  const char* file_;
  int line_;
  std::string job_id_, task_id_;
  std::string time_;
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
#define SQ_LOG_TASK(severity, job_id, task_id)              \
  if (SQ_LOG_LEVEL_##severity < ::squeeze::MinLogLevel()) { \
  } else                                                    \
    ::squeeze::LogLine(SQ_LOG_LEVEL_##severity, __FILE__, __LINE__, (job_id), (task_id)).stream()
