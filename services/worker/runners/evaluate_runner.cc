// evaluate: perplexity, size and throughput, retention against the baseline, the gate.
#include "services/worker/runners/runners.h"
#include "services/worker/runners/stage_io.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/file_util.h"
#include "common/base/status_macros.h"
#include "common/compress/perplexity.h"
#include "common/compress/quantized_checkpoint.h"
#include "common/compress/sequential_quantizer.h"
#include "common/compress/streaming_quantizer.h"
#include "common/compress/task_accuracy.h"
#include "common/data/choice_tasks.h"
#include "common/data/text_dataset.h"
#include "common/model/generator.h"
#include "common/model/llama_model.h"
#include "common/model/tokenizer.h"
#include "common/recipe/message_json.h"
#include "common/recipe/recipe.h"

namespace squeeze::worker {

namespace fs = std::filesystem;

absl::StatusOr<TaskOutput> EvaluateRunner::Run(TaskContext& ctx) {
  SQ_RETURN_IF_ERROR(ExpectStage(ctx, v1::StageOptions::kEvaluate));
  const v1::EvaluateStage& spec = ctx.stage().evaluate();
  auto model_dir = InputModel(ctx);
  if (!model_dir.ok()) return model_dir.status();
  ctx.Log(absl::StrCat("evaluating ", *model_dir));
  at::ScalarType dtype = at::kFloat;
  switch (spec.dtype()) {
    case v1::EvaluateStage::FLOAT32:
      break;
    case v1::EvaluateStage::BFLOAT16:
      dtype = at::kBFloat16;
      break;
    case v1::EvaluateStage::FLOAT16:
      dtype = at::kHalf;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("evaluate.dtype: value ",
                                                     static_cast<int>(spec.dtype()),
                                                     " is not known to this worker"));
  }
  auto model = LoadModel(*model_dir, dtype, ctx.device());
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
  v1::EvaluateResult result;
  double seconds = 0.0;
  int64_t processed = 0;
  for (int f = 0; f < files.size(); ++f) {
    auto path = DataFile(ctx, files[f], absl::StrCat("data.evaluation[", f, "]"));
    if (!path.ok()) return path.status();
    auto data = LoadTextDatasetForModel(*model_dir, model->config(), *path);
    if (!data.ok()) return data.status();
    const auto file_start = std::chrono::steady_clock::now();
    options.progress = [&](int64_t done, int64_t n, int64_t tokens) {
      ctx.SetProgress(done, n, v1::PROGRESS_UNIT_WINDOWS,
                      files.size() > 1 ? absl::StrCat("file ", f + 1, "/", files.size()) : "");
      // Live throughput while the file is scored, not only once it is done.
      const double in_file =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - file_start).count();
      ctx.SetMetric("tokens", static_cast<double>(processed + tokens));
      if (in_file > 0) ctx.SetMetric("tokens_per_second", static_cast<double>(tokens) / in_file);
    };
    auto ppl = EvaluatePerplexity(*model, *data, options);
    if (!ppl.ok()) return stop_reason.ok() ? ppl.status() : stop_reason;
    v1::PerplexityFigure& figure = (*result.mutable_files())[files[f]];
    figure.set_perplexity(ppl->total.perplexity());
    figure.set_tokens(ppl->total.tokens);
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
  ctx.SetMetric("tokens", static_cast<double>(processed));

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
  result.set_perplexity(total.perplexity());
  result.set_nll_per_token(total.tokens ? total.nll / total.tokens : 0.0);
  result.set_tokens(total.tokens);
  result.set_parameters(params);
  result.set_nonzero_parameters(nonzero);
  result.set_size_bytes(size);
  result.set_bits_per_weight(params ? 8.0 * size / params : 0.0);
  result.set_tokens_per_second(tokens_per_second);
  result.set_ms_per_token(processed ? 1000.0 * seconds / processed : 0.0);
  result.set_peak_host_memory_bytes(PeakHostMemoryBytes());
  if (device_is_cuda(ctx.device()))
    result.set_peak_device_memory_bytes(PeakDeviceMemoryBytes(ctx.device()));
  for (const auto& [name, c] : categories) {
    v1::PerplexityFigure& figure = (*result.mutable_categories())[name];
    figure.set_perplexity(c.perplexity());
    figure.set_tokens(c.tokens);
  }

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
      ctx.SetProgress(done, n, v1::PROGRESS_UNIT_CHOICES, "task accuracy");
    };
    auto accuracy = EvaluateChoiceAccuracy(*model, questions, accuracy_options);
    if (!accuracy.ok()) return stop_reason.ok() ? accuracy.status() : stop_reason;
    v1::TaskAccuracyResult& tasks = *result.mutable_tasks();
    tasks.set_acc(accuracy->total.acc());
    tasks.set_acc_norm(accuracy->total.acc_norm());
    tasks.add_acc_ci95(accuracy->acc_low);
    tasks.add_acc_ci95(accuracy->acc_high);
    tasks.add_acc_norm_ci95(accuracy->acc_norm_low);
    tasks.add_acc_norm_ci95(accuracy->acc_norm_high);
    tasks.set_questions(accuracy->total.questions);
    for (const auto& [name, a] : accuracy->by_category) {
      v1::ChoiceAccuracy& c = (*tasks.mutable_categories())[name];
      c.set_acc(a.acc());
      c.set_acc_norm(a.acc_norm());
      c.set_questions(a.questions);
    }
    ctx.SetMetric("task_accuracy", accuracy->total.acc());
    ctx.Log(absl::StrCat("task accuracy ", accuracy->total.acc(), " (acc_norm ",
                         accuracy->total.acc_norm(), ") on ", accuracy->total.questions,
                         " questions"));
  }

  // Greedy continuations of the recipe's prompts, for the report to show beside the baseline's.
  if (spec.has_samples()) {
    SQ_ASSIGN_OR_RETURN(auto tokenizer, LoadTokenizer(*model_dir, model->config()));
    GenerationOptions generation;
    generation.max_new_tokens = spec.samples().max_new_tokens();
    for (int i = 0; i < spec.samples().prompts_size(); ++i) {
      SQ_RETURN_IF_ERROR(ctx.CheckStep());
      const std::string& prompt = spec.samples().prompts(i);
      auto generated = GenerateText(*model, *tokenizer, prompt, generation);
      if (!generated.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("evaluate.samples.prompts[", i, "]: ", generated.status().message()));
      }
      v1::GeneratedText& sample = *result.add_samples();
      sample.set_prompt(prompt);
      sample.set_completion(generated->completion);
      ctx.SetProgress(i + 1, spec.samples().prompts_size(), v1::PROGRESS_UNIT_SAMPLES, "samples");
    }
  }

  // Retention against the job's first (uncompressed) evaluation: perplexity ratio, <= 1 when worse.
  std::vector<std::string> gate_failures;
  const v1::EvaluationGate& gate = spec.gate();
  const v1::EvaluateResult& baseline = ctx.baseline();
  if (ctx.has_baseline() && baseline.perplexity() > 0) {
    const double base = baseline.perplexity();
    const double retention = base / total.perplexity();
    result.set_baseline_perplexity(base);
    result.set_retention(retention);
    result.set_retention_percent(100.0 * retention);
    if (baseline.size_bytes() > 0) {
      result.set_compression_ratio(static_cast<double>(baseline.size_bytes()) /
                                   std::max<double>(1.0, size));
    }
    if (gate.has_min_retention() && retention < gate.min_retention()) {
      gate_failures.push_back(absl::StrCat("retention ", retention, " is below min_retention ",
                                           gate.min_retention(), " (perplexity ",
                                           total.perplexity(), " against baseline ", base, ")"));
    }
  }
  // Accuracy retention against the first evaluation's accuracy on the same questions.
  if (result.has_tasks() && ctx.has_baseline() && baseline.has_tasks() &&
      baseline.tasks().acc() > 0) {
    v1::TaskAccuracyResult& tasks = *result.mutable_tasks();
    const double base = baseline.tasks().acc();
    const double retention = tasks.acc() / base;
    tasks.set_baseline_acc(base);
    tasks.set_accuracy_retention(retention);
    if (gate.has_min_accuracy_retention() && retention < gate.min_accuracy_retention()) {
      gate_failures.push_back(absl::StrCat("accuracy retention ", retention,
                                           " is below min_accuracy_retention ",
                                           gate.min_accuracy_retention(), " (accuracy ",
                                           tasks.acc(), " against baseline ", base, ")"));
    }
  }
  if (gate.has_max_size_bytes() && size > gate.max_size_bytes()) {
    gate_failures.push_back(
        absl::StrCat("size ", size, " bytes is above max_size_bytes ", gate.max_size_bytes()));
  }
  if (gate.has_min_retention() || gate.has_max_size_bytes() || gate.has_min_accuracy_retention()) {
    *result.mutable_gate()->mutable_limits() = gate;
    result.mutable_gate()->set_passed(gate_failures.empty());
  }
  if (!gate_failures.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("gate: ", absl::StrJoin(gate_failures, "; ")));
  }
  TaskOutput out;
  if (auto s = PutFiles(ctx, "evaluation",
                        {{"evaluation.json", MessageToJsonValue(result).dump(2) + "\n"}},
                        ctx.lease().output_uri());
      !s.ok()) {
    return s;
  }
  out.outputs["evaluation"] = ctx.lease().output_uri();
  *out.result.mutable_evaluate() = std::move(result);
  return out;
}

}  // namespace squeeze::worker
