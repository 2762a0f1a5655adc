#include "services/cli/job_client.h"

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <cstring>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace squeeze::cli {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

std::string JobStateName(v1::JobState state) { return v1::JobState_Name(state); }

JobClient::JobClient(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  stub_ = v1::JobService::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

JobClient::JobClient(std::shared_ptr<grpc::Channel> channel)
    : stub_(v1::JobService::NewStub(std::move(channel))) {}

namespace {

std::string TaskStateName(v1::TaskState s) {
  std::string name = v1::TaskState_Name(s);
  return name.substr(5);  // drop "TASK_"
}

std::string UnitName(v1::ProgressUnit unit) {
  if (unit == v1::PROGRESS_UNIT_UNSPECIFIED) return "";
  return absl::AsciiStrToLower(v1::ProgressUnit_Name(unit).substr(strlen("PROGRESS_UNIT_")));
}

std::string Bar(const v1::Progress& p, int width) {
  const double frac =
      p.total() > 0 ? std::min(1.0, static_cast<double>(p.completed()) / p.total()) : 0.0;
  const int filled = static_cast<int>(frac * width);
  return absl::StrCat("[", std::string(filled, '#'), std::string(width - filled, '.'), "]",
                      absl::StrFormat(" %3d%% %d/%d %s", static_cast<int>(frac * 100),
                                      p.completed(), p.total(), UnitName(p.unit())),
                      p.phase().empty() ? "" : absl::StrCat(" (", p.phase(), ")"));
}

// "1h02m", "3m05s", "42s".
std::string Clock(int64_t seconds) {
  if (seconds >= 3600) return absl::StrFormat("%dh%02dm", seconds / 3600, seconds % 3600 / 60);
  if (seconds >= 60) return absl::StrFormat("%dm%02ds", seconds / 60, seconds % 60);
  return absl::StrFormat("%ds", seconds);
}

// Elapsed time, ETA and the live rates of a running stage, after its bar.
std::string LiveFigures(const v1::TaskMetrics& m) {
  std::string out = absl::StrCat(" ", Clock(m.elapsed().seconds()));
  if (m.has_eta()) absl::StrAppend(&out, " eta ", Clock(m.eta().seconds()));
  if (m.tokens_per_second() > 0)
    absl::StrAppend(&out, absl::StrFormat(" %.0f tok/s", m.tokens_per_second()));
  if (m.has_loss()) absl::StrAppend(&out, absl::StrFormat(" loss %.4f", m.loss()));
  return out;
}

}  // namespace

absl::StatusOr<v1::Job> JobClient::Watch(const std::string& job_id, std::ostream& out, bool tty,
                                         bool json) {
  int64_t after = 0;
  std::map<int, int> last_percent;  // per stage, for plain output
  bool bar_open = false;
  for (int reconnects = 0; reconnects < 100; ++reconnects) {
    grpc::ClientContext context;
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    request.set_after_sequence(after);
    auto reader = stub_->WatchJob(&context, request);
    v1::JobEvent e;
    while (reader->Read(&e)) {
      after = e.sequence();
      if (json) {
        std::string line;
        google::protobuf::util::JsonPrintOptions options;
        (void)google::protobuf::util::MessageToJsonString(e, &line, options);
        out << line << "\n" << std::flush;
        continue;
      }
      if (e.has_task()) {
        const v1::TaskUpdate& t = e.task();
        const std::string label = absl::StrFormat("stage %d %-9s", t.index(), t.kind());
        if (t.message().empty()) {  // a progress update
          if (tty) {
            out << "\r" << label << " " << Bar(t.progress(), 30) << LiveFigures(t.metrics())
                << "\x1b[K" << std::flush;
            bar_open = true;
          } else {
            const int pct =
                t.progress().total() > 0
                    ? static_cast<int>(100 * t.progress().completed() / t.progress().total())
                    : 0;
            if (pct / 25 != last_percent[t.index()] / 25 || pct == 100) {
              out << label << " " << Bar(t.progress(), 20) << LiveFigures(t.metrics()) << "\n";
              last_percent[t.index()] = pct;
            }
          }
          continue;
        }
        if (bar_open) out << "\n";
        bar_open = false;
        out << label << " " << TaskStateName(t.state()) << ": " << t.message() << "\n";
      } else if (e.has_log()) {
        if (bar_open) out << "\n";
        bar_open = false;
        out << "log: " << e.log() << "\n";
      } else {
        if (bar_open) out << "\n";
        bar_open = false;
        out << "job " << job_id << " " << JobStateName(e.state()) << "\n";
      }
      out << std::flush;
    }
    grpc::Status s = reader->Finish();
    if (s.ok()) break;
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return FromGrpc(s);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // coordinator restarting
  }
  if (bar_open) out << "\n";
  grpc::ClientContext context;
  v1::GetJobRequest get;
  get.set_job_id(job_id);
  v1::Job job;
  if (auto s = stub_->GetJob(&context, get, &job); !s.ok()) return FromGrpc(s);
  return job;
}

std::string DescribeJob(const v1::Job& job) {
  std::string out = absl::StrFormat(
      "job       %s\nstate     %s%s\ntenant    %s\npriority  %d\n", job.id(),
      JobStateName(job.state()),
      job.cancel_requested() && job.state() == v1::RUNNING ? " (cancel requested)" : "",
      job.tenant(), job.priority());
  if (!job.error().empty()) absl::StrAppend(&out, "error     ", job.error(), "\n");
  absl::StrAppend(&out, absl::StrFormat("\n%-6s %-10s %-10s %-9s %s\n", "stage", "kind", "state",
                                        "attempts", "progress"));
  for (const v1::Task& t : job.tasks()) {
    absl::StrAppend(&out, absl::StrFormat("%-6d %-10s %-10s %d/%-7d %s%s\n", t.index(), t.kind(),
                                          TaskStateName(t.state()), t.attempts(), t.max_attempts(),
                                          t.progress().total() > 0 ? Bar(t.progress(), 20) : "",
                                          t.has_metrics() ? LiveFigures(t.metrics()) : ""));
    if (!t.error().empty()) absl::StrAppend(&out, "       last error: ", t.error(), "\n");
  }
  return out;
}

std::string DescribeReport(const std::string& report_json) {
  auto r = nlohmann::json::parse(report_json, nullptr, false);
  if (r.is_discarded()) return "(report is not valid JSON)\n";
  std::string out = absl::StrFormat("\n%-6s %-10s %12s %12s %10s %12s  %s\n", "stage", "kind",
                                    "perplexity", "size (MiB)", "retention", "tokens/s", "notes");
  for (const auto& s : r["stages"]) {
    const auto& res = s["result"];
    auto num = [&](const char* key, const absl::FormatSpec<double>& fmt,
                   double scale = 1.0) -> std::string {
      return res.contains(key) && res[key].is_number()
                 ? absl::StrFormat(fmt, res[key].get<double>() * scale)
                 : "-";
    };
    std::string notes;
    if (s["kind"] == "quantize") {
      notes =
          absl::StrFormat("%s w%d g%d, %.2f bits/weight, packed %.2f MiB", res.value("method", "?"),
                          res.value("bits", 0), res.value("group_size", 0),
                          res.value("bits_per_quantized_weight", 0.0),
                          res.value("packed_size_bytes", 0.0) / 1048576.0);
    }
    if (s["kind"] == "distill") {
      notes = absl::StrFormat(
          "%d-layer student (%.2fM params), T=%.1f alpha=%.2f, %d steps%s, loss %.4f, eval ppl "
          "%.4f%s",
          res.value("student_layers", 0), res.value("student_parameters", 0) / 1e6,
          res.value("temperature", 0.0), res.value("alpha", 0.0), res.value("steps", 0),
          res.value("world_size", 1) > 1
              ? absl::StrFormat(" on %d ranks", res.value("world_size", 1))
              : "",
          res.value("final_loss", 0.0), res.value("eval_perplexity", 0.0),
          res.value("resumed_from_step", 0) > 0
              ? absl::StrFormat(", resumed at step %d", res.value("resumed_from_step", 0))
              : "");
    }
    if (s["kind"] == "calibrate") {
      notes = absl::StrFormat("%d windows of %d tokens%s", res.value("samples", 0),
                              res.value("seq_len", 0),
                              res.value("reused", false) ? ", reused from an earlier job" : "");
    }
    absl::StrAppend(
        &out, absl::StrFormat("%-6d %-10s %12s %12s %10s %12s  %s\n", s["index"].get<int>(),
                              s["kind"].get<std::string>(), num("perplexity", "%.4f"),
                              num("size_bytes", "%.3f", 1.0 / 1048576.0), num("retention", "%.4f"),
                              num("tokens_per_second", "%.0f"), notes));
  }
  absl::StrAppend(&out, "\nmodel: ", r.value("model", ""), "\n");
  return out;
}

}  // namespace squeeze::cli
