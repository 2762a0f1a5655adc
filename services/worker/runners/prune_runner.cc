// prune: magnitude or Wanda scores (unstructured, 2:4, channels or heads) on the model in memory;
// SparseGPT (unstructured, 2:4, 4:8) streamed layer by layer and resumable.
#include "services/worker/runners/layer_shard_output.h"
#include "services/worker/runners/runners.h"
#include "services/worker/runners/stage_io.h"

#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/base/file_util.h"
#include "common/base/status_macros.h"
#include "common/compress/prune.h"
#include "common/compress/quantized_checkpoint.h"
#include "common/compress/sequential_quantizer.h"
#include "common/compress/sparse24_checkpoint.h"
#include "common/compress/streaming_quantizer.h"
#include "common/model/llama_model.h"

namespace squeeze::worker {

namespace fs = std::filesystem;

namespace {

// SparseGPT on the streaming quantizer's pass (streaming_quantizer.h): one decoder layer in
// memory at a time, in the true sequential order, each layer's kept weights updated on the
// Hessians of its inputs from the pruned layers before it; each layer's shard goes into the
// store as it is written, so a retried task resumes after the last finished layer.
absl::StatusOr<TaskOutput> PruneSparseGpt(TaskContext& ctx, const v1::PruneStage& spec,
                                          const PruneChoice& choice) {
  const auto start = std::chrono::steady_clock::now();
  const bool sparse24 = spec.format() == v1::PruneStage::SPARSE_24_BITMASK;
  if (sparse24 && choice.pattern != PrunePattern::k2of4)
    return absl::InvalidArgumentError("prune.format: sparse_24_bitmask holds 2:4 sparsity only");
  auto model_dir = InputModel(ctx);
  if (!model_dir.ok()) return model_dir.status();
  auto config = LoadLlamaConfig(*model_dir);
  if (!config.ok()) return config.status();
  StreamingQuantizeOptions options;
  SequentialOptions& seq = options.sequential;
  seq.method = SequentialOptions::Method::kSparseGpt;
  seq.device = ctx.device();
  seq.gptq.damp = spec.damp() > 0 ? spec.damp() : 0.01;
  seq.gptq.block_size = spec.block_size() > 0 ? spec.block_size() : 128;
  seq.gptq.quant.group_size = -1;  // unused: nothing is quantized
  SQ_ASSIGN_OR_RETURN(seq.sparsity, SparsityRuleOf(choice.pattern, spec.target().sparsity()));
  options.pruned_layout = sparse24 ? StreamingQuantizeOptions::PrunedLayout::kSparse24Bitmask
                                   : StreamingQuantizeOptions::PrunedLayout::kDense;
  // The source's dtype where it is bfloat16; otherwise float32, as the in-memory stages save
  // (the bitmask layout, which vLLM reads in 16 bits, float16).
  options.float_dtype = config->torch_dtype == "bfloat16" ? at::kBFloat16
                        : sparse24                        ? at::kHalf
                                                          : at::kFloat;
  auto calibration = CalibrationWindows(ctx, *model_dir, *config, spec.calibration());
  if (!calibration.ok()) return calibration.status();
  if (device_is_cuda(ctx.device())) ResetPeakDeviceMemory(ctx.device());

  LayerShardOutput shards(ctx, "prune-checkpoint");
  shards.Attach(config->num_hidden_layers, options);
  options.on_progress = [&](int64_t completed, int64_t total,
                            const std::string& unit) -> absl::Status {
    ctx.SetLayerProgress(completed, total, unit);
    return ctx.CheckStep();
  };
  // A gang (workers: N) shares the calibration windows as GPTQ's does; rank 0 writes.
  auto gang = JoinGang(ctx);
  if (!gang.ok()) return gang.status();
  seq.ranks = gang->get();
  if (auto s = ctx.CheckStep(); !s.ok()) return s;
  const std::string out_dir = ctx.scratch_dir() + "/pruned";
  RemoveTree(out_dir).IgnoreError();
  auto pruned = QuantizeCheckpointStreaming(*model_dir, *calibration, out_dir, options);
  if (!pruned.ok()) return pruned.status();
  TaskOutput out;
  v1::PruneResult& result = *out.result.mutable_prune();
  if (ctx.lease().rank() != 0) return out;  // rank 0 writes the model and reports
  auto files = shards.Commit(*model_dir);
  if (!files.ok()) return files.status();
  out.outputs["model"] = ctx.lease().output_uri();
  const double sparsity = static_cast<double>(pruned->zero_weights) /
                          static_cast<double>(std::max<int64_t>(pruned->linear_weights, 1));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ctx.Log(absl::StrCat("pruned ", config->num_hidden_layers, " layers to ", sparsity,
                       " sparsity (sparsegpt, ", choice.pattern_name, ") in ", seconds, " s"));
  result.set_method(choice.method_name);
  result.set_pattern(choice.pattern_name);
  result.set_target_sparsity(spec.target().sparsity());
  result.set_sparsity(sparsity);
  result.set_pruned_matrices(static_cast<int64_t>(DecoderLinearShapes(*config).size()) *
                             config->num_hidden_layers);
  result.set_parameters_before(pruned->parameters);
  result.set_parameters(pruned->parameters);
  result.set_intermediate_size(config->intermediate_size);
  result.set_num_attention_heads(config->num_attention_heads);
  result.set_num_key_value_heads(config->num_key_value_heads);
  result.set_calibration_windows(calibration->size(0));
  result.set_seconds(seconds);
  result.set_format(pruned->format);
  result.set_resumed_from_layer(options.start_layer);
  result.set_peak_host_memory_bytes(PeakHostMemoryBytes());
  if (device_is_cuda(ctx.device()))
    result.set_peak_device_memory_bytes(PeakDeviceMemoryBytes(ctx.device()));
  return out;
}

}  // namespace

absl::StatusOr<TaskOutput> PruneRunner::Run(TaskContext& ctx) {
  SQ_RETURN_IF_ERROR(ExpectStage(ctx, v1::StageOptions::kPrune));
  const v1::PruneStage& spec = ctx.stage().prune();
  SQ_ASSIGN_OR_RETURN(const PruneChoice choice, PruneChoiceOf(spec.target()));
  if (choice.method == PruneMethod::kSparseGpt) return PruneSparseGpt(ctx, spec, choice);
  auto model_dir = InputModel(ctx);
  if (!model_dir.ok()) return model_dir.status();
  auto model = LoadModel(*model_dir, at::kFloat, ctx.device());
  if (!model.ok()) return model.status();
  const double sparsity = spec.target().sparsity();

  std::vector<at::Tensor> batches;
  int64_t windows_used = 0;
  if (choice.method == PruneMethod::kWanda) {
    auto windows = CalibrationWindows(ctx, *model_dir, model->config(), spec.calibration());
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
  if (choice.pattern == PrunePattern::kMlpChannels) {
    // Structured: the model comes back narrower; what was removed is the achieved sparsity.
    auto narrow = PruneMlpChannels(*model, choice.method, sparsity, batches);
    if (!narrow.ok()) return narrow.status();
    *model = *std::move(narrow);
    achieved = 1.0 - static_cast<double>(model->config().intermediate_size) / width_before;
    pruned_matrices = 3 * static_cast<size_t>(model->num_layers());
  } else if (choice.pattern == PrunePattern::kAttentionHeads) {
    auto narrow = PruneAttentionHeads(*model, choice.method, sparsity, batches);
    if (!narrow.ok()) return narrow.status();
    *model = *std::move(narrow);
    achieved = 1.0 - static_cast<double>(model->config().num_key_value_heads) / kv_heads_before;
    pruned_matrices = 4 * static_cast<size_t>(model->num_layers());
  } else {
    SparsityMasks masks;
    if (auto s = masks.Prune(*model, choice.method, choice.pattern, sparsity, batches); !s.ok())
      return s;
    achieved = LinearSparsity(*model);
    pruned_matrices = masks.size();
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ctx.SetProgress(1, 1, v1::PROGRESS_UNIT_LAYERS);
  ctx.Log(absl::StrCat("pruned ", pruned_matrices, " linear layers to ", achieved, " sparsity (",
                       choice.method_name, ", ", choice.pattern_name, ") in ", seconds, " s"));

  const fs::path out_dir = fs::path(ctx.scratch_dir()) / "pruned";
  RemoveTree(out_dir).IgnoreError();
  if (spec.format() == v1::PruneStage::SPARSE_24_BITMASK) {
    if (choice.pattern != PrunePattern::k2of4)
      return absl::InvalidArgumentError("prune.format: sparse_24_bitmask holds 2:4 sparsity only");
    auto source = LoadLlamaConfig(*model_dir);
    const at::ScalarType dtype =
        source.ok() && source->torch_dtype == "bfloat16" ? at::kBFloat16 : at::kHalf;
    if (auto s = WriteSparse24Checkpoint(out_dir.string(), *model, dtype, achieved); !s.ok())
      return s;
    if (auto s = CopyTokenizerFiles(*model_dir, out_dir.string()); !s.ok()) return s;
  } else if (auto s = SaveModelLike(*model, *model_dir, out_dir.string()); !s.ok()) {
    return s;
  }
  if (auto s =
          ctx.store().PutDirectory(out_dir.string(), ctx.lease().output_uri(), ctx.provenance());
      !s.ok())
    return s;
  TaskOutput out;
  out.outputs["model"] = ctx.lease().output_uri();
  v1::PruneResult& result = *out.result.mutable_prune();
  result.set_method(choice.method_name);
  result.set_pattern(choice.pattern_name);
  result.set_target_sparsity(sparsity);
  result.set_sparsity(achieved);
  result.set_pruned_matrices(pruned_matrices);
  result.set_parameters_before(parameters_before);
  result.set_parameters(model->NumParameters());
  result.set_intermediate_size(model->config().intermediate_size);
  result.set_num_attention_heads(model->config().num_attention_heads);
  result.set_num_key_value_heads(model->config().num_key_value_heads);
  result.set_calibration_windows(windows_used);
  result.set_seconds(seconds);
  result.set_format(spec.format() == v1::PruneStage::SPARSE_24_BITMASK ? "sparse_24_bitmask"
                                                                       : "dense");
  return out;
}

}  // namespace squeeze::worker
