#include "services/coordinator/job_finalizer.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/recipe/message_json.h"
#include "services/coordinator/report_page.h"

namespace squeeze::coordinator {
namespace {

using json = nlohmann::json;

// A task's result as report.json shows it: the fields of its stage's result message (or the JSON
// of a record written before results were typed).
json ResultJson(const v1::TaskRecord& t) {
  const v1::StageResult& result = t.task().result();
  const auto* reflection = result.GetReflection();
  if (const auto* member = reflection->GetOneofFieldDescriptor(
          result, result.GetDescriptor()->FindOneofByName("result"))) {
    return MessageToJsonValue(reflection->GetMessage(result, member));
  }
  return json::parse(t.result_json().empty() ? "{}" : t.result_json(), nullptr, false);
}

}  // namespace

std::string BuildJobReport(const v1::JobRecord& r) {
  json stages = json::array();
  std::string final_model;
  if (r.tasks_size() > 0) {
    auto model = r.tasks(0).inputs().find("model");
    if (model != r.tasks(0).inputs().end()) final_model = model->second;
  }
  for (const v1::TaskRecord& t : r.tasks()) {
    stages.push_back({{"index", t.task().index()},
                      {"kind", t.task().kind()},
                      {"attempts", t.task().attempts()},
                      {"result", ResultJson(t)}});
    if (t.outputs().count("model")) final_model = t.outputs().at("model");
  }
  json report = {{"job", r.job().id()},
                 {"tenant", r.job().tenant()},
                 {"stages", stages},
                 {"model", final_model},
                 {"created_unix_ms", r.job().created_unix_ms()}};
  return report.dump(2) + "\n";
}

std::vector<std::string> CheckpointUris(const v1::JobRecord& r) {
  std::vector<std::string> uris;
  for (const v1::TaskRecord& t : r.tasks()) {
    if (!t.checkpoint_uri().empty()) uris.push_back(t.checkpoint_uri());
  }
  return uris;
}

absl::StatusOr<std::vector<v1::Artifact>> JobFinalizer::WriteReport(
    const std::string& job_id, const std::string& report) const {
  const std::string uri = absl::StrCat(store_root_, "/jobs/", job_id, "/report.json");
  const std::string page_uri = absl::StrCat(store_root_, "/jobs/", job_id, "/report.html");
  // The page first: report.json present means the whole report is.
  if (auto s = artifacts_->PutFile(page_uri, RenderReportPage(report)); !s.ok()) return s;
  if (auto s = artifacts_->PutFile(uri, report); !s.ok()) return s;
  std::vector<v1::Artifact> out(2);
  out[0].set_name("report");
  out[0].set_uri(uri);
  out[0].set_task_index(-1);
  out[0].set_kind("report");
  out[0].set_size_bytes(static_cast<int64_t>(report.size()));
  out[1].set_name("report_html");
  out[1].set_uri(page_uri);
  out[1].set_task_index(-1);
  out[1].set_kind("report");
  return out;
}

absl::Status JobFinalizer::DeleteCheckpoints(const std::vector<std::string>& uris) const {
  absl::Status deleted;
  for (const std::string& uri : uris) {
    if (auto s = artifacts_->Delete(uri); !s.ok() && !absl::IsNotFound(s)) deleted = s;
  }
  return deleted;
}

}  // namespace squeeze::coordinator
