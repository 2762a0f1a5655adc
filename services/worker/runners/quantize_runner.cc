// quantize: RTN, GPTQ, AWQ, NF4 or FP4 through the streaming quantizer, a checkpoint per layer.
#include "services/worker/runners/layer_shard_output.h"
#include "services/worker/runners/runners.h"
#include "services/worker/runners/stage_io.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/file_util.h"
#include "common/base/status_macros.h"
#include "common/compress/mixed_precision.h"
#include "common/compress/sequential_quantizer.h"
#include "common/compress/streaming_quantizer.h"

namespace squeeze::worker {

namespace fs = std::filesystem;

namespace {

// Mixed precision's widths: read back from the task's checkpoint when an earlier attempt chose
// them, measured and chosen otherwise and kept there at once (rank 0). The plan's JSON is left
// at scratch_dir/plan_name either way.
absl::StatusOr<MixedPrecisionPlan> PlanWidths(TaskContext& ctx, const std::string& model_dir,
                                              const LlamaConfig& config,
                                              const at::Tensor& calibration,
                                              const StreamingQuantizeOptions& options,
                                              const MixedPrecisionBudget& budget,
                                              LayerShardOutput& shards,
                                              const std::string& plan_name, double& seconds) {
  const std::string path = ctx.scratch_dir() + "/" + plan_name;
  auto planned_before = shards.FetchCheckpointFile(plan_name, path);
  if (!planned_before.ok()) return planned_before.status();
  if (*planned_before) {
    auto text = ReadFileToString(path);
    if (!text.ok()) return text.status();
    ctx.Log("mixed precision: widths from the checkpoint's plan");
    return ParseMixedPrecisionPlan(*text, "the task checkpoint's " + plan_name);
  }
  StreamingQuantizeOptions measure = options;
  measure.on_progress = [&](int64_t completed, int64_t total,
                            const std::string& unit) -> absl::Status {
    ctx.SetLayerProgress(completed, total, unit);
    return ctx.CheckStep();
  };
  const auto started = std::chrono::steady_clock::now();
  auto sensitivity = MeasureLinearSensitivity(model_dir, calibration, measure, budget.bits);
  if (!sensitivity.ok()) return sensitivity.status();
  auto plan = PlanMixedPrecision(config, options.sequential.gptq.quant.group_size, budget,
                                 *std::move(sensitivity));
  if (!plan.ok()) return plan.status();
  std::map<int, int> modules_at;
  for (const auto& [module, bits] : plan->bits_by_module) ++modules_at[bits];
  std::string widths;
  for (const auto& [bits, n] : modules_at) absl::StrAppend(&widths, " ", n, " at ", bits, " bits;");
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  ctx.Log(absl::StrFormat("mixed precision: measured in %.1f s; average %.3f bits, %d bytes;%s",
                          seconds, plan->average_bits, plan->checkpoint_bytes, widths));
  {
    std::ofstream file(path, std::ios::trunc);
    file << MixedPrecisionPlanJson(*plan, budget);
    if (!file.good()) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  }
  if (ctx.lease().rank() == 0) {
    // Released with the checkpoint, which the task deletes once its output is committed.
    auto kept = shards.KeepInCheckpoint(plan_name, path);
    if (!kept.ok()) return kept.status();
  }
  return plan;
}

}  // namespace

absl::StatusOr<TaskOutput> QuantizeRunner::Run(TaskContext& ctx) {
  SQ_RETURN_IF_ERROR(ExpectStage(ctx, v1::StageOptions::kQuantize));
  const v1::QuantizeStage& spec = ctx.stage().quantize();
  const auto started = std::chrono::steady_clock::now();
  StreamingQuantizeOptions options;
  SequentialOptions& seq = options.sequential;
  std::string method;
  switch (spec.method()) {
    case v1::QuantizeStage::RTN:
      seq.method = SequentialOptions::Method::kRtn;
      method = "rtn";
      break;
    case v1::QuantizeStage::GPTQ:
      seq.method = SequentialOptions::Method::kGptq;
      method = "gptq";
      break;
    case v1::QuantizeStage::AWQ:
      seq.method = SequentialOptions::Method::kAwq;
      method = "awq";
      seq.awq.grid = spec.awq().grid();
      seq.awq.clip = spec.awq().clip();
      seq.awq.max_shrink = spec.awq().max_shrink();
      break;
    case v1::QuantizeStage::NF4:
    case v1::QuantizeStage::FP4:
      // Every linear alone against its codebook: the RTN path, stored in bitsandbytes' layout.
      seq.method = SequentialOptions::Method::kRtn;
      method = spec.method() == v1::QuantizeStage::NF4 ? "nf4" : "fp4";
      options.float4 = Float4Options{
          spec.method() == v1::QuantizeStage::NF4 ? Float4Type::kNf4 : Float4Type::kFp4,
          spec.group_size(), spec.double_quant()};
      break;
    default:  // never a silent fallback to another method
      return absl::InvalidArgumentError(
          absl::StrCat("quantize method ", spec.method(), " is not one this worker knows"));
  }
  options.dense_fallback = spec.dense_fallback();
  switch (spec.format()) {
    case v1::QuantizeStage::FORMAT_UNSPECIFIED:  // planned before the field existed
    case v1::QuantizeStage::FORMAT_GPTQ:
      options.format = QuantizedFormat::kGptq;
      break;
    case v1::QuantizeStage::FORMAT_AWQ_GEMM:
      options.format = QuantizedFormat::kAwqGemm;
      break;
    case v1::QuantizeStage::FORMAT_COMPRESSED_TENSORS:
      options.format = QuantizedFormat::kCompressedTensorsInt8;
      break;
    case v1::QuantizeStage::FORMAT_BITSANDBYTES:
      if (!options.float4)
        return absl::InvalidArgumentError("quantize format bitsandbytes holds nf4 or fp4 only");
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("quantize format ", spec.format(), " is not one this worker knows"));
  }
  switch (spec.activations().mode()) {
    case v1::ActivationQuantization::MODE_UNSPECIFIED:
    case v1::ActivationQuantization::NONE:
      options.activations = ActivationQuant::Kind::kNone;
      break;
    case v1::ActivationQuantization::DYNAMIC_PER_TOKEN:
      options.activations = ActivationQuant::Kind::kDynamicPerToken;
      break;
    case v1::ActivationQuantization::STATIC_PER_TENSOR:
      options.activations = ActivationQuant::Kind::kStaticPerTensor;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat("activation quantization mode ",
                                                     spec.activations().mode(),
                                                     " is not one this worker knows"));
  }
  if (spec.activations().has_smoothquant_alpha())
    options.smoothquant_alpha = spec.activations().smoothquant_alpha();
  std::optional<MixedPrecisionBudget> mixed;
  if (spec.has_mixed_precision()) {
    mixed.emplace();
    mixed->bits.assign(spec.mixed_precision().bits().begin(), spec.mixed_precision().bits().end());
    if (mixed->bits.empty()) mixed->bits = {2, 3, 4, 8};
    mixed->average_bits = spec.mixed_precision().average_bits();
    mixed->max_size_bytes = spec.mixed_precision().max_size_bytes();
  }
  std::string prune_pattern;
  if (spec.has_prune()) {
    SQ_ASSIGN_OR_RETURN(const PruneChoice prune, PruneChoiceOf(spec.prune()));
    if (prune.method != PruneMethod::kSparseGpt)
      return absl::InvalidArgumentError("quantize.prune: a quantize stage prunes with sparsegpt");
    SQ_ASSIGN_OR_RETURN(seq.sparsity, SparsityRuleOf(prune.pattern, spec.prune().sparsity()));
    prune_pattern = prune.pattern_name;
  }
  seq.gptq.quant = {spec.bits(), spec.group_size(), spec.sym()};
  seq.gptq.act_order = spec.act_order();
  seq.gptq.static_groups = spec.static_groups();
  seq.gptq.damp = spec.damp();
  seq.gptq.block_size = spec.block_size();
  seq.device = ctx.device();
  if (device_is_cuda(ctx.device())) ResetPeakDeviceMemory(ctx.device());

  auto model_dir = InputModel(ctx);
  if (!model_dir.ok()) return model_dir.status();
  auto config = LoadLlamaConfig(*model_dir);
  if (!config.ok()) return config.status();
  // bitsandbytes' compute dtype, which its unquantized tensors are stored in: the source's when
  // it is bfloat16, float16 otherwise.
  options.float_dtype = config->torch_dtype == "bfloat16" ? at::kBFloat16 : at::kHalf;
  at::Tensor calibration;
  if (seq.method != SequentialOptions::Method::kRtn ||
      options.activations == ActivationQuant::Kind::kStaticPerTensor ||
      options.smoothquant_alpha >= 0.0 || mixed) {
    auto windows = CalibrationWindows(ctx, *model_dir, *config, spec.calibration());
    if (!windows.ok()) return windows.status();
    calibration = *windows;
  }

  LayerShardOutput shards(ctx, "quantize-checkpoint");
  shards.Attach(config->num_hidden_layers, options);
  // Mixed precision's plan, kept with the checkpoint from the start so that a resumed task
  // quantizes at the widths its finished layers have.
  const std::string plan_name = "mixed_precision.json";
  options.on_progress = [&](int64_t completed, int64_t total,
                            const std::string& unit) -> absl::Status {
    ctx.SetLayerProgress(completed, total, unit);
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
  std::optional<MixedPrecisionPlan> plan;
  double sensitivity_seconds = 0.0;
  if (mixed) {
    auto planned = PlanWidths(ctx, *model_dir, *config, calibration, options, *mixed, shards,
                              plan_name, sensitivity_seconds);
    if (!planned.ok()) return planned.status();
    plan = *std::move(planned);
    seq.gptq.quant.bits = plan->base_bits;
    for (const auto& [module, bits] : plan->bits_by_module) {
      if (bits != plan->base_bits) seq.bits_by_module[module] = bits;
    }
    // The plan is part of the output (rank 0 writes it): what each module took and why.
    if (lease.rank() == 0) {
      if (auto s = shards.AddOutputFile(plan_name, ctx.scratch_dir() + "/" + plan_name,
                                        /*consume=*/false);
          !s.ok())
        return s;
    }
  }
  const std::string out_dir = ctx.scratch_dir() + "/model";
  RemoveTree(out_dir).IgnoreError();
  auto quantized = QuantizeCheckpointStreaming(*model_dir, calibration, out_dir, options);
  if (!quantized.ok()) return quantized.status();
  if (lease.rank() != 0) {
    TaskOutput out;  // rank 0 writes the model and reports
    out.result.mutable_quantize();
    return out;
  }

  auto files = shards.Commit(*model_dir);  // with the tokenizer
  if (!files.ok()) return files.status();
  TaskOutput out;
  out.outputs["model"] = ctx.lease().output_uri();
  int64_t output_bytes = 0;
  for (const StoredFile& f : *files) output_bytes += f.size;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const QuantizedSize& q = quantized->quantized;
  v1::QuantizeResult& result = *out.result.mutable_quantize();
  result.set_method(method);
  result.set_bits(seq.gptq.quant.bits);
  result.set_group_size(seq.gptq.quant.group_size);
  result.set_sym(seq.gptq.quant.symmetric);
  result.set_act_order(seq.gptq.act_order);
  result.set_format(quantized->format);
  result.set_activations(options.activations == ActivationQuant::Kind::kDynamicPerToken ? "dynamic"
                         : options.activations == ActivationQuant::Kind::kStaticPerTensor ? "static"
                                                                                          : "none");
  if (options.smoothquant_alpha >= 0.0) result.set_smoothquant_alpha(options.smoothquant_alpha);
  result.set_layers(config->num_hidden_layers);
  result.set_resumed_from_layer(options.start_layer);
  result.set_quantized_weights(q.weights);
  result.set_bits_per_quantized_weight(q.weights ? q.bits / q.weights : 0.0);
  result.set_packed_size_bytes((quantized->parameters - q.weights) * 2.0 + q.bits / 8.0);
  result.set_output_bytes(output_bytes);
  result.set_bytes_written(quantized->bytes_written);
  result.set_seconds(seconds);
  result.mutable_phase_seconds()->insert(quantized->phase_seconds.begin(),
                                         quantized->phase_seconds.end());
  if (plan)
    (*result.mutable_phase_seconds())["sensitivity (mixed precision)"] = sensitivity_seconds;
  result.set_peak_host_memory_bytes(PeakHostMemoryBytes());
  if (device_is_cuda(ctx.device()))
    result.set_peak_device_memory_bytes(PeakDeviceMemoryBytes(ctx.device()));
  for (const LinearReport& r : quantized->reports) {
    v1::LinearQuantization& l = *result.add_linears();
    l.set_layer(r.layer);
    l.set_linear(r.name);
    l.set_loss(r.loss);
    l.set_seconds(r.seconds);
    l.set_bits(r.bits);
  }
  if (!prune_pattern.empty()) {
    result.set_prune_pattern(prune_pattern);
    result.set_prune_sparsity(prune_pattern == "unstructured" ? spec.prune().sparsity() : 0.5);
  }
  if (plan) {
    result.mutable_bits_by_module()->insert(plan->bits_by_module.begin(),
                                            plan->bits_by_module.end());
    result.set_average_bits(plan->average_bits);
  } else {
    result.set_average_bits(seq.gptq.quant.bits);
  }
  return out;
}

}  // namespace squeeze::worker
