// Load on a real coordinator (gRPC on loopback, SQLite on disk): submit N jobs, then M simulated
// workers lease, heartbeat and complete their no-op tasks. Prints throughput and SubmitJob /
// LeaseTask latency percentiles, next to a reference measured in the same run: the rate of bare
// SQLite commits of the same record size, the floor of what a durable coordinator can do here.
//
//   coordinator_load_bench [--jobs 5000] [--workers 100] --model DIR
#include <grpcpp/grpcpp.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <thread>
#include <vector>

#include "common/base/file_util.h"
#include "services/cli/flags.h"
#include "services/coordinator/coordinator.h"
#include "squeeze/v1/jobs.grpc.pb.h"
#include "squeeze/v1/worker.grpc.pb.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Commits/s of single-row upserts of `bytes`-byte blobs, WAL, synchronous=NORMAL: the same
// durability settings the coordinator uses.
double SqliteCommitsPerSecond(const std::string& path, size_t bytes, int count) {
  sqlite3* db;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db,
               "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
               "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB);",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* stmt;
  sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO t (id, b) VALUES (?, ?)", -1, &stmt, nullptr);
  std::string blob(bytes, 'x');
  const auto start = Clock::now();
  for (int i = 0; i < count; ++i) {
    sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
    sqlite3_reset(stmt);
    sqlite3_bind_int(stmt, 1, i % 1000);
    sqlite3_bind_blob(stmt, 2, blob.data(), static_cast<int>(blob.size()), SQLITE_STATIC);
    sqlite3_step(stmt);
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return count / seconds;
}

}  // namespace

