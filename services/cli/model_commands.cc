// The squeezectl commands that run a model: eval, compress (offline) and train.
#include <ATen/ATen.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "common/base/file_util.h"
#include "common/base/flags.h"
#include "common/base/status_macros.h"
#include "common/compress/perplexity.h"
#include "common/compress/quantized_checkpoint.h"
#include "common/compress/rtn.h"
#include "common/compress/sequential_quantizer.h"
#include "common/data/text_dataset.h"
#include "common/model/generator.h"
#include "common/model/llama_model.h"
#include "common/model/tokenizer.h"
#include "common/recipe/message_json.h"
#include "common/recipe/recipe.h"
#include "common/store/artifact_store.h"
#include "common/train/trainer.h"
#include "services/cli/commands.h"
#include "services/cli/embedded_service.h"
#include "services/cli/job_client.h"

namespace squeeze::cli {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<at::Device> ParseDevice(const std::string& s) {
  if (s == "cpu") return at::Device(at::kCPU);
  if (s.rfind("cuda", 0) == 0) {
    if (!at::hasCUDA())
      return absl::FailedPreconditionError("--device: this build or machine has no CUDA");
    return at::Device(s);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device: expected cpu or cuda[:N], got \"", s, "\""));
}

absl::StatusOr<at::ScalarType> ParseDtype(const std::string& s) {
  if (s == "float32") return at::kFloat;
  if (s == "bfloat16") return at::kBFloat16;
  if (s == "float16") return at::kHalf;
  return absl::InvalidArgumentError(
      absl::StrCat("--dtype: expected float32, bfloat16 or float16, got \"", s, "\""));
}

absl::StatusOr<PerplexityOptions> PerplexityFlags(const Flags& flags) {
  PerplexityOptions options;
  auto window = flags.GetInt("window");
  auto stride = flags.GetInt("stride");
  auto batch = flags.GetInt("batch-size");
  if (!window.ok()) return window.status();
  if (!stride.ok()) return stride.status();
  if (!batch.ok()) return batch.status();
  options.window = *window;
  options.stride = *stride;
  options.batch_size = *batch;
  return options;
}

Flags& DeclarePerplexityFlags(Flags& flags) {
  return flags.Value("window", "512").Value("stride", "256").Value("batch-size", "8");
}

// The absolute form of a path given on the command line, for a recipe written elsewhere.
std::string Absolute(const std::string& path) {
  return fs::absolute(path).lexically_normal().string();
}

// Runs `recipe_yaml` as a job on the embedded service over `state_dir` and waits for it: the
// offline commands run the same recipe checks and runners as a submitted job. Progress goes to
// stderr: a bar on a terminal; elsewhere its lines when `progress_lines`. The command reports a
// failure itself, so the embedded services log only errors unless SQUEEZE_LOG_LEVEL says
// otherwise.
absl::StatusOr<v1::Job> RunEmbedded(const std::string& recipe_yaml, const std::string& state_dir,
                                    const std::string& device, const std::string& name,
                                    bool progress_lines) {
  ::setenv("SQUEEZE_LOG_LEVEL", "error", /*overwrite=*/0);
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  const std::string recipe_path = (fs::path(state_dir) / (name + "-recipe.yaml")).string();
  std::ofstream(recipe_path) << recipe_yaml;
  SQ_ASSIGN_OR_RETURN(auto service, EmbeddedService::Start(state_dir, device));
  JobClient client(service->address());
  SQ_ASSIGN_OR_RETURN(const v1::Job submitted,
                      SubmitRecipe(client, recipe_path, "", "", 0, nullptr));
  const bool tty = ::isatty(STDERR_FILENO);
  std::ostream discard(nullptr);
  return client.Watch(submitted.id(), tty || progress_lines ? std::cerr : discard, tty, false);
}

// The exit for a job that did not succeed: its failed task's error, with the exit code of that
// error's kind (2 for bad input, as for any other command).
int FailWithJob(const v1::Job& job) {
  for (const v1::Task& t : job.tasks()) {
    if (t.state() == v1::TASK_FAILED && !t.error().empty()) {
      return Fail(absl::Status(static_cast<absl::StatusCode>(t.error_code()), t.error()));
    }
  }
  return FinishWithJob(job, false);
}

}  // namespace

