#include "services/worker/runners.h"

#ifdef SQUEEZE_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/base/file_util.h"
#include "common/base/sha256.h"
#include "common/compress/gptq_checkpoint.h"
#include "common/compress/perplexity.h"
#include "common/compress/prune.h"
#include "common/compress/rtn.h"
#include "common/compress/sequential_quantizer.h"
#include "common/compress/streaming_quantizer.h"
#include "common/data/text_dataset.h"
#include "common/model/llama_model.h"
#include "common/recipe/recipe.h"
#include "common/tensor/torch_tensor.h"
#include "common/train/data_parallel.h"

namespace squeeze::worker {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

bool device_is_cuda(const at::Device& d) { return d.is_cuda(); }

// Peak resident memory of this process (the model and activations on the host).
int64_t PeakHostMemoryBytes() {
  struct rusage usage;
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

void ResetPeakDeviceMemory(const at::Device& device) {
#ifdef SQUEEZE_HAS_CUDA
  at::empty({1}, at::TensorOptions().device(device));  // the allocator exists after a first use
  c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
#else
  (void)device;
#endif
}

int64_t PeakDeviceMemoryBytes(const at::Device& device) {
#ifdef SQUEEZE_HAS_CUDA
  const auto stats =
      c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
  return stats.allocated_bytes[0].peak;  // aggregate pool
#else
  (void)device;
  return 0;
#endif
}

absl::StatusOr<std::string> InputModel(TaskContext& ctx) {
  auto it = ctx.lease().inputs().find("model");
  if (it == ctx.lease().inputs().end())
    return absl::InvalidArgumentError("lease has no \"model\" input");
  return ctx.store().LocalDirectory(it->second, ctx.scratch_dir() + "/input-model");
}

// The calibration windows [N, L] of a stage: those of the job's calibrate stage when there is
// one, so that every stage sees the same samples (only that file is fetched: the cache's
// per-layer Hessians are not needed), else sampled from data.calibration with the stage's
// calibration_samples, calibration_seq_len and seed.
absl::StatusOr<at::Tensor> CalibrationWindows(TaskContext& ctx, const std::string& model_dir,
                                              const LlamaConfig& config) {
  const json& spec = ctx.spec();
  if (ctx.lease().inputs().count("calibration")) {
    const std::string windows = ctx.scratch_dir() + "/calibration-windows.safetensors";
    if (auto s = ctx.store().FetchFile(ctx.lease().inputs().at("calibration"),
                                       "windows.safetensors", windows);
        !s.ok())
      return s;
    auto file = SafetensorsFile::Open(windows);
    if (!file.ok()) return file.status();
    auto view = (*file)->Get("input_ids");
    if (!view.ok()) return view.status();
    auto ids = ToTorch(*view);
    if (!ids.ok()) return ids.status();
    ctx.Log(absl::StrCat("calibration from the calibrate stage: ", ids->size(0), " windows"));
    return ids->clone();  // the file's mapping goes away with `file`
  }
  auto path = LocalPathOf(spec.value("calibration", ""), "data.calibration");
  if (!path.ok()) return path.status();
  auto data = LoadTextDatasetForModel(model_dir, config, *path);
  if (!data.ok()) return data.status();
  CalibrationOptions co;
  co.num_samples = spec.value("calibration_samples", int64_t{128});
  co.seq_len = std::min<int64_t>(spec.value("calibration_seq_len", int64_t{256}),
                                 config.max_position_embeddings);
  co.seed = spec.value("seed", uint64_t{0});
  auto windows = SampleCalibration(*data, co);
  if (!windows.ok()) return windows.status();
  ctx.Log(absl::StrCat("calibration: ", co.num_samples, " windows of ", co.seq_len, " tokens"));
  return windows;
}

// Writes `files` (name -> contents) into a fresh scratch directory and stores it at `uri`.
absl::Status PutFiles(TaskContext& ctx, const std::string& name,
                      const std::map<std::string, std::string>& files, const std::string& uri) {
  const fs::path dir = fs::path(ctx.scratch_dir()) / name;
  RemoveTree(dir).IgnoreError();
  fs::create_directories(dir);
  for (const auto& [file, contents] : files) std::ofstream(dir / file) << contents;
  return ctx.store().PutDirectory(dir.string(), uri, ctx.provenance());
}

}  // namespace

absl::StatusOr<std::unique_ptr<DataParallel>> JoinGang(TaskContext& ctx) {
  const v1::TaskLease& lease = ctx.lease();
  if (lease.world_size() <= 1) return std::unique_ptr<DataParallel>();
  auto group = DataParallel::Connect(lease.rendezvous_address(), lease.rank(), lease.world_size(),
                                     ctx.device(), std::chrono::seconds(120));
  if (!group.ok()) return group.status();
  ctx.Log(absl::StrCat("rank ", lease.rank(), " of ", lease.world_size(), " via ",
                       lease.rendezvous_address()));
  return group;
}

absl::Status SaveModelLike(const LlamaModel& model, const std::string& source_dir,
                           const std::string& out_dir) {
  auto source_config = LoadLlamaConfig(source_dir);
  const at::ScalarType save_dtype =
      source_config.ok() && source_config->torch_dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  if (auto s = model.Save(out_dir, save_dtype); !s.ok()) return s;
  const fs::path tokenizer = fs::path(source_dir) / "tokenizer.model";
  std::error_code ec;
  if (fs::exists(tokenizer))
    fs::copy_file(tokenizer, fs::path(out_dir) / "tokenizer.model",
                  fs::copy_options::overwrite_existing, ec);
  if (ec)
    return absl::UnavailableError(
        absl::StrCat("cannot copy ", tokenizer.string(), " to ", out_dir, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<TaskOutput> EvaluateRunner::Run(TaskContext& ctx) {
  const json& spec = ctx.spec();
  auto model_dir = InputModel(ctx);
  if (!model_dir.ok()) return model_dir.status();
  ctx.Log(absl::StrCat("evaluating ", *model_dir));
  auto model = LoadModel(*model_dir, at::kFloat, ctx.device());
  if (!model.ok()) return model.status();

  PerplexityOptions options;
  options.window = spec.value("window", 512);
  options.stride = spec.value("stride", 256);
  options.batch_size = spec.value("batch_size", 8);
  options.max_examples = spec.value("max_examples", 0);
  options = FitToModel(options, model->config());
  absl::Status stop_reason;
  options.should_stop = [&] {
    stop_reason = ctx.CheckStep();
    return !stop_reason.ok();
  };
  if (device_is_cuda(ctx.device())) ResetPeakDeviceMemory(ctx.device());

  // Every evaluation file on its own, then the totals.
  const auto files = spec.value("evaluation", std::vector<std::string>{});
  NllSum total;
  std::map<std::string, NllSum> categories;
  json per_file = json::object();
  double seconds = 0.0;
  int64_t processed = 0;
  for (size_t f = 0; f < files.size(); ++f) {
    auto path = LocalPathOf(files[f], absl::StrCat("data.evaluation[", f, "]"));
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

  // Retention against the job's first (uncompressed) evaluation: perplexity ratio, <= 1 when worse.
  std::vector<std::string> gate_failures;
  const json gate = spec.value("gate", json::object());
  if (spec.contains("baseline") && spec["baseline"].is_object() &&
      spec["baseline"].contains("perplexity")) {
    const double base = spec["baseline"]["perplexity"].get<double>();
    const double retention = base / total.perplexity();
    result["baseline_perplexity"] = base;
    result["retention"] = retention;
    result["retention_percent"] = 100.0 * retention;
    if (spec["baseline"].contains("size_bytes")) {
      result["compression_ratio"] =
          spec["baseline"]["size_bytes"].get<double>() / std::max<double>(1.0, size);
    }
    if (gate.contains("min_retention") && retention < gate["min_retention"].get<double>()) {
      gate_failures.push_back(absl::StrCat("retention ", retention, " is below min_retention ",
                                           gate["min_retention"].get<double>(), " (perplexity ",
                                           total.perplexity(), " against baseline ", base, ")"));
    }
  }
  if (gate.contains("max_size_bytes") && size > gate["max_size_bytes"].get<int64_t>()) {
    gate_failures.push_back(absl::StrCat("size ", size, " bytes is above max_size_bytes ",
                                         gate["max_size_bytes"].get<int64_t>()));
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

namespace {

// Records H, input norms and absmax for every linear layer it sees.
class StatisticsObserver : public LinearObserver {
 public:
  explicit StatisticsObserver(at::Device device) : device_(device) {}
  void OnLinearInput(int64_t, absl::string_view name, const at::Tensor& input) override {
    const std::string key(name);
    at::Tensor x = input.reshape({-1, input.size(-1)}).to(at::kFloat);
    auto it = hessians_.find(key);
    if (it == hessians_.end()) {
      it = hessians_.emplace(key, HessianAccumulator(x.size(1), device_)).first;
      absmax_[key] = at::zeros({x.size(1)}, x.options());
    }
    it->second.Add(x);
    absmax_[key] = at::maximum(absmax_[key], std::get<0>(x.abs().max(0)));
  }
  absl::Status Write(SafetensorsWriter& writer) {
    for (auto& [name, acc] : hessians_) {
      // ||x_j||_2 over all calibration tokens: from H's diagonal, H_jj = 2 sum x_j^2 / n.
      at::Tensor norms = at::sqrt(acc.hessian().diagonal() * (acc.samples() / 2.0));
      for (auto [suffix, t] :
           {std::pair{".hessian", acc.hessian()}, std::pair{".input_norm", norms},
            std::pair{".absmax", absmax_.at(name)}}) {
        if (auto s = AddTensor(writer, name + suffix, t); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

 private:
  at::Device device_;
  std::map<std::string, HessianAccumulator> hessians_;
  std::map<std::string, at::Tensor> absmax_;
};

}  // namespace

// Digest of a model directory's content: config.json and every weight file, in name order.
absl::StatusOr<std::string> ModelDigest(const std::string& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() &&
        (name == "config.json" || name.find(".safetensors") != std::string::npos ||
         name == "tokenizer.model")) {
      files.push_back(name);
    }
  }
  std::sort(files.begin(), files.end());
  Sha256 h;
  for (const std::string& f : files) {
    auto d = Sha256File((fs::path(dir) / f).string());
    if (!d.ok()) return d.status();
    h.Update(f + ":" + *d + "\n");
  }
  return h.HexDigest();
}

absl::StatusOr<TaskOutput> CalibrateRunner::Run(TaskContext& ctx) {
  const json& spec = ctx.spec();
  auto model_dir = InputModel(ctx);
  if (!model_dir.ok()) return model_dir.status();
  auto data_path = LocalPathOf(spec.value("calibration", ""), "data.calibration");
  if (!data_path.ok()) return data_path.status();
  auto model = LoadModel(*model_dir, at::kFloat, at::kCPU);
  if (!model.ok()) return model.status();
  CalibrationOptions co;
  co.num_samples = spec.value("samples", int64_t{128});
  co.seq_len = std::min<int64_t>(spec.value("seq_len", int64_t{256}),
                                 model->config().max_position_embeddings);
  co.seed = spec.value("seed", uint64_t{0});

  auto model_digest = ModelDigest(*model_dir);
  if (!model_digest.ok()) return model_digest.status();
  auto data_digest = Sha256File(*data_path);
  if (!data_digest.ok()) return data_digest.status();
  const std::string key = Sha256Hex(
      absl::StrCat("model=", *model_digest, " data=", *data_digest, " samples=", co.num_samples,
                   " seq_len=", co.seq_len, " seed=", co.seed, " v=1"));
  const std::string uri = absl::StrCat(spec.value("cache_root", ""), "/", key);
  TaskOutput out;
  out.outputs["calibration"] = uri;
  out.result = {{"key", key},
                {"model_digest", *model_digest},
                {"data_digest", *data_digest},
                {"samples", co.num_samples},
                {"seq_len", co.seq_len},
                {"seed", co.seed}};
  if (auto exists = ctx.store().Exists(uri); exists.ok() && *exists) {
    ctx.Log(absl::StrCat("reusing calibration ", key.substr(0, 12)));
    out.result["reused"] = true;
    return out;
  }

  auto data = LoadTextDatasetForModel(*model_dir, model->config(), *data_path);
  if (!data.ok()) return data.status();
  auto windows = SampleCalibration(*data, co);
  if (!windows.ok()) return windows.status();
  const fs::path dir = fs::path(ctx.scratch_dir()) / "calibration";
  RemoveTree(dir).IgnoreError();
  fs::create_directories(dir);
  {
    SafetensorsWriter w;
    w.SetMetadata("key", key);
    if (auto s = AddTensor(w, "input_ids", *windows); !s.ok()) return s;
    if (auto s = w.WriteFile((dir / "windows.safetensors").string()); !s.ok()) return s;
  }
  // The uncompressed model, layer by layer on the device, statistics of every linear's inputs.
  c10::NoGradGuard no_grad;
  const int64_t batch = 16;
  at::Tensor hidden = EmbedWindows(*model, *windows, ctx.device(), batch);
  const RotaryTables rope = model->Rotary(windows->size(1), ctx.device(), at::kFloat);
  for (int64_t i = 0; i < model->num_layers(); ++i) {
    if (auto s = ctx.CheckStep(); !s.ok()) return s;
    DecoderLayer layer = model->layer(i).To(ctx.device(), at::kFloat);
    StatisticsObserver observer(ctx.device());
    hidden = RunLayerBatched(model->config(), layer, hidden, rope, i, batch, &observer);
    if (!at::isfinite(hidden).all().item<bool>()) {
      return absl::InvalidArgumentError(
          absl::StrCat("model.layers.", i, ": activations are not finite"));
    }
    SafetensorsWriter w;
    if (auto s = observer.Write(w); !s.ok()) return s;
    if (auto s = w.WriteFile((dir / absl::StrCat("layer-", i, ".safetensors")).string()); !s.ok())
      return s;
    ctx.SetProgress(i + 1, model->num_layers(), "layers");
  }
  if (auto s = ctx.store().PutDirectory(dir.string(), uri, ctx.provenance()); !s.ok()) return s;
  out.result["reused"] = false;
  return out;
}

absl::StatusOr<TaskOutput> QuantizeRunner::Run(TaskContext& ctx) {
  const json& spec = ctx.spec();
  const auto started = std::chrono::steady_clock::now();
  const std::string method = spec.value("method", "rtn");
  StreamingQuantizeOptions options;
  SequentialOptions& seq = options.sequential;
  seq.method =
      method == "gptq" ? SequentialOptions::Method::kGptq : SequentialOptions::Method::kRtn;
  seq.gptq.quant = {spec.value("bits", 4), spec.value("group_size", int64_t{128}),
                    spec.value("sym", false)};
  seq.gptq.act_order = spec.value("act_order", false);
  seq.gptq.static_groups = spec.value("static_groups", false);
  seq.gptq.damp = spec.value("damp", 0.01);
  seq.gptq.block_size = spec.value("block_size", int64_t{128});
  seq.device = ctx.device();
  if (device_is_cuda(ctx.device())) ResetPeakDeviceMemory(ctx.device());

  auto model_dir = InputModel(ctx);
  if (!model_dir.ok()) return model_dir.status();
  auto config = LoadLlamaConfig(*model_dir);
  if (!config.ok()) return config.status();
  at::Tensor calibration;
  if (seq.method == SequentialOptions::Method::kGptq) {
    auto windows = CalibrationWindows(ctx, *model_dir, *config);
    if (!windows.ok()) return windows.status();
    calibration = *windows;
  }

  // The output is written once: each layer's shard goes into the store as soon as it is written
  // (moved, not copied, on the file backend), and the checkpoint is a manifest naming the shards
  // done so far, so a retried task resumes after the last of them.
  const std::string ckpt = ctx.lease().checkpoint_uri() + "/shards";
  const std::string output = ctx.lease().output_uri();
  std::map<int64_t, StoredFile> layer_shards;
  std::vector<StoredFile> other_files;
  if (auto done = ctx.store().Files(ckpt); done.ok()) {
    for (const StoredFile& f : *done) {
      // model-000{i+1}-of-...: layer i.
      int64_t number = 0;
      if (f.name.rfind("model-", 0) != 0 || !absl::SimpleAtoi(f.name.substr(6, 5), &number))
        continue;
      if (number >= 1) layer_shards[number - 1] = f;
    }
  }
  while (options.start_layer < config->num_hidden_layers && layer_shards.count(options.start_layer))
    ++options.start_layer;
  if (options.start_layer > 0) {
    ctx.Log(absl::StrCat("resumed from checkpoint: ", options.start_layer,
                         " layers already quantized"));
  }
  const std::string resume_dir = ctx.scratch_dir() + "/resume";
  options.finished_shard = [&](int64_t layer) -> absl::StatusOr<std::string> {
    const StoredFile& f = layer_shards.at(layer);
    fs::create_directories(resume_dir);
    const std::string path = resume_dir + "/" + f.name;
    if (auto s = ctx.store().FetchFile(ckpt, f.name, path); !s.ok()) return s;
    return path;
  };
  std::mutex files_mu;
  options.on_file = [&](int64_t layer, const std::string& path,
                        const std::string& name) -> absl::Status {
    auto stored = ctx.store().PutFileBlob(output, name, path, /*consume=*/true);
    if (!stored.ok()) return stored.status();
    std::vector<StoredFile> done;
    {
      std::lock_guard<std::mutex> lock(files_mu);
      if (layer < 0) {
        other_files.push_back(*stored);
        return absl::OkStatus();
      }
      layer_shards[layer] = *stored;
      for (const auto& [i, f] : layer_shards) done.push_back(f);
    }
    // The checkpoint names every finished shard, which also keeps them from garbage collection.
    ArtifactProvenance provenance = ctx.provenance();
    provenance.stage = "quantize-checkpoint";
    return ctx.store().PutManifest(ckpt, done, provenance);
  };
  options.on_progress = [&](int64_t completed, int64_t total,
                            const std::string& unit) -> absl::Status {
    ctx.SetProgress(completed, total, unit);
    if (completed == total - 1) ctx.Log("layers done; writing the embeddings, index and config");
    return ctx.CheckStep();
  };
  // A gang (workers: N) shares the calibration windows: Hessians are summed over the ranks and
  // each linear is solved on one of them; rank 0 writes.
  const v1::TaskLease& lease = ctx.lease();
  auto gang = JoinGang(ctx);
  if (!gang.ok()) return gang.status();
  seq.ranks = gang->get();
  if (auto s = ctx.CheckStep(); !s.ok()) return s;
  const std::string out_dir = ctx.scratch_dir() + "/model";
  RemoveTree(out_dir).IgnoreError();
  auto quantized = QuantizeCheckpointStreaming(*model_dir, calibration, out_dir, options);
  if (!quantized.ok()) return quantized.status();
  if (lease.rank() != 0) {
    TaskOutput out;  // rank 0 writes the model and reports
    out.result = {{"rank", lease.rank()}};
    return out;
  }

  // The tokenizer travels with the model.
  for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json", "generation_config.json"}) {
    const fs::path source = fs::path(*model_dir) / name;
    if (!fs::exists(source)) continue;
    auto stored = ctx.store().PutFileBlob(output, name, source.string(), /*consume=*/false);
    if (!stored.ok()) return stored.status();
    other_files.push_back(*stored);
  }
  std::vector<StoredFile> files;
  for (const auto& [i, f] : layer_shards) files.push_back(f);
  files.insert(files.end(), other_files.begin(), other_files.end());
  if (auto s = ctx.store().PutManifest(output, files, ctx.provenance()); !s.ok()) return s;
  ctx.store().Delete(ctx.lease().checkpoint_uri()).IgnoreError();  // finished: served its purpose

  TaskOutput out;
  out.outputs["model"] = output;
  json layer_reports = json::array();
  for (const LinearReport& r : quantized->reports) {
    layer_reports.push_back(
        {{"layer", r.layer}, {"linear", r.name}, {"loss", r.loss}, {"seconds", r.seconds}});
  }
  int64_t output_bytes = 0;
  for (const StoredFile& f : files) output_bytes += f.size;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const QuantizedSize& q = quantized->quantized;
  out.result = {{"method", method},
                {"bits", seq.gptq.quant.bits},
                {"group_size", seq.gptq.quant.group_size},
                {"sym", seq.gptq.quant.symmetric},
                {"act_order", seq.gptq.act_order},
                {"format", quantized->format},
                {"layers", config->num_hidden_layers},
                {"resumed_from_layer", options.start_layer},
                {"quantized_weights", q.weights},
                {"bits_per_quantized_weight", q.weights ? q.bits / q.weights : 0.0},
                {"packed_size_bytes", (quantized->parameters - q.weights) * 2.0 + q.bits / 8.0},
                {"output_bytes", output_bytes},
                {"bytes_written", quantized->bytes_written},
                {"seconds", seconds},
                {"phase_seconds", quantized->phase_seconds},
                {"peak_host_memory_bytes", PeakHostMemoryBytes()},
                {"peak_device_memory_bytes",
                 device_is_cuda(ctx.device()) ? PeakDeviceMemoryBytes(ctx.device()) : int64_t{0}},
                {"linears", layer_reports}};
  return out;
}

absl::StatusOr<TaskOutput> PruneRunner::Run(TaskContext& ctx) {
  const json& spec = ctx.spec();
  auto model_dir = InputModel(ctx);
  if (!model_dir.ok()) return model_dir.status();
  auto model = LoadModel(*model_dir, at::kFloat, ctx.device());
  if (!model.ok()) return model.status();
  auto method = ParsePruneMethod(spec.value("method", "wanda"));
  if (!method.ok()) return method.status();
  auto pattern = ParsePrunePattern(spec.value("pattern", "unstructured"));
  if (!pattern.ok()) return pattern.status();
  const double sparsity = spec.value("sparsity", 0.5);

  std::vector<at::Tensor> batches;
  int64_t windows_used = 0;
  if (*method == PruneMethod::kWanda) {
    auto windows = CalibrationWindows(ctx, *model_dir, model->config());
    if (!windows.ok()) return windows.status();
    windows_used = windows->size(0);
    for (int64_t i = 0; i < windows_used; i += 8)
      batches.push_back(windows->slice(0, i, std::min<int64_t>(windows_used, i + 8)));
  }
  if (auto s = ctx.CheckStep(); !s.ok()) return s;
  const auto start = std::chrono::steady_clock::now();
  const int64_t parameters_before = model->NumParameters();
  const int64_t width_before = model->config().intermediate_size;
  const int64_t kv_heads_before = model->config().num_key_value_heads;
  double achieved = 0;
  size_t pruned_matrices = 0;
  if (*pattern == PrunePattern::kMlpChannels) {
    // Structured: the model comes back narrower; what was removed is the achieved sparsity.
    auto narrow = PruneMlpChannels(*model, *method, sparsity, batches);
    if (!narrow.ok()) return narrow.status();
    *model = *std::move(narrow);
    achieved = 1.0 - static_cast<double>(model->config().intermediate_size) / width_before;
    pruned_matrices = 3 * static_cast<size_t>(model->num_layers());
  } else if (*pattern == PrunePattern::kAttentionHeads) {
    auto narrow = PruneAttentionHeads(*model, *method, sparsity, batches);
    if (!narrow.ok()) return narrow.status();
    *model = *std::move(narrow);
    achieved = 1.0 - static_cast<double>(model->config().num_key_value_heads) / kv_heads_before;
    pruned_matrices = 4 * static_cast<size_t>(model->num_layers());
  } else {
    SparsityMasks masks;
    if (auto s = masks.Prune(*model, *method, *pattern, sparsity, batches); !s.ok()) return s;
    achieved = LinearSparsity(*model);
    pruned_matrices = masks.size();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ctx.SetProgress(1, 1, "pruned");
  ctx.Log(absl::StrCat("pruned ", pruned_matrices, " linear layers to ", achieved, " sparsity (",
                       spec.value("method", "wanda"), ", ", spec.value("pattern", "unstructured"),
                       ") in ", seconds, " s"));

  const fs::path out_dir = fs::path(ctx.scratch_dir()) / "pruned";
  RemoveTree(out_dir).IgnoreError();
  if (auto s = SaveModelLike(*model, *model_dir, out_dir.string()); !s.ok()) return s;
  if (auto s =
          ctx.store().PutDirectory(out_dir.string(), ctx.lease().output_uri(), ctx.provenance());
      !s.ok())
    return s;
  TaskOutput out;
  out.outputs["model"] = ctx.lease().output_uri();
  out.result = {{"method", spec.value("method", "wanda")},
                {"pattern", spec.value("pattern", "unstructured")},
                {"target_sparsity", sparsity},
                {"sparsity", achieved},
                {"pruned_matrices", pruned_matrices},
                {"parameters_before", parameters_before},
                {"parameters", model->NumParameters()},
                {"intermediate_size", model->config().intermediate_size},
                {"num_attention_heads", model->config().num_attention_heads},
                {"num_key_value_heads", model->config().num_key_value_heads},
                {"calibration_windows", windows_used},
                {"seconds", seconds}};
  return out;
}

}  // namespace squeeze::worker
