// The PostgreSQL state store and leader lease (state_store.h, leader_lease.h), over libpq.
#include <libpq-fe.h>

#include <string>
#include <vector>
#include "absl/synchronization/mutex.h"

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "services/coordinator/leader_lease.h"
#include "services/coordinator/state_store.h"

namespace squeeze::coordinator {
namespace {

// Created by whichever coordinator comes first; the advisory lock keeps two from racing.
constexpr char kSchema[] =
    "SET client_min_messages TO WARNING;"  // no NOTICE for tables that exist
    "BEGIN;"
    "SELECT pg_advisory_xact_lock(7070);"
    "CREATE TABLE IF NOT EXISTS squeeze_jobs (id TEXT PRIMARY KEY, sequence BIGINT NOT NULL,"
    "  tenant TEXT NOT NULL, request_id TEXT NOT NULL, state INTEGER NOT NULL,"
    "  record BYTEA NOT NULL);"
    "CREATE TABLE IF NOT EXISTS squeeze_events (job_id TEXT NOT NULL, sequence BIGINT NOT NULL,"
    "  event BYTEA NOT NULL, PRIMARY KEY (job_id, sequence));"
    "CREATE TABLE IF NOT EXISTS squeeze_leader (id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  holder TEXT NOT NULL, expires_at TIMESTAMPTZ NOT NULL);"
    "INSERT INTO squeeze_leader VALUES (1, '', 'epoch') ON CONFLICT (id) DO NOTHING;"
    "COMMIT;";

// One libpq connection, reconnected when it breaks; results freed on every path.
class PgConnection {
 public:
  ~PgConnection() {
    if (conn_) PQfinish(conn_);
  }

  absl::Status Open(const std::string& conninfo) {
    conn_ = PQconnectdb(conninfo.c_str());
    if (PQstatus(conn_) != CONNECTION_OK) return Error("cannot connect");
    return Exec(kSchema, "cannot create the schema");
  }

  // The connection, reset if it broke since the last call.
  PGconn* Get() {
    if (PQstatus(conn_) != CONNECTION_OK) PQreset(conn_);
    return conn_;
  }

  absl::Status Exec(const char* sql, const char* what) {
    PGresult* r = PQexec(Get(), sql);
    const ExecStatusType status = PQresultStatus(r);
    PQclear(r);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      PQclear(PQexec(conn_, "ROLLBACK"));
      return Error(what);
    }
    return absl::OkStatus();
  }

  absl::Status Error(const char* what) const {
    std::string message = conn_ ? PQerrorMessage(conn_) : "out of memory";
    while (!message.empty() && (message.back() == '\n' || message.back() == ' '))
      message.pop_back();
    return absl::UnavailableError(absl::StrCat("postgresql state store: ", what, ": ", message));
  }

 private:
  PGconn* conn_ = nullptr;
};

// A statement's parameters: text, or binary where a length is given (BYTEA).
struct Params {
  std::vector<std::string> values;
  std::vector<int> binary;
  void Text(std::string v) {
    values.push_back(std::move(v));
    binary.push_back(0);
  }
  void Bytes(std::string v) {
    values.push_back(std::move(v));
    binary.push_back(1);
  }
  PGresult* Exec(PGconn* conn, const char* sql, int result_format = 0) const {
    std::vector<const char*> ptrs;
    std::vector<int> lengths;
    for (const std::string& v : values) {
      ptrs.push_back(v.data());
      lengths.push_back(static_cast<int>(v.size()));
    }
    return PQexecParams(conn, sql, static_cast<int>(values.size()), nullptr, ptrs.data(),
                        lengths.data(), binary.data(), result_format);
  }
};

class PostgresStateStore : public StateStore {
 public:
  explicit PostgresStateStore(std::string leader) : leader_(std::move(leader)) {}
  absl::Status Open(const std::string& conninfo) {
    absl::MutexLock lock(&mu_);
    return db_.Open(conninfo);
  }

  absl::Status Commit(const std::vector<const v1::JobRecord*>& jobs,
                      const std::vector<StoredEvent>& events) override {
    absl::MutexLock lock(&mu_);
    SQ_RETURN_IF_ERROR(db_.Exec("BEGIN", "cannot begin"));
    // The fence: the row stays share-locked until COMMIT, so a standby's takeover waits for this
    // transaction and every later commit of ours sees the new holder.
    Params fence;
    fence.Text(leader_);
    PGresult* r = fence.Exec(db_.Get(),
                             "SELECT 1 FROM squeeze_leader WHERE id = 1 AND holder = $1 FOR SHARE");
    const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    const bool leads = ok && PQntuples(r) == 1;
    PQclear(r);
    if (!ok) return Rollback("cannot check the leader lease");
    if (!leads) {
      db_.Exec("ROLLBACK", "cannot roll back").IgnoreError();
      return absl::FailedPreconditionError(absl::StrCat(
          "postgresql state store: coordinator ", leader_, " no longer holds the leader lease"));
    }
    for (const v1::JobRecord* job : jobs) {
      Params p;
      p.Text(job->job().id());
      p.Text(std::to_string(job->sequence()));
      p.Text(job->job().tenant());
      p.Text(job->job().request_id());
      p.Text(std::to_string(job->job().state()));
      p.Bytes(job->SerializeAsString());
      if (!Ran(p.Exec(db_.Get(),
                      "INSERT INTO squeeze_jobs (id, sequence, tenant, request_id, state, record) "
                      "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET "
                      "state = excluded.state, record = excluded.record"))) {
        return Rollback("cannot write a job");
      }
    }
    for (const StoredEvent& e : events) {
      Params p;
      p.Text(e.job_id);
      p.Text(std::to_string(e.event.sequence()));
      p.Bytes(e.event.SerializeAsString());
      if (!Ran(p.Exec(db_.Get(),
                      "INSERT INTO squeeze_events (job_id, sequence, event) VALUES ($1, $2, $3) "
                      "ON CONFLICT (job_id, sequence) DO UPDATE SET event = excluded.event"))) {
        return Rollback("cannot write an event");
      }
    }
    return db_.Exec("COMMIT", "cannot commit");
  }