// `eval` is a job of one evaluate stage on the embedded service, so it measures exactly what a
// job's evaluate stage measures.
int RunEval(const Args& args) {
  Flags flags;
  flags.Value("model")
      .Value("data")
      .Value("device", "cpu")
      .Value("dtype", "float32")
      .Value("max-examples", "0")
      .Value("state-dir")
      .Bool("json")
      .Value("unigram-baseline");
  DeclarePerplexityFlags(flags);
  if (auto s = flags.Parse(args); !s.ok()) return Fail(s);
  for (const char* required : {"model", "data"}) {
    if (!flags.Has(required))
      return Fail(absl::InvalidArgumentError(absl::StrCat("--", required, " is required")));
  }
  const std::string model_dir = *flags.Get("model"), data_path = *flags.Get("data");
  if (auto device = ParseDevice(*flags.Get("device")); !device.ok()) return Fail(device.status());
  if (auto dtype = ParseDtype(*flags.Get("dtype")); !dtype.ok()) return Fail(dtype.status());
  if (auto ppl_options = PerplexityFlags(flags); !ppl_options.ok())
    return Fail(ppl_options.status());

  // The recipe, from the flags; its parser checks every value and names the flag's field, and
  // the inputs are checked before the service starts.
  const std::string recipe_yaml = absl::StrCat(
      "model: \"", Absolute(model_dir), "\"\ndata: {evaluation: [\"", Absolute(data_path),
      "\"]}\nstages:\n  - evaluate: {window: ", *flags.Get("window"),
      ", stride: ", *flags.Get("stride"), ", batch_size: ", *flags.Get("batch-size"),
      ", max_examples: ", *flags.Get("max-examples"), ", dtype: ", *flags.Get("dtype"), "}\n");
  auto recipe = ParseRecipe(recipe_yaml);
  if (!recipe.ok()) return Fail(recipe.status());
  if (auto s = CheckRecipeInputs(*recipe); !s.ok()) return Fail(s);

  const std::string state_dir =
      flags.Has("state-dir") ? *flags.Get("state-dir") : DefaultStateDir();
  auto job = RunEmbedded(recipe_yaml, state_dir, *flags.Get("device"), "eval",
                         /*progress_lines=*/false);
  if (!job.ok()) return Fail(job.status());
  if (job->state() != v1::SUCCEEDED) return FailWithJob(*job);
  if (job->tasks_size() != 1 || !job->tasks(0).result().has_evaluate())
    return Fail(absl::InternalError(absl::StrCat("job ", job->id(), " has no evaluation result")));
  const v1::EvaluateResult& result = job->tasks(0).result().evaluate();
  const double bits_per_token = result.nll_per_token() / std::log(2.0);

  std::optional<double> unigram;
  if (flags.Has("unigram-baseline")) {
    // A statistic of the data alone: the same tokenizer and vocabulary, no model run.
    auto config = LoadLlamaConfig(model_dir);
    if (!config.ok()) return Fail(config.status());
    auto eval = LoadTextDatasetForModel(model_dir, *config, data_path);
    if (!eval.ok()) return Fail(eval.status());
    auto train = LoadTextDatasetForModel(model_dir, *config, *flags.Get("unigram-baseline"));
    if (!train.ok()) return Fail(train.status());
    unigram = UnigramPerplexity(*train, *eval, config->vocab_size).perplexity();
  }
  if (flags.GetBool("json")) {
    nlohmann::json out = MessageToJsonValue(result);
    out["bits_per_token"] = bits_per_token;
    if (unigram) out["unigram_baseline_perplexity"] = *unigram;
    out["model"] = model_dir;
    out["data"] = data_path;
    out["job"] = job->id();
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << absl::StrFormat("model        %s\n", model_dir)
            << absl::StrFormat("parameters   %d\n", result.parameters())
            << absl::StrFormat("size on disk %.2f MiB\n", result.size_bytes() / 1048576.0)
            << absl::StrFormat("perplexity   %.4f over %d tokens (%.4f bits/token)\n",
                               result.perplexity(), result.tokens(), bits_per_token)
            << absl::StrFormat("tokens/s     %.0f\n", result.tokens_per_second());
  if (unigram) {
    std::cout << absl::StrFormat("unigram      %.4f perplexity of a unigram model of %s\n",
                                 *unigram, *flags.Get("unigram-baseline"));
  }
  if (!result.categories().empty()) {
    std::cout << absl::StrFormat("\n%-20s %12s %10s\n", "category", "perplexity", "tokens");
    const std::map<std::string, v1::PerplexityFigure> sorted(result.categories().begin(),
                                                             result.categories().end());
    for (const auto& [name, c] : sorted) {
      std::cout << absl::StrFormat("%-20s %12.4f %10d\n", name, c.perplexity(), c.tokens());
    }
  }
  return 0;
}

// `generate` continues a prompt with the model's own tokenizer; a GPTQ checkpoint is dequantized
// on load, like the evaluate stage does.
int RunGenerate(const Args& args) {
  Flags flags;
  flags.Value("model")
      .Value("prompt")
      .Value("max-new-tokens", "64")
      .Value("temperature", "0")
      .Value("top-p", "1")
      .Value("seed", "0")
      .Value("device", "cpu")
      .Value("dtype", "float32")
      .Bool("json");
  if (auto s = flags.Parse(args); !s.ok()) return Fail(s);
  for (const char* required : {"model", "prompt"}) {
    if (!flags.Has(required))
      return Fail(absl::InvalidArgumentError(absl::StrCat("--", required, " is required")));
  }
  auto device = ParseDevice(*flags.Get("device"));
  if (!device.ok()) return Fail(device.status());
  auto dtype = ParseDtype(*flags.Get("dtype"));
  if (!dtype.ok()) return Fail(dtype.status());
  GenerationOptions options;
  auto max_new = flags.GetInt("max-new-tokens");
  auto temperature = flags.GetDouble("temperature");
  auto top_p = flags.GetDouble("top-p");
  auto seed = flags.GetInt("seed");
  for (const absl::Status& s :
       {max_new.status(), temperature.status(), top_p.status(), seed.status()}) {
    if (!s.ok()) return Fail(s);
  }
  options.max_new_tokens = *max_new;
  options.temperature = *temperature;
  options.top_p = *top_p;
  options.seed = static_cast<uint64_t>(*seed);
  const std::string model_dir = *flags.Get("model"), prompt = *flags.Get("prompt");

  auto model = LoadModel(model_dir, *dtype, *device);
  if (!model.ok()) return Fail(model.status());
  auto tokenizer = LoadTokenizer(model_dir, model->config());
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  auto text = GenerateText(*model, **tokenizer, prompt, options);
  if (!text.ok()) {
    // The options' names as the flags spell them.
    return Fail(absl::Status(
        text.status().code(),
        absl::StrReplaceAll(text.status().message(), {{"max_new_tokens:", "--max-new-tokens:"},
                                                      {"temperature:", "--temperature:"},
                                                      {"top_p:", "--top-p:"}})));
  }
  const Generation* generated = &text->generation;
  const std::string& completion = text->completion;
  const int64_t decoded = std::max<int64_t>(0, static_cast<int64_t>(generated->tokens.size()) - 1);
  const double tokens_per_second =
      generated->decode_seconds > 0 ? decoded / generated->decode_seconds : 0.0;
  if (flags.GetBool("json")) {
    nlohmann::json out = {{"model", model_dir},
                          {"prompt", prompt},
                          {"completion", completion},
                          {"prompt_tokens", text->prompt_tokens},
                          {"new_tokens", generated->tokens},
                          {"stop_reason", generated->stop_reason},
                          {"prefill_seconds", generated->prefill_seconds},
                          {"decode_tokens_per_second", tokens_per_second}};
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << prompt << completion << "\n";
  std::cerr << absl::StrFormat("[%d new tokens, %s; %.0f tokens/s after a %.3f s prefill]\n",
                               generated->tokens.size(), generated->stop_reason, tokens_per_second,
                               generated->prefill_seconds);
  return 0;
}

// A number of a stage's result in a job report, or NaN.
double ResultNumber(const nlohmann::json& report, size_t stage, const char* key) {
  const auto& stages = report.value("stages", nlohmann::json::array());
  if (stage >= stages.size()) return std::nan("");
  const auto& r = stages[stage].value("result", nlohmann::json::object());
  return r.contains(key) && r[key].is_number() ? r[key].get<double>() : std::nan("");
}

// `compress` is a job of three stages (evaluate, quantize, evaluate) run on the embedded service:
// the same recipe validation, runners and checkpoint format as a submitted job, so the offline
// command cannot drift from the service.
// `--out DIR` of compress: created now, so that a path that cannot be written fails before any
// work, and never an existing directory that holds anything but an earlier compress output (it
// is replaced at the end, and replacing someone's files would lose them).
absl::Status CheckOutputDirectory(const std::string& out) {
  std::error_code ec;
  const fs::path dir(out);
  if (fs::exists(dir, ec)) {
    if (!fs::is_directory(dir, ec))
      return absl::InvalidArgumentError(
          absl::StrCat("--out: ", out, " exists and is not a directory"));
    const bool empty = fs::is_empty(dir, ec);
    if (!empty && !fs::exists(dir / "squeeze_report.json", ec))
      return absl::InvalidArgumentError(
          absl::StrCat("--out: ", out,
                       " is a directory with other files in it; give a new or empty directory "
                       "(an earlier compress output, with squeeze_report.json, is replaced)"));
  }
  fs::create_directories(dir, ec);
  if (ec)
    return absl::InvalidArgumentError(
        absl::StrCat("--out: cannot create ", out, ": ", ec.message()));
  const fs::path probe = dir / ".squeeze-write-probe";
  std::ofstream(probe) << "";
  if (!fs::exists(probe, ec))
    return absl::InvalidArgumentError(absl::StrCat("--out: ", out, " is not writable"));
  fs::remove(probe, ec);
  return absl::OkStatus();
}

int RunCompress(const Args& args) {
  Flags flags;
  flags.Value("model")
      .Value("data")
      .Value("out")
      .Value("bits")
      .Value("group-size")
      .Value("device", "cpu")
      .Value("method", "rtn")
      .Value("calibration")
      .Value("samples", "128")
      .Value("seq-len", "256")
      .Value("damp", "0.01")
      .Value("max-examples", "0")
      .Value("state-dir")
      .Value("format")
      .Value("activations")
      .Value("smoothquant-alpha")
      .Value("average-bits")
      .Value("max-size-bytes")
      .Value("mixed-bits")
      .Bool("act-order")
      .Bool("static-groups")
      .Bool("sym")
      .Bool("asym")
      .Bool("json");
  DeclarePerplexityFlags(flags);
  if (auto s = flags.Parse(args); !s.ok()) return Fail(s);
  for (const char* required : {"model", "data"}) {
    if (!flags.Has(required))
      return Fail(absl::InvalidArgumentError(absl::StrCat("--", required, " is required")));
  }
  const std::string method = *flags.Get("method");
  const bool gptq = method == "gptq", awq = method == "awq";
  if ((gptq || awq) && !flags.Has("calibration")) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--calibration is required with --method ", method)));
  }

  // The recipe, from the flags; its parser checks every value and names the flag's field.
  const std::string evaluate =
      absl::StrCat("{window: ", *flags.Get("window"), ", stride: ", *flags.Get("stride"),
                   ", batch_size: ", *flags.Get("batch-size"),
                   ", max_examples: ", *flags.Get("max-examples"), "}");
  // Unset widths take the recipe's defaults (4 bits, group 128; W8A8: 8 bits per channel).
  std::string quantize = absl::StrCat("{method: \"", method, "\"");
  if (flags.Has("bits")) absl::StrAppend(&quantize, ", bits: ", *flags.Get("bits"));
  if (flags.Has("group-size"))
    absl::StrAppend(&quantize, ", group_size: ", *flags.Get("group-size"));
  if (flags.GetBool("sym") && flags.GetBool("asym"))
    return Fail(absl::InvalidArgumentError("--sym and --asym: choose one"));
  if (flags.GetBool("sym")) absl::StrAppend(&quantize, ", sym: true");
  if (flags.GetBool("asym")) absl::StrAppend(&quantize, ", sym: false");
  if (gptq) {
    absl::StrAppend(&quantize, ", damp: ", *flags.Get("damp"),
                    ", act_order: ", flags.GetBool("act-order") ? "true" : "false",
                    ", static_groups: ", flags.GetBool("static-groups") ? "true" : "false",
                    ", calibration_samples: ", *flags.Get("samples"),
                    ", calibration_seq_len: ", *flags.Get("seq-len"));
  } else if (awq) {
    absl::StrAppend(&quantize, ", calibration_samples: ", *flags.Get("samples"),
                    ", calibration_seq_len: ", *flags.Get("seq-len"));
  }
  if (flags.Has("format")) absl::StrAppend(&quantize, ", format: \"", *flags.Get("format"), "\"");
  if (flags.Has("activations"))
    absl::StrAppend(&quantize, ", activations: \"", *flags.Get("activations"), "\"");
  if (flags.Has("smoothquant-alpha"))
    absl::StrAppend(&quantize, ", smoothquant_alpha: ", *flags.Get("smoothquant-alpha"));
  // Mixed precision: widths from --mixed-bits (a comma list) within one budget.
  const bool mixed = flags.Has("average-bits") || flags.Has("max-size-bytes");
  if (flags.Has("mixed-bits") && !mixed)
    return Fail(absl::InvalidArgumentError(
        "--mixed-bits needs a budget: --average-bits or --max-size-bytes"));
  if (mixed) {
    absl::StrAppend(&quantize, ", mixed_precision: {");
    if (flags.Has("mixed-bits"))
      absl::StrAppend(&quantize, "bits: [", *flags.Get("mixed-bits"), "], ");
    if (flags.Has("average-bits"))
      absl::StrAppend(&quantize, "average_bits: ", *flags.Get("average-bits"));
    if (flags.Has("average-bits") && flags.Has("max-size-bytes")) absl::StrAppend(&quantize, ", ");
    if (flags.Has("max-size-bytes"))
      absl::StrAppend(&quantize, "max_size_bytes: ", *flags.Get("max-size-bytes"));
    absl::StrAppend(&quantize, "}");
  }
  // Static input scales, SmoothQuant and mixed precision are calibrated like GPTQ.
  const bool calibrated = gptq || awq || flags.Has("smoothquant-alpha") || mixed ||
                          (flags.Has("activations") && *flags.Get("activations") == "static");
  if (calibrated && !gptq && !awq) {
    if (!flags.Has("calibration"))
      return Fail(absl::InvalidArgumentError(
          "--calibration is required with --activations static, --smoothquant-alpha, "
          "--average-bits or --max-size-bytes"));
    absl::StrAppend(&quantize, ", calibration_samples: ", *flags.Get("samples"),
                    ", calibration_seq_len: ", *flags.Get("seq-len"));
  }
  quantize += "}";
  std::string data = absl::StrCat("{evaluation: [\"", Absolute(*flags.Get("data")), "\"]");
  if (calibrated)
    absl::StrAppend(&data, ", calibration: \"", Absolute(*flags.Get("calibration")), "\"");
  data += "}";
  const std::string recipe_yaml =
      absl::StrCat("model: \"", Absolute(*flags.Get("model")), "\"\ndata: ", data,
                   "\nstages:\n  - evaluate: ", evaluate, "\n  - quantize: ", quantize,
                   "\n  - evaluate: ", evaluate, "\n");
  auto parsed = ParseRecipe(recipe_yaml);
  if (!parsed.ok()) return Fail(parsed.status());
  // Everything the flags name is checked before the baseline evaluation spends its minutes:
  // the model and data (as SubmitJob would), and where the result goes.
  if (auto s = CheckRecipeInputs(*parsed); !s.ok()) return Fail(s);
  if (flags.Has("out")) {
    if (auto s = CheckOutputDirectory(*flags.Get("out")); !s.ok()) return Fail(s);
  }

  const std::string state_dir =
      flags.Has("state-dir") ? *flags.Get("state-dir") : DefaultStateDir();
  auto job = RunEmbedded(recipe_yaml, state_dir, *flags.Get("device"), "compress",
                         /*progress_lines=*/true);
  if (!job.ok()) return Fail(job.status());
  if (job->state() != v1::SUCCEEDED) return FailWithJob(*job);

  // The job's report, and its quantized model (the quantize stage's output, the report's model).
  const std::string store_root =
      absl::StrCat("file://", fs::absolute(state_dir).lexically_normal().string(), "/store");
  auto store = OpenArtifactStore(store_root);
  if (!store.ok()) return Fail(store.status());
  auto report_text =
      (*store)->ReadFile(absl::StrCat(store_root, "/jobs/", job->id(), "/report.json"));
  if (!report_text.ok()) return Fail(report_text.status());
  const nlohmann::json report = nlohmann::json::parse(*report_text, nullptr, false);
  if (!report.is_object() || !report.contains("stages") || !report["stages"].is_array() ||
      report["stages"].size() != 3 || !report.value("model", nlohmann::json()).is_string())
    return Fail(absl::DataLossError(absl::StrCat("job ", job->id(), ": its report is malformed")));
  const std::string model_uri = report["model"].get<std::string>();
  const nlohmann::json& stages = report["stages"];
  const nlohmann::json before = stages[0].value("result", nlohmann::json::object());
  const nlohmann::json after = stages[2].value("result", nlohmann::json::object());
  const double base_bytes = ResultNumber(report, 0, "size_bytes");
  const double quant_bytes = ResultNumber(report, 1, "packed_size_bytes");
  const double params = ResultNumber(report, 0, "parameters");
  const double retention = ResultNumber(report, 2, "retention");
  const double bits_per_weight = ResultNumber(report, 1, "bits_per_quantized_weight");
  const nlohmann::json quantized = stages[1].value("result", nlohmann::json::object());
  const std::string activations = quantized.value("activations", "none");
  const std::string width = mixed ? absl::StrFormat("%.2f", quantized.value("average_bits", 0.0))
                                  : absl::StrCat(quantized.value("bits", 0));
  const std::string label = absl::StrFormat(
      "%s w%s%s g%d %s%s", method, width,
      activations == "none"
          ? ""
          : absl::StrCat("a8-", activations, quantized.contains("smoothquant_alpha") ? "+sq" : ""),
      quantized.value("group_size", int64_t{0}), quantized.value("sym", false) ? "sym" : "asym",
      flags.GetBool("act-order") ? " act" : "");
  nlohmann::json summary = {{"job", job->id()},
                            {"method", label},
                            {"baseline", before},
                            {"compressed", after},
                            {"baseline_bytes", base_bytes},
                            {"compressed_bytes_packed", quant_bytes},
                            {"bits_per_quantized_weight", bits_per_weight},
                            {"retention", retention}};
  if (flags.Has("out")) {
    // The quantized model in the GPTQ layout, loadable by transformers and vLLM, with the report.
    const std::string out = *flags.Get("out");
    std::error_code ec;
    auto local = (*store)->LocalDirectory(model_uri, out + ".partial");
    if (!local.ok()) return Fail(local.status());
    RemoveTree(out).IgnoreError();
    fs::create_directories(out, ec);
    for (const auto& e : fs::directory_iterator(*local)) {
      fs::copy_file(e.path(), fs::path(out) / e.path().filename(),
                    fs::copy_options::overwrite_existing, ec);
      if (ec) return Fail(absl::UnavailableError(absl::StrCat(out, ": ", ec.message())));
    }
    RemoveTree(out + ".partial").IgnoreError();
    std::ofstream(fs::path(out) / "squeeze_report.json") << summary.dump(2) << "\n";
  }
  if (flags.GetBool("json")) {
    std::cout << summary.dump(2) << "\n";
    return 0;
  }
  auto ppl = [](const nlohmann::json& r) { return r.value("perplexity", std::nan("")); };
  std::cout << absl::StrFormat("\n%-22s %12s %12s %12s %12s %10s\n", "model", "parameters",
                               "bits/weight", "size (MiB)", "perplexity", "retention")
            << absl::StrFormat("%-22s %12.0f %12.2f %12.3f %12.4f %10s\n", "baseline", params,
                               base_bytes * 8 / params, base_bytes / 1048576.0, ppl(before),
                               "1.000")
            << absl::StrFormat("%-22s %12.0f %12.2f %12.3f %12.4f %10.3f\n", label, params,
                               quant_bytes * 8 / params, quant_bytes / 1048576.0, ppl(after),
                               retention);
  const nlohmann::json categories = before.value("categories", nlohmann::json::object());
  if (!categories.empty()) {
    std::cout << absl::StrFormat("\n%-20s %12s %12s\n", "category", "baseline", label);
    for (const auto& [name, c] : categories.items()) {
      std::cout << absl::StrFormat("%-20s %12.4f %12.4f\n", name,
                                   c.value("perplexity", std::nan("")),
                                   after.value("categories", nlohmann::json::object())
                                       .value(name, nlohmann::json::object())
                                       .value("perplexity", std::nan("")));
    }
  }
  std::cout << "\nsize: linear weights at their packed bits plus 16-bit scales and zero points per "
               "group; embeddings, norms and head in 16 bits. Job "
            << job->id() << ", state in " << state_dir << ".\n";
  return 0;
}

int RunTrain(const Args& args) {
  Flags flags;
  flags.Value("data")
      .Value("eval")
      .Value("out")
      .Value("checkpoint-dir")
      .Value("hidden", "256")
      .Value("intermediate", "768")
      .Value("layers", "4")
      .Value("heads", "8")
      .Value("kv-heads", "4")
      .Value("vocab", "264")
      .Value("steps", "2000")
      .Value("batch-size", "16")
      .Value("seq-len", "256")
      .Value("grad-accum", "1")
      .Value("lr", "3e-3")
      .Value("warmup", "100")
      .Value("weight-decay", "0.1")
      .Value("clip", "1.0")
      .Value("eval-every", "250")
      .Value("checkpoint-every", "250")
      .Value("seed", "0")
      .Value("device", "cpu")
      .Value("save-dtype", "bfloat16");
  if (auto s = flags.Parse(args); !s.ok()) return Fail(s);
  auto data_path = flags.Get("data");
  auto out_dir = flags.Get("out");
  if (!data_path.ok()) return Fail(data_path.status());
  if (!out_dir.ok()) return Fail(out_dir.status());
  auto device = ParseDevice(*flags.Get("device"));
  if (!device.ok()) return Fail(device.status());
  auto save_dtype = ParseDtype(*flags.Get("save-dtype"));
  if (!save_dtype.ok()) return Fail(save_dtype.status());

  std::map<std::string, int64_t> ints;
  for (const char* name :
       {"hidden", "intermediate", "layers", "heads", "kv-heads", "vocab", "steps", "batch-size",
        "seq-len", "grad-accum", "warmup", "eval-every", "checkpoint-every", "seed"}) {
    auto v = flags.GetInt(name);
    if (!v.ok()) return Fail(v.status());
    ints[name] = *v;
  }
  std::map<std::string, double> reals;
  for (const char* name : {"lr", "weight-decay", "clip"}) {
    auto v = flags.GetDouble(name);
    if (!v.ok()) return Fail(v.status());
    reals[name] = *v;
  }

  nlohmann::json config_json = {{"model_type", "llama"},
                                {"vocab_size", ints["vocab"]},
                                {"hidden_size", ints["hidden"]},
                                {"intermediate_size", ints["intermediate"]},
                                {"num_hidden_layers", ints["layers"]},
                                {"num_attention_heads", ints["heads"]},
                                {"num_key_value_heads", ints["kv-heads"]},
                                {"rms_norm_eps", 1e-5},
                                {"rope_theta", 10000.0},
                                {"max_position_embeddings", ints["seq-len"]},
                                {"tie_word_embeddings", true},
                                {"bos_token_id", ByteTokenizer::kBos},
                                {"eos_token_id", ByteTokenizer::kEos},
                                {"squeeze_byte_tokenizer", true}};
  auto config = ParseLlamaConfig(config_json.dump(), "--hidden/--layers/... flags");
  if (!config.ok()) return Fail(config.status());

  ByteTokenizer tokenizer;
  TextDatasetOptions data_options;
  data_options.vocab_size = config->vocab_size;
  auto train = LoadTextDataset(*data_path, &tokenizer, data_options);
  if (!train.ok()) return Fail(train.status());
  std::vector<TextExample> eval;
  if (flags.Has("eval")) {
    auto e = LoadTextDataset(*flags.Get("eval"), &tokenizer, data_options);
    if (!e.ok()) return Fail(e.status());
    eval = *std::move(e);
  }

  TrainerOptions options;
  options.steps = ints["steps"];
  options.batch_size = ints["batch-size"];
  options.seq_len = ints["seq-len"];
  options.grad_accum = ints["grad-accum"];
  options.warmup_steps = ints["warmup"];
  options.eval_every = eval.empty() ? 0 : ints["eval-every"];
  options.checkpoint_every = ints["checkpoint-every"];
  options.lr = reals["lr"];
  options.weight_decay = reals["weight-decay"];
  options.grad_clip = reals["clip"];
  options.seed = static_cast<uint64_t>(ints["seed"]);
  options.checkpoint_dir =
      flags.Has("checkpoint-dir") ? *flags.Get("checkpoint-dir") : *out_dir + ".train";
  if (auto s = ValidateTrainerOptions(options); !s.ok()) {
    return Fail(absl::InvalidArgumentError(absl::StrCat("--", s.message())));
  }

  at::manual_seed(options.seed);
  LlamaModel model = LlamaModel::RandomInit(*config, options.seed, at::kFloat, *device);
  WindowSampler sampler(*train, options.seq_len, options.seed);
  std::cerr << absl::StrFormat("training %d parameters on %d tokens for %d steps of %d x %d\n",
                               model.NumParameters(), sampler.num_tokens(), options.steps,
                               options.batch_size, options.seq_len);
  PerplexityOptions eval_options;
  eval_options.window = options.seq_len;
  eval_options.stride = options.seq_len / 2;
  eval_options.batch_size = 16;
  TrainerCallbacks callbacks;
  callbacks.on_step = [&](const TrainStepStats& s) {
    if (s.step % 25 == 0 || s.step == 1) {
      std::cerr << absl::StrFormat("step %5d/%d  loss %.4f  lr %.2e  grad %.3f  %.0f tok/s\n",
                                   s.step, options.steps, s.loss, s.lr, s.grad_norm,
                                   s.tokens_per_second);
    }
  };
  callbacks.evaluate = [&](int64_t) {
    auto r = EvaluatePerplexity(model, eval, eval_options);
    return r.ok() ? r->total.nll / std::max<int64_t>(1, r->total.tokens) : NAN;
  };
  callbacks.on_eval = [&](int64_t step, double loss) {
    std::cerr << absl::StrFormat("eval  step %5d  loss %.4f  perplexity %.4f\n", step, loss,
                                 std::exp(loss));
  };
  Trainer trainer(&model, options);
  CrossEntropyObjective objective;
  if (auto s = trainer.Run(sampler, objective, callbacks); !s.ok()) return Fail(s);
  if (auto s = model.Save(*out_dir, *save_dtype); !s.ok()) return Fail(s);
  std::cout << "saved " << *out_dir << " after " << trainer.step() << " steps\n";
  return 0;
}

}  // namespace squeeze::cli
