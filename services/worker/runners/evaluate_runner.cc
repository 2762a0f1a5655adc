// evaluate: perplexity, size and throughput, retention against the baseline, the gate.
#include "services/worker/runners/runners.h"
#include "services/worker/runners/stage_io.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/file_util.h"
#include "common/base/status_macros.h"
#include "common/compress/gptq_checkpoint.h"
#include "common/compress/perplexity.h"
#include "common/compress/sequential_quantizer.h"
#include "common/compress/streaming_quantizer.h"
#include "common/compress/task_accuracy.h"
#include "common/data/choice_tasks.h"
#include "common/data/text_dataset.h"
#include "common/model/llama_model.h"
#include "common/recipe/recipe.h"

namespace squeeze::worker {

namespace fs = std::filesystem;
using json = nlohmann::json;

absl::StatusOr<TaskOutput> EvaluateRunner::Run(TaskContext& ctx) {
  SQ_RETURN_IF_ERROR(ExpectStage(ctx, v1::StageOptions::kEvaluate));
  const v1::EvaluateStage& spec = ctx.stage().evaluate();
  auto model_dir = InputModel(ctx);
  if (!model_dir.ok()) return model_dir.status();
  ctx.Log(absl::StrCat("evaluating ", *model_dir));
  auto model = LoadModel(*model_dir, at::kFloat, ctx.device());
  if (!model.ok()) return model.status();

  PerplexityOptions options;
  options.window = spec.window();
  options.stride = spec.stride();
  options.batch_size = spec.batch_size();
  options.max_examples = spec.max_examples();
  options = FitToModel(options, model->config());
  absl::Status stop_reason;
  options.should_stop = [&] {
    stop_reason = ctx.CheckStep();
    return !stop_reason.ok();
  };
  if (device_is_cuda(ctx.device())) ResetPeakDeviceMemory(ctx.device());

  // Every evaluation file on its own, then the totals.
  const auto& files = ctx.data().evaluation();
  NllSum total;
  std::map<std::string, NllSum> categories;
  json per_file = json::object();
  double seconds = 0.0;
  int64_t processed = 0;
  for (int f = 0; f < files.size(); ++f) {
    auto path = DataFile(ctx, files[f], absl::StrCat("data.evaluation[", f, "]"));
    if (!path.ok()) return path.status();
    auto data = LoadTextDatasetForModel(*model_dir, model->config(), *path);
    if (!data.ok()) return data.status();
    options.progress = [&](int64_t done, int64_t n) {
      ctx.SetProgress(done, n, absl::StrCat("windows of file ", f + 1, "/", files.size()));
    };
    auto ppl = EvaluatePerplexity(*model, *data, options);
    if (!ppl.ok()) return stop_reason.ok() ? ppl.status() : stop_reason;
    per_file[files[f]] = {{"perplexity", ppl->total.perplexity()}, {"tokens", ppl->total.tokens}};
    total.nll += ppl->total.nll;
    total.tokens += ppl->total.tokens;
    for (const auto& [name, c] : ppl->by_category) {
      categories[name].nll += c.nll;
      categories[name].tokens += c.tokens;
    }
    seconds += ppl->seconds;
    processed += ppl->tokens_processed;
  }
  const double tokens_per_second = seconds > 0 ? processed / seconds : 0.0;
  ctx.SetMetric("tokens_per_second", tokens_per_second);

  // A NaN perplexity (non-finite logits from finite weights: an overflow) is no result; the gate
  // and the report need a number.
  if (!std::isfinite(total.perplexity())) {
    return absl::InvalidArgumentError(
        absl::StrCat("evaluate: the model's perplexity is not finite (", total.perplexity(),
                     "): its outputs overflow or are NaN on the evaluation data"));
  }
  int64_t nonzero = 0;
  for (auto& [name, t] : model->NamedParameters()) nonzero += t->count_nonzero().item<int64_t>();
  const int64_t params = model->NumParameters();
  const int64_t size = DirectoryBytes(*model_dir);
  json result = {{"perplexity", total.perplexity()},
                 {"nll_per_token", total.tokens ? total.nll / total.tokens : 0.0},
                 {"tokens", total.tokens},
                 {"files", per_file},
                 {"parameters", params},
                 {"nonzero_parameters", nonzero},
                 {"size_bytes", size},
                 {"bits_per_weight", params ? 8.0 * size / params : 0.0},
                 {"tokens_per_second", tokens_per_second},
                 {"ms_per_token", processed ? 1000.0 * seconds / processed : 0.0},
                 {"peak_host_memory_bytes", PeakHostMemoryBytes()}};
  if (device_is_cuda(ctx.device()))
    result["peak_device_memory_bytes"] = PeakDeviceMemoryBytes(ctx.device());
  json by_category = json::object();
  for (const auto& [name, c] : categories) {
    by_category[name] = {{"perplexity", c.perplexity()}, {"tokens", c.tokens}};
  }
  result["categories"] = by_category;

  // Multiple-choice accuracy on the job's task files, when it has any.
  if (ctx.data().tasks_size() > 0) {
    std::vector<ChoiceQuestion> questions;
    for (int f = 0; f < ctx.data().tasks_size(); ++f) {
      SQ_ASSIGN_OR_RETURN(const std::string path,
                          DataFile(ctx, ctx.data().tasks(f), absl::StrCat("data.tasks[", f, "]")));
      SQ_ASSIGN_OR_RETURN(std::vector<ChoiceQuestion> loaded,
                          LoadChoiceTasksForModel(*model_dir, model->config(), path));
      questions.insert(questions.end(), std::make_move_iterator(loaded.begin()),
                       std::make_move_iterator(loaded.end()));
    }
    AccuracyOptions accuracy_options;
    accuracy_options.max_questions = spec.max_task_questions();
    accuracy_options.batch_size = spec.batch_size();
    accuracy_options.should_stop = options.should_stop;
    accuracy_options.progress = [&](int64_t done, int64_t n) {
      ctx.SetProgress(done, n, "choices scored");
    };
    auto accuracy = EvaluateChoiceAccuracy(*model, questions, accuracy_options);
    if (!accuracy.ok()) return stop_reason.ok() ? accuracy.status() : stop_reason;
    json tasks_categories = json::object();
    for (const auto& [name, a] : accuracy->by_category)
      tasks_categories[name] = {
          {"acc", a.acc()}, {"acc_norm", a.acc_norm()}, {"questions", a.questions}};
    result["tasks"] = {{"acc", accuracy->total.acc()},
                       {"acc_norm", accuracy->total.acc_norm()},
                       {"acc_ci95", {accuracy->acc_low, accuracy->acc_high}},
                       {"acc_norm_ci95", {accuracy->acc_norm_low, accuracy->acc_norm_high}},
                       {"questions", accuracy->total.questions},
                       {"categories", tasks_categories}};
    ctx.SetMetric("task_accuracy", accuracy->total.acc());
    ctx.Log(absl::StrCat("task accuracy ", accuracy->total.acc(), " (acc_norm ",
                         accuracy->total.acc_norm(), ") on ", accuracy->total.questions,
                         " questions"));
  }

  // Retention against the job's first (uncompressed) evaluation: perplexity ratio, <= 1 when worse.
  std::vector<std::string> gate_failures;
  json gate = json::object();
  if (spec.gate().has_min_retention()) gate["min_retention"] = spec.gate().min_retention();
  if (spec.gate().has_max_size_bytes()) gate["max_size_bytes"] = spec.gate().max_size_bytes();
  if (spec.gate().has_min_accuracy_retention())
    gate["min_accuracy_retention"] = spec.gate().min_accuracy_retention();
  const json& baseline = ctx.baseline();
  if (baseline.contains("perplexity") && baseline["perplexity"].is_number()) {
    const double base = baseline["perplexity"].get<double>();
    const double retention = base / total.perplexity();
    result["baseline_perplexity"] = base;
    result["retention"] = retention;
    result["retention_percent"] = 100.0 * retention;
    if (baseline.contains("size_bytes") && baseline["size_bytes"].is_number()) {
      result["compression_ratio"] =
          baseline["size_bytes"].get<double>() / std::max<double>(1.0, size);
    }
    if (spec.gate().has_min_retention() && retention < spec.gate().min_retention()) {
      gate_failures.push_back(absl::StrCat("retention ", retention, " is below min_retention ",
                                           spec.gate().min_retention(), " (perplexity ",
                                           total.perplexity(), " against baseline ", base, ")"));
    }
  }
  // Accuracy retention against the first evaluation's accuracy on the same questions.
  if (result.contains("tasks") && baseline.contains("tasks") &&
      baseline["tasks"].value("acc", 0.0) > 0) {
    const double base = baseline["tasks"]["acc"].get<double>();
    const double retention = result["tasks"]["acc"].get<double>() / base;
    result["tasks"]["baseline_acc"] = base;
    result["tasks"]["accuracy_retention"] = retention;
    if (spec.gate().has_min_accuracy_retention() &&
        retention < spec.gate().min_accuracy_retention()) {
      gate_failures.push_back(
          absl::StrCat("accuracy retention ", retention, " is below min_accuracy_retention ",
                       spec.gate().min_accuracy_retention(), " (accuracy ",
                       result["tasks"]["acc"].get<double>(), " against baseline ", base, ")"));
    }
  }
  if (spec.gate().has_max_size_bytes() && size > spec.gate().max_size_bytes()) {
    gate_failures.push_back(absl::StrCat("size ", size, " bytes is above max_size_bytes ",
                                         spec.gate().max_size_bytes()));
  }
  if (!gate.empty()) result["gate"] = {{"limits", gate}, {"passed", gate_failures.empty()}};
  if (!gate_failures.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("gate: ", absl::StrJoin(gate_failures, "; ")));
  }
  TaskOutput out;
  if (auto s = PutFiles(ctx, "evaluation", {{"evaluation.json", result.dump(2) + "\n"}},
                        ctx.lease().output_uri());
      !s.ok()) {
    return s;
  }
  out.outputs["evaluation"] = ctx.lease().output_uri();
  out.result = std::move(result);
  return out;
}

}  // namespace squeeze::worker
