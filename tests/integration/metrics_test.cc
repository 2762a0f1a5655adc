// Metrics with a real Prometheus: a coordinator and a worker export /metrics; promtool accepts
// both scrapes; a Prometheus started here scrapes them while a job runs, and its HTTP API then
// answers for the job counters and the progress gauge. Every metric named by the Grafana
// dashboard and the alert rules in deploy/ must exist in that Prometheus.
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "gtest/gtest.h"
#include "tests/integration/service_harness.h"

namespace squeeze::testing {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// GET on Prometheus's HTTP API with one URL-encoded parameter; the parsed answer.
nlohmann::json PromApi(const std::string& base, const std::string& path, const std::string& param,
                       const std::string& value) {
  auto [code, out] =
      RunCommand({"curl", "-s", "-G", base + path, "--data-urlencode", param + "=" + value});
  if (code != 0) return {};
  return nlohmann::json::parse(out, nullptr, false);
}

double ScalarOf(const nlohmann::json& answer) {
  if (!answer.is_object() || answer.value("status", "") != "success") return -1;
  const auto& result = answer["data"]["result"];
  if (result.empty()) return -1;
  return std::stod(result[0]["value"][1].get<std::string>());
}

TEST(MetricsTest, PrometheusScrapesTheJobAndEveryDashboardMetricExists) {
  ServiceHarness h("metrics");
  const int coordinator_metrics = FreePort(), worker_metrics = FreePort(), prom_port = FreePort();
  h.StartCoordinator({"--metrics-listen", "127.0.0.1:" + std::to_string(coordinator_metrics),
                      "--heartbeat-interval-ms", "200"});
  h.StartWorker("w", {"--metrics-listen", "127.0.0.1:" + std::to_string(worker_metrics),
                      "--step-delay-ms", "400"});

  // The worker's probes reflect its loop: alive, and ready once registered.
  for (const char* probe : {"/healthz", "/readyz"}) {
    std::pair<int, std::string> answer;
    for (int i = 0; i < 50; ++i) {
      answer =
          RunCommand({"curl", "-sf", "http://127.0.0.1:" + std::to_string(worker_metrics) + probe});
      if (answer.first == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(answer.first, 0) << probe << ": " << answer.second;
    EXPECT_EQ(answer.second, "ok\n") << probe;
  }

  // promtool accepts both scrapes.
  for (int port : {coordinator_metrics, worker_metrics}) {
    const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/metrics";
    std::pair<int, std::string> check;
    for (int i = 0; i < 50; ++i) {
      check = RunCommand({"sh", "-c", "curl -sf " + url + " | promtool check metrics"});
      if (check.first == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(check.first, 0) << url << ": " << check.second;
  }

  const std::string config = h.dir() + "/prometheus.yml";
  std::ofstream(config) << "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                        << "scrape_configs:\n"
                        << "  - job_name: squeeze-coordinator\n"
                        << "    static_configs: [{targets: ['127.0.0.1:" << coordinator_metrics
                        << "']}]\n"
                        << "  - job_name: squeeze-worker\n"
                        << "    static_configs: [{targets: ['127.0.0.1:" << worker_metrics
                        << "']}]\n";
  Process prometheus(
      {"/usr/bin/prometheus", "--config.file=" + config, "--storage.tsdb.path=" + h.dir() + "/tsdb",
       "--web.listen-address=127.0.0.1:" + std::to_string(prom_port)},
      h.dir() + "/prometheus.log");
  const std::string api = "http://127.0.0.1:" + std::to_string(prom_port);

  const std::string model = SourceDir() + "/deploy/models/fortunes-teacher";
  const std::string eval = SourceDir() + "/deploy/data/fortunes/evaluation.jsonl";
  v1::Job job = h.Submit("model: " + model + "\ndata: {evaluation: [" + eval +
                         "]}\nstages:\n  - evaluate: {max_examples: 48, window: 128, stride: 64}\n"
                         "  - quantize: {method: rtn, bits: 4}\n");
  // While the job runs, Prometheus sees the progress gauges of the worker and the coordinator.
  double progress = -1, stage_progress = -1;
  for (int i = 0; i < 600 && (progress <= 0 || stage_progress <= 0); ++i) {
    progress = ScalarOf(PromApi(api, "/api/v1/query", "query",
                                "max(max_over_time(squeeze_worker_task_progress_ratio[5m]))"));
    stage_progress =
        ScalarOf(PromApi(api, "/api/v1/query", "query",
                         "max(max_over_time(squeeze_running_stage_progress_ratio[5m]))"));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_GT(progress, 0.0) << "Prometheus never saw a worker's task progress; see " << h.dir();
  EXPECT_GT(stage_progress, 0.0) << "Prometheus never saw a running stage's progress";
  v1::Job done = h.WaitFor(job.id(), Finished);
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << done.error();
  double succeeded = -1;
  for (int i = 0; i < 100 && succeeded < 1; ++i) {
    succeeded = ScalarOf(PromApi(api, "/api/v1/query", "query",
                                 "squeeze_jobs_finished_total{result=\"succeeded\"}"));
    if (succeeded < 1) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(succeeded, 1.0);
  EXPECT_EQ(ScalarOf(PromApi(api, "/api/v1/query", "query", "squeeze_jobs_submitted_total")), 1.0);
  double tasks = -1;
  for (int i = 0; i < 100 && tasks < 2; ++i) {
    tasks = ScalarOf(PromApi(api, "/api/v1/query", "query",
                             "sum(squeeze_worker_tasks_total{result=\"succeeded\"})"));
    if (tasks < 2) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(tasks, 2.0) << "both stages counted by the worker";

  // Throughput is counted: both the coordinator's and the worker's token counters grew.
  for (const char* counter : {"squeeze_stage_tokens_total", "squeeze_worker_tokens_total"}) {
    double tokens = -1;
    for (int i = 0; i < 100 && tokens <= 0; ++i) {
      tokens = ScalarOf(PromApi(api, "/api/v1/query", "query",
                                std::string("sum(") + counter + "{kind=\"evaluate\"})"));
      if (tokens <= 0) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    EXPECT_GT(tokens, 1000) << counter;
  }
  // The gRPC ecosystem's metric names, with their labels.
  EXPECT_GE(
      ScalarOf(PromApi(api, "/api/v1/query", "query",
                       "sum(grpc_server_handled_total{grpc_service=\"squeeze.v1.WorkerService\","
                       "grpc_method=\"CompleteTask\",grpc_code=\"OK\",grpc_type=\"unary\"})")),
      2.0);

  // Every squeeze_*, grpc_server_* and process_* metric named in the dashboard and the alert
  // rules has series here: a renamed or misspelt metric fails this test, not a dashboard in
  // production.
  const std::string text = Slurp(SourceDir() + "/deploy/grafana/squeeze-dashboard.json") +
                           Slurp(SourceDir() + "/deploy/prometheus/alerts.yml");
  std::set<std::string> names;
  const std::regex metric("(squeeze|grpc_server|process)_[a-z0-9_]+");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), metric);
       it != std::sregex_iterator(); ++it)
    names.insert(it->str());
  names.erase("squeeze_overview");  // the dashboard's uid
  ASSERT_GT(names.size(), 15u);
  for (const std::string& name : names) {
    auto series = PromApi(api, "/api/v1/series", "match[]", name);
    ASSERT_TRUE(series.is_object()) << name;
    EXPECT_FALSE(series["data"].empty()) << "no series for " << name << " (named in deploy/)";
  }
  // And every expression of the dashboard evaluates.
  const auto dashboard =
      nlohmann::json::parse(Slurp(SourceDir() + "/deploy/grafana/squeeze-dashboard.json"));
  for (const auto& panel : dashboard["panels"]) {
    for (const auto& target : panel["targets"]) {
      auto answer = PromApi(api, "/api/v1/query", "query", target["expr"].get<std::string>());
      EXPECT_EQ(answer.value("status", ""), "success")
          << panel["title"] << ": " << target["expr"] << ": " << answer.dump();
    }
  }
}

}  // namespace
}  // namespace squeeze::testing
