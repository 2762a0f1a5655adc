// The squeezectl commands that run a model: eval, compress (offline) and train.
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/file_util.h"
#include "common/base/flags.h"
#include "common/compress/gptq_checkpoint.h"
#include "common/compress/perplexity.h"
#include "common/compress/rtn.h"
#include "common/compress/sequential_quantizer.h"
#include "common/data/text_dataset.h"
#include "common/model/llama_model.h"
#include "common/model/tokenizer.h"
#include "common/train/trainer.h"
#include "services/cli/commands.h"

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

struct LoadedEval {
  LlamaModel model;
  std::vector<TextExample> data;
};

// The model, plus the data file tokenized with the model's tokenizer.
absl::StatusOr<LoadedEval> LoadModelAndData(const std::string& model_dir, const std::string& data,
                                            at::ScalarType dtype, at::Device device) {
  auto model = LoadModel(model_dir, dtype, device);
  if (!model.ok()) return model.status();
  auto examples = LoadTextDatasetForModel(model_dir, model->config(), data);
  if (!examples.ok()) return examples.status();
  return LoadedEval{*std::move(model), *std::move(examples)};
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

nlohmann::json PerplexityJson(const PerplexityResult& r) {
  nlohmann::json categories = nlohmann::json::object();
  for (const auto& [name, s] : r.by_category) {
    categories[name] = {{"perplexity", s.perplexity()}, {"tokens", s.tokens}};
  }
  return {{"perplexity", r.total.perplexity()},
          {"nll_per_token", r.total.tokens ? r.total.nll / r.total.tokens : 0.0},
          {"bits_per_token", r.total.bits_per_token()},
          {"tokens", r.total.tokens},
          {"categories", categories},
          {"tokens_per_second", r.tokens_per_second()}};
}

}  // namespace

