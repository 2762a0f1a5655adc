#include "services/coordinator/job_table.h"

#include "google/protobuf/util/time_util.h"

#include <algorithm>

namespace squeeze::coordinator {

bool IsFinished(v1::JobState state) {
  return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
}

JobTable::ActiveKey JobTable::KeyOf(const v1::JobRecord& r) {
  return {-r.job().priority(), r.sequence(), r.job().id()};
}

v1::JobRecord& JobTable::Insert(std::unique_ptr<v1::JobRecord> record) {
  v1::JobRecord& r = *record;
  const v1::Job& job = r.job();
  next_sequence_ = std::max(next_sequence_, r.sequence() + 1);
  if (!job.request_id().empty()) by_request_[{job.tenant(), job.request_id()}] = job.id();
  for (int i = 0; i < r.tasks_size(); ++i) task_index_[r.tasks(i).task().id()] = {job.id(), i};
  if (!IsFinished(job.state())) active_.insert(KeyOf(r));
  jobs_[job.id()] = std::move(record);
  return r;
}

void JobTable::Erase(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  const v1::JobRecord& r = *it->second;
  active_.erase(KeyOf(r));
  if (!r.job().request_id().empty()) by_request_.erase({r.job().tenant(), r.job().request_id()});
  for (const v1::TaskRecord& t : r.tasks()) task_index_.erase(t.task().id());
  events_.erase(job_id);
  pending_events_.erase(std::remove_if(pending_events_.begin(), pending_events_.end(),
                                       [&](const StoredEvent& e) { return e.job_id == job_id; }),
                        pending_events_.end());
  jobs_.erase(it);
}

v1::JobRecord* JobTable::Find(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

v1::JobRecord* JobTable::FindByRequest(const std::string& tenant, const std::string& request_id) {
  auto it = by_request_.find({tenant, request_id});
  return it == by_request_.end() ? nullptr : Find(it->second);
}

std::optional<JobTable::TaskRef> JobTable::FindTask(const std::string& task_id) {
  auto it = task_index_.find(task_id);
  if (it == task_index_.end()) return std::nullopt;
  v1::JobRecord* r = jobs_.at(it->second.first).get();
  return TaskRef{r, r->mutable_tasks(it->second.second)};
}

std::vector<v1::JobRecord*> JobTable::ActiveInOrder() {
  std::vector<v1::JobRecord*> out;
  out.reserve(active_.size());
  for (const ActiveKey& key : active_) out.push_back(jobs_.at(std::get<2>(key)).get());
  return out;
}

void JobTable::Deactivate(const v1::JobRecord& r) { active_.erase(KeyOf(r)); }

void JobTable::AddEvent(v1::JobRecord& r, v1::JobEvent event, int64_t now_ms, bool durable) {
  // Numbered from 1: watchers ask for events after a sequence, starting from 0.
  const int64_t sequence = std::max<int64_t>(1, r.next_event_sequence());
  event.set_sequence(sequence);
  event.set_unix_ms(now_ms);
  *event.mutable_time() = google::protobuf::util::TimeUtil::MillisecondsToTimestamp(now_ms);
  r.set_next_event_sequence(sequence + 1);
  if (durable) pending_events_.push_back({r.job().id(), event});
  events_[r.job().id()].push_back(std::move(event));
}

absl::StatusOr<std::vector<v1::JobRecord>> JobTable::LoadStored() {
  auto jobs = state_->LoadJobs();
  if (!jobs.ok()) return jobs.status();
  auto events = state_->LoadEvents();
  if (!events.ok()) return events.status();
  for (StoredEvent& e : *events) events_[e.job_id].push_back(std::move(e.event));
  return jobs;
}

std::vector<v1::JobEvent> JobTable::EventsAfter(const std::string& job_id,
                                                int64_t after_sequence) const {
  std::vector<v1::JobEvent> out;
  auto it = events_.find(job_id);
  if (it == events_.end()) return out;
  for (const v1::JobEvent& e : it->second) {
    if (e.sequence() > after_sequence) out.push_back(e);
  }
  return out;
}

int64_t JobTable::LastEventSequence(const std::string& job_id) const {
  auto it = events_.find(job_id);
  return it == events_.end() || it->second.empty() ? 0 : it->second.back().sequence();
}

absl::Status JobTable::Commit(const v1::JobRecord& r) {
  std::vector<StoredEvent> events;
  events.swap(pending_events_);
  return state_->Commit({&r}, events);
}

}  // namespace squeeze::coordinator
