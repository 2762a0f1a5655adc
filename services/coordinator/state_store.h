// Durable coordinator state: job records (tasks inside) and job events. The scheduler commits
// every state change here before acknowledging it. SQLite is the embedded default; PostgreSQL is
// for a team platform, where a standby coordinator shares the database (leader_lease.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "squeeze/v1/state.pb.h"

namespace squeeze::coordinator {

struct StoredEvent {
  std::string job_id;
  v1::JobEvent event;
};

class StateStore {
 public:
  virtual ~StateStore() = default;
  // Writes the records and appends the events in one transaction.
  virtual absl::Status Commit(const std::vector<const v1::JobRecord*>& jobs,
                              const std::vector<StoredEvent>& events) = 0;
  virtual absl::StatusOr<std::vector<v1::JobRecord>> LoadJobs() = 0;
  virtual absl::StatusOr<std::vector<StoredEvent>> LoadEvents() = 0;
};

// SQLite in WAL mode at `path` (created if absent). `synchronous_full` fsyncs every commit
// (durable across power loss); otherwise commits survive process crashes, which is what a
// SIGKILLed coordinator needs, at a fraction of the cost.
absl::StatusOr<std::unique_ptr<StateStore>> OpenSqliteStateStore(const std::string& path,
                                                                 bool synchronous_full = false);

// PostgreSQL at `conninfo` (libpq's key=value or postgresql:// form); the tables are created if
// absent. Every commit checks, in its transaction, that `leader` still holds the leader lease,
// and fails with FailedPrecondition when it does not.
absl::StatusOr<std::unique_ptr<StateStore>> OpenPostgresStateStore(const std::string& conninfo,
                                                                   const std::string& leader);

}  // namespace squeeze::coordinator
