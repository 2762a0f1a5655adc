// Load on a real coordinator (gRPC on loopback, SQLite on disk): submit N jobs, then M simulated
// workers lease, heartbeat and complete their no-op tasks. Prints throughput and SubmitJob /
// LeaseTask latency percentiles, next to a reference measured in the same run: the rate of bare
// SQLite commits of the same record size, the floor of what a durable coordinator can do here.
//
//   coordinator_load_bench [--jobs 5000] [--workers 100] [--rate 500] --model DIR
//
// Two drains of `jobs` tasks each: a closed loop with no think time (the most the coordinator
// completes per second; LeaseTask latency there is mostly queueing behind 100 busy clients on two
// cores), then an open loop offering `rate` tasks/s, where LeaseTask latency is the service time
// a worker sees at that load.
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
#include "common/base/flags.h"
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

// Submits `jobs` jobs from `submitters` threads; appends each SubmitJob latency to `latencies_ms`.
bool SubmitAll(const std::string& address, const std::string& recipe, int jobs, int submitters,
               const std::string& request_prefix, std::vector<double>* latencies_ms) {
  std::vector<std::vector<double>> ms(submitters);
  std::atomic<bool> ok{true};
  std::vector<std::thread> threads;
  for (int s = 0; s < submitters; ++s) {
    threads.emplace_back([&, s] {
      auto stub = squeeze::v1::JobService::NewStub(
          grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
      for (int i = s; i < jobs; i += submitters) {
        grpc::ClientContext context;
        squeeze::v1::SubmitJobRequest request;
        request.set_recipe_yaml(recipe);
        request.set_request_id(request_prefix + std::to_string(i));
        squeeze::v1::SubmitJobResponse response;
        const auto t0 = Clock::now();
        grpc::Status st = stub->SubmitJob(&context, request, &response);
        ms[s].push_back(Ms(Clock::now() - t0));
        if (!st.ok()) {
          std::cerr << "submit: " << st.error_message() << "\n";
          ok = false;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  if (latencies_ms != nullptr) {
    for (auto& v : ms) latencies_ms->insert(latencies_ms->end(), v.begin(), v.end());
  }
  return ok;
}

struct DrainResult {
  int completed = 0;
  double seconds = 0;
  std::vector<double> lease_ms;
};

// `workers` simulated workers lease, heartbeat and complete until `jobs` tasks are done. With
// `rate` > 0 they offer `rate` tasks/s in total: each worker starts a cycle every workers/rate
// seconds (staggered), and a LeaseTask's latency counts from the cycle's scheduled start, so a
// coordinator that falls behind is charged for the wait it caused (no coordinated omission).
// With `rate` 0 they run back to back (closed loop, saturation).
DrainResult Drain(const std::string& address, int jobs, int workers, double rate) {
  std::atomic<int> completed{0};
  std::vector<std::vector<double>> lease_ms(workers);
  const auto start = Clock::now();
  const auto period = rate > 0 ? std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(workers / rate))
                               : Clock::duration::zero();
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
      auto scheduled = start + period * w / workers;
      while (completed.load() < jobs) {
        if (rate > 0) {
          std::this_thread::sleep_until(scheduled);
        } else {
          scheduled = Clock::now();
        }
        const auto cycle_start = scheduled;
        scheduled += period;
        squeeze::v1::LeaseTaskRequest request;
        request.set_worker_id(registered.worker_id());
        request.set_wait_ms(200);
        squeeze::v1::LeaseTaskResponse response;
        grpc::ClientContext context;
        if (!stub->LeaseTask(&context, request, &response).ok() || !response.has_lease()) continue;
        lease_ms[w].push_back(Ms(Clock::now() - cycle_start));
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
        done.mutable_result()->mutable_evaluate();
        squeeze::v1::CompleteTaskResponse cr;
        if (stub->CompleteTask(&cc, done, &cr).ok()) completed++;
      }
    });
  }
  for (auto& t : threads) t.join();
  DrainResult result;
  result.completed = completed;
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& v : lease_ms) result.lease_ms.insert(result.lease_ms.end(), v.begin(), v.end());
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  squeeze::Flags flags;
  flags.Value("jobs", "5000")
      .Value("workers", "100")
      .Value("model")
      .Value("submitters", "4")
      .Value("rate", "500");
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
  const double rate = static_cast<double>(*flags.GetInt("rate"));
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
  std::vector<double> all_submit;
  const auto submit_start = Clock::now();
  if (!SubmitAll(address, recipe, jobs, submitters, "bench-", &all_submit)) return 1;
  const double submit_seconds = std::chrono::duration<double>(Clock::now() - submit_start).count();

  // Phase 2: workers drain the queue as fast as they can (throughput). Phase 3: a second batch
  // of jobs drained at the target rate (latency at that load).
  const DrainResult saturated = Drain(address, jobs, workers, /*rate=*/0);
  if (!SubmitAll(address, recipe, jobs, submitters, "paced-", nullptr)) return 1;
  const DrainResult paced = Drain(address, jobs, workers, rate);
  (*coordinator)->Shutdown();

  const double reference = SqliteCommitsPerSecond((dir / "reference.db").string(), 1500, 5000);
  const double tasks_per_second = saturated.completed / saturated.seconds;
  std::printf("coordinator load: %d jobs, %d simulated workers, SQLite on disk, gRPC on loopback\n",
              jobs, workers);
  std::printf("  submit     %8.0f jobs/s    SubmitJob p50 %6.2f ms  p99 %6.2f ms\n",
              jobs / submit_seconds, Percentile(all_submit, 0.5), Percentile(all_submit, 0.99));
  std::printf(
      "  saturated  %8.0f tasks/s   LeaseTask p50 %6.2f ms  p99 %6.2f ms  (closed loop, "
      "target >= 500 tasks/s)\n",
      tasks_per_second, Percentile(saturated.lease_ms, 0.5), Percentile(saturated.lease_ms, 0.99));
  std::printf(
      "  at %4.0f/s  %8.0f tasks/s   LeaseTask p50 %6.2f ms  p99 %6.2f ms  (target p99 < 20 "
      "ms)\n",
      rate, paced.completed / paced.seconds, Percentile(paced.lease_ms, 0.5),
      Percentile(paced.lease_ms, 0.99));
  std::printf("  reference  %8.0f bare SQLite commits/s (1.5 KB rows, same settings)\n", reference);
  // Each task costs two durable commits in the coordinator (lease, complete).
  std::printf("  ratio      %8.3f  coordinator durable commits/s over bare SQLite commits/s\n",
              2 * tasks_per_second / reference);
  squeeze::RemoveTree(dir).IgnoreError();
  return saturated.completed == jobs && paced.completed == jobs ? 0 : 1;
}