int RunEval(const Args& args) {
  Flags flags;
  flags.Value("model")
      .Value("data")
      .Value("device", "cpu")
      .Value("dtype", "float32")
      .Bool("json")
      .Value("unigram-baseline");
  DeclarePerplexityFlags(flags);
  if (auto s = flags.Parse(args); !s.ok()) return Fail(s);
  auto model_dir = flags.Get("model");
  auto data_path = flags.Get("data");
  if (!model_dir.ok()) return Fail(model_dir.status());
  if (!data_path.ok()) return Fail(data_path.status());
  auto device = ParseDevice(*flags.Get("device"));
  if (!device.ok()) return Fail(device.status());
  auto dtype = ParseDtype(*flags.Get("dtype"));
  if (!dtype.ok()) return Fail(dtype.status());
  auto ppl_options = PerplexityFlags(flags);
  if (!ppl_options.ok()) return Fail(ppl_options.status());

  auto loaded = LoadModelAndData(*model_dir, *data_path, *dtype, *device);
  if (!loaded.ok()) return Fail(loaded.status());
  auto result = EvaluatePerplexity(loaded->model, loaded->data,
                                   FitToModel(*ppl_options, loaded->model.config()));
  if (!result.ok()) return Fail(result.status());

  const int64_t params = loaded->model.NumParameters();
  const int64_t size = DirectoryBytes(*model_dir);
  std::optional<NllSum> unigram;
  if (flags.Has("unigram-baseline")) {
    // Same tokenizer and vocabulary as the evaluation data.
    auto train =
        LoadTextDatasetForModel(*model_dir, loaded->model.config(), *flags.Get("unigram-baseline"));
    if (!train.ok()) return Fail(train.status());
    unigram = UnigramPerplexity(*train, loaded->data, loaded->model.config().vocab_size);
  }
  if (flags.GetBool("json")) {
    nlohmann::json out = PerplexityJson(*result);
    if (unigram) out["unigram_baseline_perplexity"] = unigram->perplexity();
    out["model"] = *model_dir;
    out["data"] = *data_path;
    out["parameters"] = params;
    out["size_bytes"] = size;
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << absl::StrFormat("model        %s\n", *model_dir)
            << absl::StrFormat("parameters   %d\n", params)
            << absl::StrFormat("size on disk %.2f MiB\n", size / 1048576.0)
            << absl::StrFormat("perplexity   %.4f over %d tokens (%.4f bits/token)\n",
                               result->total.perplexity(), result->total.tokens,
                               result->total.bits_per_token())
            << absl::StrFormat("tokens/s     %.0f\n", result->tokens_per_second());
  if (unigram) {
    std::cout << absl::StrFormat("unigram      %.4f perplexity of a unigram model of %s\n",
                                 unigram->perplexity(), *flags.Get("unigram-baseline"));
  }
  if (!result->by_category.empty()) {
    std::cout << absl::StrFormat("\n%-20s %12s %10s\n", "category", "perplexity", "tokens");
    for (const auto& [name, s] : result->by_category) {
      std::cout << absl::StrFormat("%-20s %12.4f %10d\n", name, s.perplexity(), s.tokens);
    }
  }
  return 0;
}

int RunCompress(const Args& args) {
  Flags flags;
  flags.Value("model")
      .Value("data")
      .Value("out")
      .Value("bits", "4")
      .Value("group-size", "128")
      .Value("device", "cpu")
      .Value("method", "rtn")
      .Value("calibration")
      .Value("samples", "128")
      .Value("damp", "0.01")
      .Bool("act-order")
      .Bool("static-groups")
      .Bool("sym")
      .Bool("json");
  DeclarePerplexityFlags(flags);
  if (auto s = flags.Parse(args); !s.ok()) return Fail(s);
  auto model_dir = flags.Get("model");
  auto data_path = flags.Get("data");
  if (!model_dir.ok()) return Fail(model_dir.status());
  if (!data_path.ok()) return Fail(data_path.status());
  auto bits = flags.GetInt("bits");
  auto group = flags.GetInt("group-size");
  if (!bits.ok()) return Fail(bits.status());
  if (!group.ok()) return Fail(group.status());
  auto device = ParseDevice(*flags.Get("device"));
  if (!device.ok()) return Fail(device.status());
  auto ppl_options = PerplexityFlags(flags);
  if (!ppl_options.ok()) return Fail(ppl_options.status());
  QuantSpec spec{static_cast<int>(*bits), *group, flags.GetBool("sym")};

  auto loaded = LoadModelAndData(*model_dir, *data_path, at::kFloat, *device);
  if (!loaded.ok()) return Fail(loaded.status());
  LlamaModel& model = loaded->model;
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (auto& [name, linear] : model.layer(i).Linears()) {
      if (auto s = ValidateQuantSpec(spec, linear->weight.size(1)); !s.ok()) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat("--", s.message(), " (layer ", i, " ", name, ")")));
      }
    }
  }

  *ppl_options = FitToModel(*ppl_options, model.config());
  std::cerr << "evaluating the baseline...\n";
  auto before = EvaluatePerplexity(model, loaded->data, *ppl_options);
  if (!before.ok()) return Fail(before.status());

  // Quantize every linear layer of every decoder layer; embeddings, norms and the head stay.
  const std::string method = *flags.Get("method");
  if (method != "rtn" && method != "gptq") {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--method: expected rtn or gptq, got \"", method, "\"")));
  }
  SequentialOptions seq;
  seq.method =
      method == "gptq" ? SequentialOptions::Method::kGptq : SequentialOptions::Method::kRtn;
  seq.gptq.quant = spec;
  seq.gptq.act_order = flags.GetBool("act-order");
  seq.gptq.static_groups = flags.GetBool("static-groups");
  seq.device = *device;
  auto damp = flags.GetDouble("damp");
  if (!damp.ok()) return Fail(damp.status());
  seq.gptq.damp = *damp;
  at::Tensor calibration;
  if (method == "gptq") {
    auto calib_path = flags.Get("calibration");
    if (!calib_path.ok())
      return Fail(absl::InvalidArgumentError("--calibration is required with --method gptq"));
    auto calib = LoadTextDatasetForModel(*model_dir, model.config(), *calib_path);
    if (!calib.ok()) return Fail(calib.status());
    auto samples = flags.GetInt("samples");
    if (!samples.ok()) return Fail(samples.status());
    CalibrationOptions co;
    co.num_samples = *samples;
    co.seq_len = std::min<int64_t>(256, model.config().max_position_embeddings);
    auto windows = SampleCalibration(*calib, co);
    if (!windows.ok()) return Fail(windows.status());
    calibration = *windows;
  }
  std::map<std::string, QuantizedWeight> codes_by_linear;
  seq.on_linear = [&](int64_t layer, const std::string& name, const QuantizedWeight& q) {
    codes_by_linear[absl::StrCat("model.layers.", layer, ".", name)] = q;
  };
  std::cerr << "quantizing (" << method << ")...\n";
  auto reports = QuantizeSequential(model, calibration, seq);
  if (!reports.ok()) return Fail(reports.status());
  const QuantizedSize quantized = QuantizedLinearSize(model, spec);
  std::cerr << "evaluating the quantized model...\n";
  auto after = EvaluatePerplexity(model, loaded->data, *ppl_options);
  if (!after.ok()) return Fail(after.status());

  const int64_t params = model.NumParameters();
  // Sizes as stored: the baseline's bytes per weight as on disk; the quantized model keeps
  // non-linear tensors in 16 bits and its linear weights at their packed bits.
  const double base_bytes = static_cast<double>(DirectoryBytes(*model_dir));
  const double stored_bytes_per_param = base_bytes / params;
  const double quant_bytes =
      (params - quantized.weights) * std::min(2.0, stored_bytes_per_param) + quantized.bits / 8.0;
  const double retention =
      after->total.perplexity() > 0 ? before->total.perplexity() / after->total.perplexity() : 0.0;
  const std::string label =
      absl::StrFormat("%s w%d g%d %s%s", method, spec.bits, spec.group_size,
                      spec.symmetric ? "sym" : "asym", seq.gptq.act_order ? " act" : "");

  if (flags.Has("out")) {
    const std::string out = *flags.Get("out");
    // The GPTQ checkpoint layout (RTN codes fit it too), loadable by transformers and vLLM.
    GptqExportOptions export_options;
    export_options.gptq = seq.gptq;
    if (auto s = WriteGptqCheckpoint(out, model, codes_by_linear, export_options); !s.ok())
      return Fail(s);
    nlohmann::json report = {{"method", method},
                             {"bits", spec.bits},
                             {"group_size", spec.group_size},
                             {"symmetric", spec.symmetric},
                             {"baseline", PerplexityJson(*before)},
                             {"compressed", PerplexityJson(*after)},
                             {"baseline_bytes", base_bytes},
                             {"compressed_bytes_packed", quant_bytes},
                             {"retention", retention}};
    std::ofstream(fs::path(out) / "squeeze_report.json") << report.dump(2) << "\n";
  }
  if (flags.GetBool("json")) {
    nlohmann::json j = {{"baseline", PerplexityJson(*before)},
                        {"compressed", PerplexityJson(*after)},
                        {"method", label},
                        {"baseline_bytes", base_bytes},
                        {"compressed_bytes_packed", quant_bytes},
                        {"retention", retention}};
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << absl::StrFormat("\n%-22s %12s %12s %12s %12s %10s\n", "model", "parameters",
                               "bits/weight", "size (MiB)", "perplexity", "retention")
            << absl::StrFormat("%-22s %12d %12.2f %12.3f %12.4f %10s\n", "baseline", params,
                               base_bytes * 8 / params, base_bytes / 1048576.0,
                               before->total.perplexity(), "1.000")
            << absl::StrFormat("%-22s %12d %12.2f %12.3f %12.4f %10.3f\n", label, params,
                               quant_bytes * 8 / params, quant_bytes / 1048576.0,
                               after->total.perplexity(), retention);
  if (!before->by_category.empty()) {
    std::cout << absl::StrFormat("\n%-20s %12s %12s\n", "category", "baseline", label);
    for (const auto& [name, s] : before->by_category) {
      std::cout << absl::StrFormat("%-20s %12.4f %12.4f\n", name, s.perplexity(),
                                   after->by_category[name].perplexity());
    }
  }
  std::cout << "\nsize: linear weights at their packed bits plus 16-bit scales and zero points per "
               "group; embeddings, norms and head in 16 bits.\n";
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
