// The coordinator's jobs in memory, indexed, with their event logs and the durable commit of both.
// Not locked itself: the scheduler owns one behind its mutex, so a change to a record, its events
// and its commit happen under one lock.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "services/coordinator/state_store.h"
#include "squeeze/v1/state.pb.h"

namespace squeeze::coordinator {

bool IsFinished(v1::JobState state);

class JobTable {
 public:
  struct TaskRef {
    v1::JobRecord* job;
    v1::TaskRecord* task;
  };

  explicit JobTable(StateStore* state) : state_(state) {}

  // Reads the stored event logs into memory and returns the stored records, for the caller to
  // bring up to date and Insert.
  absl::StatusOr<std::vector<v1::JobRecord>> LoadStored();

  // Takes a record and indexes it (by id, request id, task ids and, when unfinished, scheduling
  // order). Returns it.
  v1::JobRecord& Insert(std::unique_ptr<v1::JobRecord> record);
  // Forgets a job entirely: a submission that could not be made durable.
  void Erase(const std::string& job_id);
  // The next submission's sequence (scheduling order among equal priorities, and list order).
  int64_t NextSequence() { return next_sequence_++; }

  v1::JobRecord* Find(const std::string& job_id);
  v1::JobRecord* FindByRequest(const std::string& tenant, const std::string& request_id);
  std::optional<TaskRef> FindTask(const std::string& task_id);
  const std::map<std::string, std::unique_ptr<v1::JobRecord>>& jobs() const { return jobs_; }
  // Unfinished jobs in scheduling order: higher priority first, then older first.
  std::vector<v1::JobRecord*> ActiveInOrder();
  // Takes a job out of the scheduling order (it finished).
  void Deactivate(const v1::JobRecord& r);

  // Numbers `event` in `r`'s log and keeps it; a durable one is written by the next Commit.
  void AddEvent(v1::JobRecord& r, v1::JobEvent event, int64_t now_ms, bool durable);
  std::vector<v1::JobEvent> EventsAfter(const std::string& job_id, int64_t after_sequence) const;
  // The sequence of the job's last event, 0 when it has none.
  int64_t LastEventSequence(const std::string& job_id) const;

  // Writes `r` and every durable event added since the last commit, in one transaction.
  absl::Status Commit(const v1::JobRecord& r);

 private:
  using ActiveKey = std::tuple<int, int64_t, std::string>;  // (-priority, sequence, id)
  static ActiveKey KeyOf(const v1::JobRecord& r);

  StateStore* const state_;
  std::map<std::string, std::unique_ptr<v1::JobRecord>> jobs_;
  std::set<ActiveKey> active_;
  std::map<std::pair<std::string, std::string>, std::string> by_request_;  // (tenant, request)
  std::map<std::string, std::pair<std::string, int>> task_index_;          // task -> (job, index)
  std::map<std::string, std::vector<v1::JobEvent>> events_;
  std::vector<StoredEvent> pending_events_;
  int64_t next_sequence_ = 1;
};

}  // namespace squeeze::coordinator