  absl::StatusOr<std::vector<v1::JobRecord>> LoadJobs() override {
    absl::MutexLock lock(&mu_);
    PGresult* r = PQexecParams(db_.Get(), "SELECT record FROM squeeze_jobs ORDER BY sequence", 0,
                               nullptr, nullptr, nullptr, nullptr, /*resultFormat=*/1);
    std::vector<v1::JobRecord> out;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      PQclear(r);
      return db_.Error("cannot read jobs");
    }
    for (int i = 0; i < PQntuples(r); ++i) {
      v1::JobRecord job;
      if (!job.ParseFromArray(PQgetvalue(r, i, 0), PQgetlength(r, i, 0))) {
        PQclear(r);
        return absl::DataLossError("postgresql state store: a job record does not parse");
      }
      out.push_back(std::move(job));
    }
    PQclear(r);
    return out;
  }

  absl::StatusOr<std::vector<StoredEvent>> LoadEvents() override {
    absl::MutexLock lock(&mu_);
    PGresult* r = PQexecParams(db_.Get(),
                               "SELECT job_id, event FROM squeeze_events ORDER BY job_id, sequence",
                               0, nullptr, nullptr, nullptr, nullptr, /*resultFormat=*/1);
    std::vector<StoredEvent> out;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      PQclear(r);
      return db_.Error("cannot read events");
    }
    for (int i = 0; i < PQntuples(r); ++i) {
      StoredEvent e;
      e.job_id.assign(PQgetvalue(r, i, 0), PQgetlength(r, i, 0));
      e.event.ParseFromArray(PQgetvalue(r, i, 1), PQgetlength(r, i, 1));
      out.push_back(std::move(e));
    }
    PQclear(r);
    return out;
  }

 private:
  static bool Ran(PGresult* r) {
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok;
  }
  absl::Status Rollback(const char* what) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    absl::Status s = db_.Error(what);
    PQclear(PQexec(db_.Get(), "ROLLBACK"));
    return s;
  }

  const std::string leader_;
  absl::Mutex mu_;
  PgConnection db_ ABSL_GUARDED_BY(mu_);
};

class PostgresLeaderLease : public LeaderLease {
 public:
  absl::Status Open(const std::string& conninfo) {
    absl::MutexLock lock(&mu_);
    return db_.Open(conninfo);
  }

  absl::StatusOr<bool> TryAcquire(const std::string& holder, int64_t ttl_ms) override {
    absl::MutexLock lock(&mu_);
    Params p;
    p.Text(holder);
    p.Text(std::to_string(ttl_ms));
    PGresult* r = p.Exec(db_.Get(),
                         "UPDATE squeeze_leader SET holder = $1, expires_at = clock_timestamp() + "
                         "$2 * interval '1 millisecond' WHERE id = 1 AND (holder = $1 OR "
                         "expires_at < clock_timestamp())");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
      PQclear(r);
      return db_.Error("cannot take the leader lease");
    }
    const bool leads = std::string(PQcmdTuples(r)) == "1";
    PQclear(r);
    return leads;
  }

  absl::Status Release(const std::string& holder) override {
    absl::MutexLock lock(&mu_);
    Params p;
    p.Text(holder);
    PGresult* r = p.Exec(db_.Get(),
                         "UPDATE squeeze_leader SET expires_at = 'epoch' WHERE id = 1 AND "
                         "holder = $1");
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? absl::OkStatus() : db_.Error("cannot release the leader lease");
  }

 private:
  absl::Mutex mu_;
  PgConnection db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> OpenPostgresStateStore(const std::string& conninfo,
                                                                   const std::string& leader) {
  auto store = std::make_unique<PostgresStateStore>(leader);
  if (auto s = store->Open(conninfo); !s.ok()) return s;
  return store;
}

absl::StatusOr<std::unique_ptr<LeaderLease>> OpenPostgresLeaderLease(const std::string& conninfo) {
  auto lease = std::make_unique<PostgresLeaderLease>();
  if (auto s = lease->Open(conninfo); !s.ok()) return s;
  return lease;
}

}  // namespace squeeze::coordinator
