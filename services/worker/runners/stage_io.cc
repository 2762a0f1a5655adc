#include "services/worker/runners/stage_io.h"

#ifdef SQUEEZE_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <sys/resource.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/base/file_util.h"
#include "common/base/sha256.h"
#include "common/compress/quantized_checkpoint.h"
#include "common/compress/sequential_quantizer.h"
#include "common/compress/streaming_quantizer.h"
#include "common/data/text_dataset.h"
#include "common/model/llama_model.h"
#include "common/recipe/recipe.h"
#include "common/store/data_files.h"
#include "common/tensor/torch_tensor.h"
#include "common/train/data_parallel.h"

namespace squeeze::worker {

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
                                              const LlamaConfig& config,
                                              const v1::CalibrationSample& sample) {
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
  auto path = DataFile(ctx, ctx.data().calibration(), "data.calibration");
  if (!path.ok()) return path.status();
  auto data = LoadTextDatasetForModel(model_dir, config, *path);
  if (!data.ok()) return data.status();
  CalibrationOptions co;
  co.num_samples = sample.samples();
  co.seq_len = std::min<int64_t>(sample.seq_len(), config.max_position_embeddings);
  co.seed = sample.seed();
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

const std::vector<std::string>& TokenizerFileNames() {
  static const auto* const kNames = new std::vector<std::string>{"tokenizer.model",
                                                                 "tokenizer.json",
                                                                 "tokenizer_config.json",
                                                                 "special_tokens_map.json",
                                                                 "generation_config.json",
                                                                 "added_tokens.json",
                                                                 "vocab.json",
                                                                 "merges.txt",
                                                                 "chat_template.jinja"};
  return *kNames;
}

absl::Status CopyTokenizerFiles(const std::string& source_dir, const std::string& out_dir) {
  for (const std::string& name : TokenizerFileNames()) {
    const fs::path source = fs::path(source_dir) / name;
    if (!fs::exists(source)) continue;
    std::error_code ec;
    fs::copy_file(source, fs::path(out_dir) / name, fs::copy_options::overwrite_existing, ec);
    if (ec)
      return absl::UnavailableError(
          absl::StrCat("cannot copy ", source.string(), " to ", out_dir, ": ", ec.message()));
  }
  return absl::OkStatus();
}

absl::Status SaveModelLike(const LlamaModel& model, const std::string& source_dir,
                           const std::string& out_dir) {
  auto source_config = LoadLlamaConfig(source_dir);
  const at::ScalarType save_dtype =
      source_config.ok() && source_config->torch_dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  if (auto s = model.Save(out_dir, save_dtype); !s.ok()) return s;
  return CopyTokenizerFiles(source_dir, out_dir);
}

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

absl::StatusOr<std::string> DataFile(TaskContext& ctx, const std::string& uri,
                                     const std::string& field) {
  return PlaceDataFile(ctx.store(), uri, ctx.scratch_dir(), field);
}

absl::Status ExpectStage(const TaskContext& ctx, v1::StageOptions::StageCase expected) {
  if (ctx.stage().stage_case() == expected) return absl::OkStatus();
  const std::string carried = StageKind(ctx.stage());
  return absl::InvalidArgumentError(
      absl::StrCat("the lease for a ", ctx.lease().kind(), " task carries ",
                   carried.empty() ? "no stage options" : absl::StrCat(carried, " options"),
                   " (coordinator and worker of different versions?)"));
}

absl::StatusOr<PruneChoice> PruneChoiceOf(const v1::PruneTarget& target) {
  PruneChoice c;
  switch (target.method()) {
    case v1::PruneTarget::MAGNITUDE:
      c.method = PruneMethod::kMagnitude;
      c.method_name = "magnitude";
      break;
    case v1::PruneTarget::WANDA:
      c.method = PruneMethod::kWanda;
      c.method_name = "wanda";
      break;
    case v1::PruneTarget::SPARSEGPT:
      c.method = PruneMethod::kSparseGpt;
      c.method_name = "sparsegpt";
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("prune method ", target.method(), " is not one this worker knows"));
  }
  switch (target.pattern()) {
    case v1::PruneTarget::UNSTRUCTURED:
      c.pattern = PrunePattern::kUnstructured;
      c.pattern_name = "unstructured";
      break;
    case v1::PruneTarget::TWO_FOUR:
      c.pattern = PrunePattern::k2of4;
      c.pattern_name = "2:4";
      break;
    case v1::PruneTarget::FOUR_EIGHT:
      c.pattern = PrunePattern::k4of8;
      c.pattern_name = "4:8";
      break;
    case v1::PruneTarget::CHANNELS:
      c.pattern = PrunePattern::kMlpChannels;
      c.pattern_name = "channels";
      break;
    case v1::PruneTarget::HEADS:
      c.pattern = PrunePattern::kAttentionHeads;
      c.pattern_name = "heads";
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("prune pattern ", target.pattern(), " is not one this worker knows"));
  }
  return c;
}

}  // namespace squeeze::worker
