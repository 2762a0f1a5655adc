// Which of several coordinators sharing one state store leads. The leader holds a lease row in
// the database and renews it; a standby waits until the lease lapses and takes it. Times are the
// database's clock, so the coordinators' clocks need not agree. Commits of a coordinator that is
// no longer the holder fail (the state store fences them), so a leader that lost its lease cannot
// write over its successor's state even before it notices.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace squeeze::coordinator {

class LeaderLease {
 public:
  virtual ~LeaderLease() = default;
  // Takes the lease if it is free or has lapsed, or renews it if `holder` has it; true when
  // `holder` now leads for `ttl_ms`. An error says nothing either way (the database is
  // unreachable): the caller keeps its role until the lease could have lapsed.
  virtual absl::StatusOr<bool> TryAcquire(const std::string& holder, int64_t ttl_ms) = 0;
  // Gives the lease up at once, if `holder` has it (a clean shutdown: the standby need not wait).
  virtual absl::Status Release(const std::string& holder) = 0;
};

// The lease in the PostgreSQL database at `conninfo` (libpq's key=value or postgresql:// form).
absl::StatusOr<std::unique_ptr<LeaderLease>> OpenPostgresLeaderLease(const std::string& conninfo);

}  // namespace squeeze::coordinator