int main(int argc, char** argv) {
  squeeze::cli::Flags flags;
  flags.Value("jobs", "5000").Value("workers", "100").Value("model").Value("submitters", "4");
  if (auto s = flags.Parse({argv + 1, argv + argc}); !s.ok()) {
    std::cerr << "coordinator_load_bench: " << s.message() << "\n";
    return 2;
  }
  auto model = flags.Get("model");
  if (!model.ok()) {
    std::cerr << "coordinator_load_bench: " << model.status().message() << "\n";
    return 2;
  }
  const int jobs = static_cast<int>(*flags.GetInt("jobs"));
  const int workers = static_cast<int>(*flags.GetInt("workers"));
  const int submitters = static_cast<int>(*flags.GetInt("submitters"));
  const fs::path dir =
      fs::temp_directory_path() / ("coordinator_bench_" + std::to_string(::getpid()));
  squeeze::RemoveTree(dir).IgnoreError();

  squeeze::coordinator::CoordinatorOptions options;
  options.listen_address = "127.0.0.1:0";
  options.state_dir = (dir / "state").string();
  options.scheduler.lease_timeout_ms = 30000;
  auto coordinator = squeeze::coordinator::Coordinator::Start(options);
  if (!coordinator.ok()) {
    std::cerr << coordinator.status() << "\n";
    return 1;
  }
  const std::string address = (*coordinator)->address();
  const std::string recipe =
      "model: " + *model + "\nstages:\n  - quantize: {method: rtn, bits: 4}\n";

  // Phase 1: submissions.
  std::vector<std::vector<double>> submit_ms(submitters);
  const auto submit_start = Clock::now();
  {
    std::vector<std::thread> threads;
    for (int s = 0; s < submitters; ++s) {
      threads.emplace_back([&, s] {
        auto stub = squeeze::v1::JobService::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
        for (int i = s; i < jobs; i += submitters) {
          grpc::ClientContext context;
          squeeze::v1::SubmitJobRequest request;
          request.set_recipe_yaml(recipe);
          request.set_request_id("bench-" + std::to_string(i));
          squeeze::v1::SubmitJobResponse response;
          const auto t0 = Clock::now();
          grpc::Status st = stub->SubmitJob(&context, request, &response);
          submit_ms[s].push_back(Ms(Clock::now() - t0));
          if (!st.ok()) std::cerr << "submit: " << st.error_message() << "\n";
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  const double submit_seconds = std::chrono::duration<double>(Clock::now() - submit_start).count();

  // Phase 2: workers drain the queue.
  std::atomic<int> completed{0};
  std::vector<std::vector<double>> lease_ms(workers);
  const auto drain_start = Clock::now();
  {
    std::vector<std::thread> threads;
    for (int w = 0; w < workers; ++w) {
      threads.emplace_back([&, w] {
        auto stub = squeeze::v1::WorkerService::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
        squeeze::v1::RegisterWorkerRequest reg;
        reg.set_node("sim-" + std::to_string(w));
        reg.add_devices()->set_name("cpu");
        reg.add_capabilities("quantize");
        squeeze::v1::RegisterWorkerResponse registered;
        {
          grpc::ClientContext context;
          stub->RegisterWorker(&context, reg, &registered);
        }
        while (completed.load() < jobs) {
          squeeze::v1::LeaseTaskRequest request;
          request.set_worker_id(registered.worker_id());
          request.set_wait_ms(200);
          squeeze::v1::LeaseTaskResponse response;
          grpc::ClientContext context;
          const auto t0 = Clock::now();
          if (!stub->LeaseTask(&context, request, &response).ok() || !response.has_lease())
            continue;
          lease_ms[w].push_back(Ms(Clock::now() - t0));
          const auto& lease = response.lease();
          {
            grpc::ClientContext hc;
            squeeze::v1::HeartbeatRequest hb;
            hb.set_worker_id(registered.worker_id());
            hb.set_task_id(lease.task_id());
            hb.set_attempt(lease.attempt());
            squeeze::v1::HeartbeatResponse hr;
            stub->Heartbeat(&hc, hb, &hr);
          }
          grpc::ClientContext cc;
          squeeze::v1::CompleteTaskRequest done;
          done.set_worker_id(registered.worker_id());
          done.set_task_id(lease.task_id());
          done.set_attempt(lease.attempt());
          done.set_result_json("{}");
          squeeze::v1::CompleteTaskResponse cr;
          if (stub->CompleteTask(&cc, done, &cr).ok()) completed++;
        }
      });
    }
    for (auto& t : threads) t.join();
  }
  const double drain_seconds = std::chrono::duration<double>(Clock::now() - drain_start).count();
  (*coordinator)->Shutdown();

  std::vector<double> all_submit, all_lease;
  for (auto& v : submit_ms) all_submit.insert(all_submit.end(), v.begin(), v.end());
  for (auto& v : lease_ms) all_lease.insert(all_lease.end(), v.begin(), v.end());
  const double reference = SqliteCommitsPerSecond((dir / "reference.db").string(), 1500, 5000);
  const double tasks_per_second = completed / drain_seconds;
  // Each task costs two durable commits in the coordinator (lease, complete).
  std::printf("coordinator load: %d jobs, %d simulated workers, SQLite on disk, gRPC on loopback\n",
              jobs, workers);
  std::printf("  submit     %8.0f jobs/s    SubmitJob p50 %6.2f ms  p99 %6.2f ms\n",
              jobs / submit_seconds, Percentile(all_submit, 0.5), Percentile(all_submit, 0.99));
  std::printf(
      "  drain      %8.0f tasks/s   LeaseTask p50 %6.2f ms  p99 %6.2f ms  (target >= 500 tasks/s, "
      "p99 < 20 ms)\n",
      tasks_per_second, Percentile(all_lease, 0.5), Percentile(all_lease, 0.99));
  std::printf("  reference  %8.0f bare SQLite commits/s (1.5 KB rows, same settings)\n", reference);
  std::printf("  ratio      %8.3f  coordinator durable commits/s over bare SQLite commits/s\n",
              2 * tasks_per_second / reference);
  squeeze::RemoveTree(dir).IgnoreError();
  return completed == jobs ? 0 : 1;
}
