#include <sqlite3.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "services/coordinator/state_store.h"

namespace squeeze::coordinator {
namespace {

class SqliteStateStore : public StateStore {
 public:
  ~SqliteStateStore() override {
    {
      std::lock_guard<std::mutex> lock(checkpoint_mu_);
      stopping_ = true;
    }
    checkpoint_cv_.notify_all();
    if (checkpointer_.joinable()) checkpointer_.join();
    if (checkpoint_db_) sqlite3_close(checkpoint_db_);
    if (upsert_job_) sqlite3_finalize(upsert_job_);
    if (insert_event_) sqlite3_finalize(insert_event_);
    if (db_) sqlite3_close(db_);
  }

  absl::Status Open(const std::string& path, bool synchronous_full) {
    path_ = path;
    if (sqlite3_open_v2(path.c_str(), &db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        nullptr) != SQLITE_OK) {
      return Error("cannot open");
    }
    sqlite3_busy_timeout(db_, 5000);
    const std::string schema = absl::StrCat(
        "PRAGMA journal_mode=WAL;",
        synchronous_full ? "PRAGMA synchronous=FULL;" : "PRAGMA synchronous=NORMAL;",
        // Checkpoints (which fsync the database) run on a thread of their own, not inside a
        // commit that the scheduler waits on.
        "PRAGMA wal_autocheckpoint=0;",
        "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, sequence INTEGER NOT NULL,"
        "  tenant TEXT NOT NULL, request_id TEXT NOT NULL, state INTEGER NOT NULL, record BLOB NOT "
        "NULL);"
        "CREATE TABLE IF NOT EXISTS events (job_id TEXT NOT NULL, sequence INTEGER NOT NULL,"
        "  event BLOB NOT NULL, PRIMARY KEY (job_id, sequence));");
    char* err = nullptr;
    if (sqlite3_exec(db_, schema.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "";
      sqlite3_free(err);
      return absl::UnavailableError(absl::StrCat(path_, ": cannot create schema: ", msg));
    }
    if (sqlite3_prepare_v2(db_,
                           "INSERT INTO jobs (id, sequence, tenant, request_id, state, record) "
                           "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                           "state = excluded.state, record = excluded.record",
                           -1, &upsert_job_, nullptr) != SQLITE_OK ||
        sqlite3_prepare_v2(
            db_, "INSERT OR REPLACE INTO events (job_id, sequence, event) VALUES (?, ?, ?)", -1,
            &insert_event_, nullptr) != SQLITE_OK) {
      return Error("cannot prepare statements");
    }
    if (sqlite3_open_v2(path.c_str(), &checkpoint_db_,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
      return Error("cannot open the checkpoint connection");
    }
    sqlite3_busy_timeout(checkpoint_db_, 5000);
    checkpointer_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(checkpoint_mu_);
      while (!checkpoint_cv_.wait_for(lock, std::chrono::milliseconds(500),
                                      [this] { return stopping_; })) {
        // PASSIVE copies what it can without blocking writers.
        sqlite3_wal_checkpoint_v2(checkpoint_db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr,
                                  nullptr);
      }
    });
    return absl::OkStatus();
  }

  absl::Status Commit(const std::vector<const v1::JobRecord*>& jobs,
                      const std::vector<StoredEvent>& events) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!Exec("BEGIN IMMEDIATE")) return Error("cannot begin");
    std::string blob;
    for (const v1::JobRecord* r : jobs) {
      r->SerializeToString(&blob);
      sqlite3_reset(upsert_job_);
      sqlite3_bind_text(upsert_job_, 1, r->job().id().c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(upsert_job_, 2, r->sequence());
      sqlite3_bind_text(upsert_job_, 3, r->job().tenant().c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(upsert_job_, 4, r->job().request_id().c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int(upsert_job_, 5, r->job().state());
      sqlite3_bind_blob(upsert_job_, 6, blob.data(), static_cast<int>(blob.size()),
                        SQLITE_TRANSIENT);
      if (sqlite3_step(upsert_job_) != SQLITE_DONE) return Rollback("cannot write job");
    }
    for (const StoredEvent& e : events) {
      e.event.SerializeToString(&blob);
      sqlite3_reset(insert_event_);
      sqlite3_bind_text(insert_event_, 1, e.job_id.c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(insert_event_, 2, e.event.sequence());
      sqlite3_bind_blob(insert_event_, 3, blob.data(), static_cast<int>(blob.size()),
                        SQLITE_TRANSIENT);
      if (sqlite3_step(insert_event_) != SQLITE_DONE) return Rollback("cannot write event");
    }
    if (!Exec("COMMIT")) return Rollback("cannot commit");
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<v1::JobRecord>> LoadJobs() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<v1::JobRecord> out;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, "SELECT record FROM jobs ORDER BY sequence", -1, &stmt, nullptr) !=
        SQLITE_OK) {
      return Error("cannot read jobs");
    }
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      v1::JobRecord r;
      if (!r.ParseFromArray(sqlite3_column_blob(stmt, 0), sqlite3_column_bytes(stmt, 0))) {
        sqlite3_finalize(stmt);
        return absl::DataLossError(absl::StrCat(path_, ": a job record does not parse"));
      }
      out.push_back(std::move(r));
    }
    sqlite3_finalize(stmt);
    return out;
  }

  absl::StatusOr<std::vector<StoredEvent>> LoadEvents() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<StoredEvent> out;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, "SELECT job_id, event FROM events ORDER BY job_id, sequence", -1,
                           &stmt, nullptr) != SQLITE_OK) {
      return Error("cannot read events");
    }
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      StoredEvent e;
      e.job_id = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
      e.event.ParseFromArray(sqlite3_column_blob(stmt, 1), sqlite3_column_bytes(stmt, 1));
      out.push_back(std::move(e));
    }
    sqlite3_finalize(stmt);
    return out;
  }

 private:
  bool Exec(const char* sql) {
    return sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) == SQLITE_OK;
  }
  absl::Status Error(absl::string_view what) {
    return absl::UnavailableError(
        absl::StrCat(path_, ": ", what, ": ", db_ ? sqlite3_errmsg(db_) : "?"));
  }
  absl::Status Rollback(absl::string_view what) {
    absl::Status s = Error(what);
    Exec("ROLLBACK");
    return s;
  }

  std::mutex mu_;
  std::mutex checkpoint_mu_;
  std::condition_variable checkpoint_cv_;
  bool stopping_ = false;
  std::thread checkpointer_;
  sqlite3* checkpoint_db_ = nullptr;
  std::string path_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* upsert_job_ = nullptr;
  sqlite3_stmt* insert_event_ = nullptr;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> OpenSqliteStateStore(const std::string& path,
                                                                 bool synchronous_full) {
  auto store = std::make_unique<SqliteStateStore>();
  if (auto s = store->Open(path, synchronous_full); !s.ok()) return s;
  return store;
}

}  // namespace squeeze::coordinator
