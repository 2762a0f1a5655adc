#include "services/worker/task_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace squeeze::worker {
namespace {

using Clock = std::chrono::steady_clock;

// A frame larger than this is a broken stream, not a message (updates are a few KB).
constexpr uint32_t kMaxFrameBytes = 64u << 20;

bool WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool ReadAll(int fd, char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::read(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// Frames from a non-blocking stream, as bytes arrive.
class FrameBuffer {
 public:
  void Append(const char* data, size_t size) { buffer_.append(data, size); }
  // The next whole frame's bytes, if one has arrived; `broken` on a length over the limit.
  std::optional<std::string> Next(bool& broken) {
    if (buffer_.size() < 4) return std::nullopt;
    uint32_t size = 0;
    for (int i = 3; i >= 0; --i) size = (size << 8) | static_cast<unsigned char>(buffer_[i]);
    if (size > kMaxFrameBytes) {
      broken = true;
      return std::nullopt;
    }
    if (buffer_.size() < 4 + size) return std::nullopt;
    std::string frame = buffer_.substr(4, size);
    buffer_.erase(0, 4 + size);
    return frame;
  }

 private:
  std::string buffer_;
};

std::string Seconds(int64_t ms) {
  return ms % 1000 == 0 ? absl::StrCat(ms / 1000, "s") : absl::StrCat(ms, "ms");
}

}  // namespace

bool RetryableTaskError(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kUnimplemented:
    case absl::StatusCode::kResourceExhausted:  // a full disk stays full for the next attempt
      return false;
    default:
      return true;
  }
}

bool WriteFrame(int fd, const google::protobuf::MessageLite& message) {
  std::string bytes;
  if (!message.SerializeToString(&bytes) || bytes.size() > kMaxFrameBytes) return false;
  const uint32_t size = static_cast<uint32_t>(bytes.size());
  char header[4];
  for (int i = 0; i < 4; ++i) header[i] = static_cast<char>((size >> (8 * i)) & 0xff);
  return WriteAll(fd, header, 4) && WriteAll(fd, bytes.data(), bytes.size());
}

bool ReadFrame(int fd, google::protobuf::MessageLite& message) {
  char header[4];
  if (!ReadAll(fd, header, 4)) return false;
  uint32_t size = 0;
  for (int i = 3; i >= 0; --i) size = (size << 8) | static_cast<unsigned char>(header[i]);
  if (size > kMaxFrameBytes) return false;
  std::string bytes(size, '\0');
  return ReadAll(fd, bytes.data(), size) && message.ParseFromString(bytes);
}

absl::StatusOr<std::unique_ptr<TaskProcess>> TaskProcess::Start(
    const std::string& executable, const v1::TaskProcessRequest& request) {
  int request_pipe[2], event_pipe[2];
  if (::pipe2(request_pipe, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("task process: pipe: ", std::strerror(errno)));
  }
  if (::pipe2(event_pipe, O_CLOEXEC) != 0) {
    const int err = errno;
    ::close(request_pipe[0]);
    ::close(request_pipe[1]);
    return absl::InternalError(absl::StrCat("task process: pipe: ", std::strerror(err)));
  }
  // Everything the child needs is made before fork: between fork and exec only system calls.
  std::vector<std::string> args = {executable, "run-task"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    for (int fd : {request_pipe[0], request_pipe[1], event_pipe[0], event_pipe[1]}) ::close(fd);
    return absl::ResourceExhaustedError(absl::StrCat("task process: fork: ", std::strerror(err)));
  }
  if (pid == 0) {
    // Its own process group, so that a kill reaches whatever it starts; and it dies with the
    // worker rather than holding a GPU for nobody.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    // dup2 onto a different number clears close-on-exec; the event pipe's write end may already
    // be 3, so it goes through a free number first.
    const int event_fd = ::fcntl(event_pipe[1], F_DUPFD, 10);
    if (event_fd < 0 || ::dup2(request_pipe[0], 0) < 0 || ::dup2(event_fd, kTaskEventFd) < 0) {
      ::_exit(127);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::setpgid(pid, pid);  // also here: whichever runs first, the group exists before any kill
  ::close(request_pipe[0]);
  ::close(event_pipe[1]);
  std::unique_ptr<TaskProcess> process(
      new TaskProcess(pid, request_pipe[1], event_pipe[0],
                      absl::StrCat(request.lease().kind(), " task ", request.lease().task_id())));
  ::fcntl(event_pipe[0], F_SETFL, ::fcntl(event_pipe[0], F_GETFL) | O_NONBLOCK);
  if (!WriteFrame(process->request_fd_, request)) {
    return absl::InternalError(
        absl::StrCat(process->name_, ": could not start its process (", executable, ")"));
  }
  return process;
}

TaskProcess::~TaskProcess() {
  if (!reaped_) {
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (request_fd_ >= 0) ::close(request_fd_);
  ::close(event_fd_);
}

TaskProcessResult TaskProcess::Supervise(
    TaskReport& report, const std::atomic<bool>& cancel, const TaskProcessLimits& limits,
    const std::function<void(const v1::TaskProcessUpdate&)>& on_update) {
  const Clock::time_point start = Clock::now();
  Clock::time_point last_progress = start;
  std::optional<Clock::time_point> kill_after;  // set by a cancel
  enum class KilledFor { kNothing, kTimeout, kStall, kCancel } killed = KilledFor::kNothing;
  std::optional<v1::TaskProcessOutcome> outcome;
  bool broken_stream = false;
  bool closed = false;  // the child closed its end: poll would return at once from now on
  FrameBuffer frames;
  int wait_status = 0;

  auto drain = [&] {
    char buf[65536];
    for (;;) {
      const ssize_t n = ::read(event_fd_, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n == 0) closed = true;
      if (n <= 0) return;
      frames.Append(buf, static_cast<size_t>(n));
      while (auto frame = frames.Next(broken_stream)) {
        v1::TaskProcessEvent event;
        if (!event.ParseFromString(*frame)) {
          broken_stream = true;
          return;
        }
        if (event.has_update()) {
          if (report.Apply(event.update())) last_progress = Clock::now();
          if (on_update) on_update(event.update());
        } else if (event.has_outcome()) {
          outcome = event.outcome();
        }
      }
    }
  };
  auto kill_group = [&](KilledFor why) {
    if (killed == KilledFor::kNothing) killed = why;
    ::kill(-pid_, SIGKILL);
  };

  for (;;) {
    if (closed) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } else {
      pollfd p{event_fd_, POLLIN, 0};
      ::poll(&p, 1, 100);
      if (p.revents != 0) drain();
    }
    const pid_t done = ::waitpid(pid_, &wait_status, WNOHANG);
    if (done == pid_) {
      reaped_ = true;
      drain();
      break;
    }
    if (killed != KilledFor::kNothing) continue;  // killed: waiting for the exit
    const Clock::time_point now = Clock::now();
    const auto elapsed_ms = [&](Clock::time_point since) {
      return std::chrono::duration_cast<std::chrono::milliseconds>(now - since).count();
    };
    if (limits.timeout_ms > 0 && elapsed_ms(start) > limits.timeout_ms) {
      kill_group(KilledFor::kTimeout);
    } else if (limits.stall_timeout_ms > 0 && elapsed_ms(last_progress) > limits.stall_timeout_ms) {
      kill_group(KilledFor::kStall);
    } else if (cancel && !kill_after) {
      // Closing its stdin asks the task to stop at its next step boundary.
      ::close(request_fd_);
      request_fd_ = -1;
      kill_after = now + std::chrono::milliseconds(limits.kill_grace_ms);
    } else if (kill_after && now >= *kill_after) {
      kill_group(KilledFor::kCancel);
    }
  }
  ::kill(-pid_, SIGKILL);  // anything the task started and left behind

  TaskProcessResult result;
  if (outcome && killed == KilledFor::kNothing) {
    if (outcome->ok()) {
      result.ok = true;
      result.outcome = *std::move(outcome);
      return result;
    }
    result.error = absl::Status(static_cast<absl::StatusCode>(outcome->code()), outcome->message());
    result.retryable = RetryableTaskError(result.error);
    return result;
  }
  switch (killed) {
    case KilledFor::kTimeout:
      result.error = absl::DeadlineExceededError(
          absl::StrCat(name_, " ran longer than its stage's timeout of ",
                       Seconds(limits.timeout_ms), " and was killed"));
      result.retryable = false;  // it would run as long again
      return result;
    case KilledFor::kStall:
      result.error = absl::UnavailableError(
          absl::StrCat(name_, " made no progress for ", Seconds(limits.stall_timeout_ms),
                       " (the worker's --stall-timeout) and was killed"));
      result.retryable = true;  // a hung mount or peer may be back for the next attempt
      return result;
    case KilledFor::kCancel:
      result.error = absl::CancelledError(
          absl::StrCat(name_, " was cancelled and killed after it did not stop within ",
                       Seconds(limits.kill_grace_ms)));
      return result;
    case KilledFor::kNothing:
      break;
  }
  if (cancel) {
    result.error = absl::CancelledError(absl::StrCat(name_, " was cancelled"));
  } else if (WIFSIGNALED(wait_status)) {
    const int sig = WTERMSIG(wait_status);
    result.error = absl::InternalError(
        absl::StrCat(name_, ": its process died of signal ", sig, " (", ::strsignal(sig), ")"));
    result.retryable = true;
  } else {
    result.error = absl::InternalError(absl::StrCat(
        name_, ": its process exited with status ", WEXITSTATUS(wait_status),
        broken_stream ? " after a malformed report" : " without reporting an outcome"));
    result.retryable = true;
  }
  return result;
}

}  // namespace squeeze::worker
