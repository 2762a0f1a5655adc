// The distill stage: a student trained from the stage's input model (the teacher), one rank per
// worker of a gang, checkpointed to the store so that a retried task resumes where the last
// checkpoint left it.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/base/file_util.h"
#include "common/base/sha256.h"
#include "common/base/status_macros.h"
#include "common/compress/perplexity.h"
#include "common/compress/prune.h"
#include "common/compress/prune_schedule.h"
#include "common/compress/quantized_checkpoint.h"
#include "common/data/text_dataset.h"
#include "common/model/llama_config.h"
#include "common/model/lora.h"
#include "common/recipe/recipe.h"
#include "common/tensor/safetensors.h"
#include "common/tensor/torch_tensor.h"
#include "common/train/data_parallel.h"
#include "common/train/distill.h"
#include "common/train/teacher_logits_cache.h"
#include "services/worker/runners/runners.h"
#include "services/worker/runners/stage_io.h"

namespace squeeze::worker {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<LlamaModel> BuildStudent(const v1::StudentSpec& s, const LlamaModel& teacher,
                                        uint64_t seed) {
  switch (s.kind_case()) {
    case v1::StudentSpec::kKeepEvery:
      return StudentFromTeacherLayers(teacher, EveryKthLayer(teacher.num_layers(), s.keep_every()));
    case v1::StudentSpec::kLayers:
      return StudentFromTeacherLayers(
          teacher, std::vector<int64_t>(s.layers().index().begin(), s.layers().index().end()));
    case v1::StudentSpec::kConfig:
      return LlamaModel::RandomInit(DistillStudentConfig(s, teacher.config()), seed, at::kFloat,
                                    teacher.device());
    case v1::StudentSpec::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("distill: the stage names no student");
}

absl::StatusOr<DistillOptions> DistillOptionsOf(const v1::DistillStage& spec) {
  DistillOptions o;
  o.temperature = spec.temperature();
  o.alpha = spec.alpha();
  if (spec.has_hidden_loss()) {
    const v1::HiddenLoss& h = spec.hidden_loss();
    switch (h.type()) {
      case v1::HiddenLoss::MSE:
        o.hidden_loss = DistillOptions::HiddenLoss::kMse;
        break;
      case v1::HiddenLoss::COSINE:
        o.hidden_loss = DistillOptions::HiddenLoss::kCosine;
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("hidden loss type ", h.type(), " is not one this worker knows"));
    }
    o.hidden_weight = h.weight();
    o.projection = h.projection();
    for (const v1::HiddenLoss::LayerPair& p : h.layers())
      o.hidden_layers.emplace_back(p.student(), p.teacher());
  }
  return o;
}

// The stage's training options; evaluation runs only when there is evaluation data.
TrainerOptions TrainerOptionsOf(const v1::DistillStage& spec, bool has_eval, at::Device device) {
  TrainerOptions to;
  to.steps = spec.steps();
  to.batch_size = spec.batch_size();
  to.seq_len = spec.seq_len();
  to.grad_accum = spec.grad_accum();
  to.lr = spec.lr();
  to.warmup_steps = spec.warmup_steps();
  to.weight_decay = spec.weight_decay();
  to.grad_clip = spec.grad_clip();
  to.eval_every = has_eval ? spec.eval_every() : 0;
  to.checkpoint_every = spec.checkpoint_every();
  to.seed = spec.seed();
  to.autocast_bf16 = device.is_cuda();  // bf16 compute, float32 master weights
  to.early_stopping_patience = spec.early_stopping_patience();
  to.early_stopping_min_delta = spec.early_stopping_min_delta();
  return to;
}

// Prepares the trainer's checkpoint directory under the task's scratch and fills it from the
// store's last checkpoint of this task, if any; returns the step that checkpoint was taken at.
absl::StatusOr<int64_t> PlaceTrainCheckpoint(TaskContext& ctx, TrainerOptions& to) {
  const fs::path ckpt_dir = fs::path(ctx.scratch_dir()) / "train";
  RemoveTree(ckpt_dir).IgnoreError();
  fs::create_directories(ckpt_dir);
  to.checkpoint_dir = ckpt_dir.string();
  const std::string& ckpt_uri = ctx.lease().checkpoint_uri();
  if (auto exists = ctx.store().Exists(ckpt_uri); !exists.ok() || !*exists) return 0;
  auto dir = ctx.store().LocalDirectory(ckpt_uri, (ckpt_dir / "checkpoint").string());
  if (!dir.ok()) return dir.status();
  const int64_t step = Trainer::CheckpointStep(ckpt_dir.string()).value_or(0);
  ctx.Log(absl::StrCat("resuming from the checkpoint of step ", step));
  return step;
}

// The stage's data in `model_dir`'s tokenizer: data.train, and data.evaluation[0] when the job has
// evaluation data (empty otherwise).
struct DistillData {
  std::string train_path;  // local
  std::vector<TextExample> train, eval;
};
absl::StatusOr<DistillData> LoadDistillData(TaskContext& ctx, const std::string& model_dir,
                                            const LlamaConfig& config) {
  DistillData out;
  SQ_ASSIGN_OR_RETURN(out.train_path, DataFile(ctx, ctx.data().train(), "data.train"));
  SQ_ASSIGN_OR_RETURN(out.train, LoadTextDatasetForModel(model_dir, config, out.train_path));
  const auto& eval_files = ctx.data().evaluation();
  if (eval_files.empty()) return out;
  SQ_ASSIGN_OR_RETURN(const std::string eval_path,
                      DataFile(ctx, eval_files[0], "data.evaluation[0]"));
  SQ_ASSIGN_OR_RETURN(out.eval, LoadTextDatasetForModel(model_dir, config, eval_path));
  return out;
}

// Callbacks every distill run shares: cancellation, progress and metrics per step, the loss
// curve every log_every steps, evaluations, and checkpoints uploaded to the store.
// `parts` gives the loss's parts for the log.
TrainerCallbacks CommonCallbacks(TaskContext& ctx, const TrainerOptions& to, int64_t log_every,
                                 int64_t resumed_from, const LlamaModel& student,
                                 const std::vector<TextExample>& eval,
                                 const PerplexityOptions& eval_options,
                                 std::function<DistillationObjective::Parts()> parts,
                                 v1::DistillResult& result, absl::Status& stop_reason,
                                 int64_t& tokens_seen) {
  const auto start = std::chrono::steady_clock::now();
  TrainerCallbacks callbacks;
  callbacks.should_stop = [&ctx, &stop_reason] {
    stop_reason = ctx.CheckStep();
    return !stop_reason.ok();
  };
  callbacks.on_step = [&ctx, to, log_every, resumed_from, start, parts, &result,
                       &tokens_seen](const TrainStepStats& s) {
    tokens_seen += to.batch_size * to.seq_len;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double steps_per_second = (s.step - resumed_from) / std::max(elapsed, 1e-9);
    ctx.SetProgress(s.step, to.steps, v1::PROGRESS_UNIT_STEPS);
    ctx.SetMetric("loss", s.loss);
    ctx.SetMetric("tokens_per_second", s.tokens_per_second);
    ctx.SetMetric("tokens", static_cast<double>(tokens_seen));
    ctx.SetMetric("learning_rate", s.lr);
    ctx.SetMetric("eta_seconds", (to.steps - s.step) / std::max(steps_per_second, 1e-9));
    if (s.step % log_every == 0 || s.step == to.steps) {
      const DistillationObjective::Parts p = parts();
      v1::LossPoint& point = *result.add_loss_curve();
      point.set_step(s.step);
      point.set_loss(s.loss);
      point.set_kd(p.kd);
      point.set_ce(p.ce);
      point.set_hidden(p.hidden);
      point.set_lr(s.lr);
      point.set_tokens_per_second(s.tokens_per_second);
      ctx.Log(absl::StrCat("step ", s.step, "/", to.steps, " loss ", s.loss, " (kd ", p.kd, ", ce ",
                           p.ce, "), ", static_cast<int64_t>(s.tokens_per_second), " tokens/s"));
    }
  };
  callbacks.evaluate = [&student, &eval, eval_options](int64_t) {
    auto ppl = EvaluatePerplexity(student, eval, eval_options);
    return ppl.ok() ? std::log(ppl->total.perplexity()) : std::nan("");
  };
  callbacks.on_eval = [&ctx, &result](int64_t step, double eval_loss) {
    v1::EvalPoint& point = *result.add_eval_curve();
    point.set_step(step);
    point.set_loss(eval_loss);
    point.set_perplexity(std::exp(eval_loss));
    ctx.SetMetric("eval_perplexity", std::exp(eval_loss));
    ctx.Log(absl::StrCat("step ", step, ": evaluation perplexity ", std::exp(eval_loss)));
  };
  callbacks.on_checkpoint = [&ctx, to](int64_t step) -> absl::Status {
    ArtifactProvenance provenance = ctx.provenance();
    provenance.stage = "distill-checkpoint";
    // Private blobs: each checkpoint frees the one it replaces, and deleting it frees it all.
    return ctx.store().PutDirectory((fs::path(to.checkpoint_dir) / "checkpoint").string(),
                                    ctx.lease().checkpoint_uri(), provenance,
                                    CheckpointPutOptions());
  };
  return callbacks;
}

// The run's figures every distill result carries.
void FillRunResult(TaskContext& ctx, const Trainer& trainer, int64_t resumed_from, double seconds,
                   int64_t tokens_seen, v1::DistillResult& result) {
  result.set_steps(trainer.step());
  result.set_stopped_early(trainer.stopped_early());
  result.set_resumed_from_step(resumed_from);
  result.set_world_size(ctx.lease().world_size());
  if (result.loss_curve_size() > 0) result.set_final_loss(result.loss_curve().rbegin()->loss());
  result.set_tokens_per_second(seconds > 0 ? tokens_seen / seconds : 0.0);
  result.set_peak_host_memory_bytes(PeakHostMemoryBytes());
  if (device_is_cuda(ctx.device()))
    result.set_peak_device_memory_bytes(PeakDeviceMemoryBytes(ctx.device()));
}

// The trained student's shape and its perplexity on the evaluation split (when there is one).
void FillStudentResult(const LlamaModel& student, const std::string& teacher_uri,
                       const std::vector<TextExample>& eval, const PerplexityOptions& eval_options,
                       v1::DistillResult& result) {
  result.set_student_layers(student.num_layers());
  result.set_student_hidden_size(student.config().hidden_size);
  result.set_teacher_model(teacher_uri);
  if (eval.empty()) return;
  c10::NoGradGuard no_grad;
  auto ppl = EvaluatePerplexity(student, eval, eval_options);
  if (ppl.ok()) result.set_eval_perplexity(ppl->total.perplexity());
}

// Stores the directory rank 0 wrote as the task's output and drops the checkpoint it supersedes.
absl::Status CommitOutputDirectory(TaskContext& ctx, const std::string& dir, TaskOutput& out) {
  const v1::TaskLease& lease = ctx.lease();
  if (auto s = ctx.store().PutDirectory(dir, lease.output_uri(), ctx.provenance()); !s.ok())
    return s;
  ctx.store().Delete(lease.checkpoint_uri()).IgnoreError();
  out.outputs["model"] = lease.output_uri();
  return absl::OkStatus();
}

// distill with lora: adapters trained on the stage's input model, frozen (held packed when it is
// quantized), against the job's model (kd) or the labels alone (ce). The output is the input
// model's files as they were, with the adapters in PEFT's layout beside them.
absl::StatusOr<TaskOutput> TrainAdapters(TaskContext& ctx) {
  const v1::DistillStage& spec = ctx.stage().distill();
  const v1::LoraOptions& lo = spec.lora();
  const v1::TaskLease& lease = ctx.lease();
  const at::Device device = ctx.device();
  const bool cuda = device_is_cuda(device);
  if (cuda) ResetPeakDeviceMemory(device);
  const std::string base_uri = lease.inputs().at("model");
  auto base_dir = ctx.store().LocalDirectory(base_uri, ctx.scratch_dir() + "/base");
  if (!base_dir.ok()) return base_dir.status();
  if (HasLoraAdapters(*base_dir))
    return absl::FailedPreconditionError(
        "distill.lora: the input model already carries adapters (adapter_config.json); put a "
        "quantize stage between the two lora stages, which merges them into the weights");
  const at::ScalarType dtype = cuda ? at::kBFloat16 : at::kFloat;
  PackedBaseInfo base;
  auto student = LoadModelWithPackedLinears(*base_dir, dtype, device, &base);
  if (!student.ok()) return student.status();
  if (base.linears == 0 && !lo.freeze_base())
    return absl::FailedPreconditionError(
        "distill.lora: the input model has no quantized linears; quantize it first or set "
        "freeze_base: true");
  LoraOptions options;
  options.targets.assign(lo.targets().begin(), lo.targets().end());
  options.rank = lo.rank();
  options.alpha = lo.alpha();
  options.dropout = lo.dropout();
  options.seed = spec.seed();
  if (auto s = AttachLoraAdapters(*student, options); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("distill.", s.message()));
  student->set_gradient_checkpointing(lo.gradient_checkpointing());
  ctx.Log(absl::StrCat("training rank-", options.rank, " adapters (", LoraParameterCount(*student),
                       " parameters) on a frozen ", base.format, " base (", base.linears,
                       " packed linears, ", base.bytes, " bytes)"));

  const bool kd = lo.loss() == v1::LoraOptions::KD;
  std::optional<LlamaModel> teacher;
  std::string teacher_uri;
  DistillOptions distill_options;
  if (kd) {
    const auto it = lease.inputs().find("teacher");
    teacher_uri = it != lease.inputs().end() ? it->second : base_uri;
    auto dir = ctx.store().LocalDirectory(teacher_uri, ctx.scratch_dir() + "/teacher");
    if (!dir.ok()) return dir.status();
    auto loaded = LoadModel(*dir, dtype, device);
    if (!loaded.ok()) return loaded.status();
    teacher = *std::move(loaded);
    SQ_ASSIGN_OR_RETURN(distill_options, DistillOptionsOf(spec));
    if (auto s = ValidateDistillOptions(distill_options, teacher->config(), student->config());
        !s.ok())
      return s;
  }
  SQ_ASSIGN_OR_RETURN(const DistillData data, LoadDistillData(ctx, *base_dir, student->config()));
  const std::vector<TextExample>& train = data.train;
  const std::vector<TextExample>& eval = data.eval;

  TrainerOptions to = TrainerOptionsOf(spec, !eval.empty(), device);
  SQ_ASSIGN_OR_RETURN(const int64_t resumed_from, PlaceTrainCheckpoint(ctx, to));
  SQ_ASSIGN_OR_RETURN(std::unique_ptr<DataParallel> parallel, JoinGang(ctx));

  // Cross-entropy is the distill loss with alpha 0 and no teacher: the same chunked kernel, which
  // never holds a float32 copy of the logits.
  if (!kd) distill_options.alpha = 0.0;
  DistillationObjective objective(kd ? &*teacher : nullptr, distill_options, student->config(),
                                  device);
  PerplexityOptions eval_options = FitToModel({}, student->config());
  eval_options.max_examples = spec.eval_examples();

  v1::DistillResult result;
  absl::Status stop_reason;
  int64_t tokens_seen = 0;
  const TrainerCallbacks callbacks = CommonCallbacks(
      ctx, to, spec.log_every(), resumed_from, *student, eval, eval_options,
      [&objective] { return objective.last_parts(); }, result, stop_reason, tokens_seen);
  const auto start = std::chrono::steady_clock::now();
  Trainer trainer(&*student, to, parallel.get());
  if (auto s = trainer.Run(WindowSampler(train, to.seq_len, to.seed), objective, callbacks);
      !s.ok()) {
    return stop_reason.ok() ? s : stop_reason;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  FillStudentResult(*student, teacher_uri, eval, eval_options, result);
  result.set_student_parameters(LoraParameterCount(*student));
  if (teacher) result.set_teacher_parameters(teacher->NumParameters());
  result.set_temperature(kd ? distill_options.temperature : 0.0);
  result.set_alpha(kd ? distill_options.alpha : 0.0);
  result.set_teacher_logits(kd ? "live" : "none (cross-entropy)");
  v1::LoraResult& lr = *result.mutable_lora();
  lr.set_rank(options.rank);
  lr.set_alpha(options.alpha);
  for (const std::string& t : options.targets) lr.add_targets(t);
  lr.set_adapter_parameters(LoraParameterCount(*student));
  lr.set_base_format(base.format);
  lr.set_base_bytes(base.bytes);
  lr.set_gradient_checkpointing(lo.gradient_checkpointing());
  FillRunResult(ctx, trainer, resumed_from, seconds, tokens_seen, result);
  TaskOutput out;
  *out.result.mutable_distill() = std::move(result);
  if (lease.rank() != 0) return out;  // rank 0 writes the adapters and reports

  // The base's files as they came (content-addressed: stored again without a copy), adapters
  // beside them.
  const fs::path out_dir = fs::path(ctx.scratch_dir()) / "adapter-out";
  RemoveTree(out_dir).IgnoreError();
  fs::create_directories(out_dir);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(*base_dir, ec)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    if (name == kLoraConfigFile || name == kLoraWeightsFile) continue;  // replaced below
    fs::copy_file(e.path(), out_dir / name, ec);
    if (ec)
      return absl::UnavailableError(
          absl::StrCat("cannot copy ", e.path().string(), ": ", ec.message()));
  }
  if (auto s = SaveLoraAdapters(*student, options, base_uri, out_dir.string()); !s.ok()) return s;
  if (auto s = CommitOutputDirectory(ctx, out_dir.string(), out); !s.ok()) return s;
  return out;
}

}  // namespace

absl::StatusOr<TaskOutput> DistillRunner::Run(TaskContext& ctx) {
  SQ_RETURN_IF_ERROR(ExpectStage(ctx, v1::StageOptions::kDistill));
  const v1::DistillStage& spec = ctx.stage().distill();
  if (spec.has_lora()) return TrainAdapters(ctx);
  const v1::TaskLease& lease = ctx.lease();
  if (device_is_cuda(ctx.device())) ResetPeakDeviceMemory(ctx.device());
  // The teacher is the stage's input model, or with `teacher: original` the job's model, while
  // the student is then cut from the input (a pruned model from a prune stage, say).
  const auto teacher_input = lease.inputs().find("teacher");
  const bool original_teacher = teacher_input != lease.inputs().end();
  const std::string teacher_uri =
      original_teacher ? teacher_input->second : lease.inputs().at("model");
  auto teacher_dir = ctx.store().LocalDirectory(teacher_uri, ctx.scratch_dir() + "/teacher");
  if (!teacher_dir.ok()) return teacher_dir.status();
  // Built in float32 (the student's master weights come from it); the teacher then runs in bf16
  // on a GPU.
  auto teacher = LoadModel(*teacher_dir, at::kFloat, ctx.device());
  if (!teacher.ok()) return teacher.status();
  const uint64_t seed = spec.seed();
  auto build_student = [&]() -> absl::StatusOr<LlamaModel> {
    if (!original_teacher) return BuildStudent(spec.student(), *teacher, seed);
    auto source_dir =
        ctx.store().LocalDirectory(lease.inputs().at("model"), ctx.scratch_dir() + "/student");
    if (!source_dir.ok()) return source_dir.status();
    auto source = LoadModel(*source_dir, at::kFloat, ctx.device());
    if (!source.ok()) return source.status();
    return BuildStudent(spec.student(), *source, seed);
  };
  auto student = build_student();
  if (!student.ok()) return student.status();
  if (ctx.device().is_cuda()) *teacher = teacher->To(ctx.device(), at::kBFloat16);
  SQ_ASSIGN_OR_RETURN(const DistillOptions options, DistillOptionsOf(spec));
  if (auto s = ValidateDistillOptions(options, teacher->config(), student->config()); !s.ok())
    return s;

  SQ_ASSIGN_OR_RETURN(const DistillData data,
                      LoadDistillData(ctx, *teacher_dir, teacher->config()));
  const std::vector<TextExample>& train = data.train;
  const std::vector<TextExample>& eval = data.eval;
  TrainerOptions to = TrainerOptionsOf(spec, !eval.empty(), ctx.device());
  SQ_ASSIGN_OR_RETURN(const int64_t resumed_from, PlaceTrainCheckpoint(ctx, to));

  auto gang = JoinGang(ctx);
  if (!gang.ok()) return gang.status();
  std::unique_ptr<DataParallel> parallel = *std::move(gang);

  // Fixed zeros: those the student starts with (keep_sparsity) and those the prune schedule
  // adds. Built at the first step, after a resumed checkpoint was loaded, whose zeros they keep.
  const bool scheduled = spec.has_prune();
  const v1::PruneSchedule& prune = spec.prune();
  const bool sparse = spec.keep_sparsity() || scheduled;
  std::optional<SparsityMasks> masks;
  PruneChoice choice;
  if (scheduled) {
    SQ_ASSIGN_OR_RETURN(choice, PruneChoiceOf(prune.target()));
  }
  const PruneSchedule schedule{prune.rounds(), prune.recover_steps(), prune.target().sparsity()};
  DistillationObjective objective(&*teacher, options, student->config(), ctx.device());
  const int64_t top_k = spec.teacher_logits_top_k();
  std::string teacher_logits = "live";
  std::optional<TeacherLogitsCache> cached;
  if (top_k > 0) {
    TeacherLogitsPlan plan;
    plan.steps = to.steps;
    plan.grad_accum = to.grad_accum;
    plan.batch_size = to.batch_size;
    plan.seq_len = to.seq_len;
    plan.world_size = lease.world_size();
    plan.rank = lease.rank();
    plan.seed = to.seed;
    plan.top_k = top_k;
    auto model_digest = ModelDigest(*teacher_dir);
    if (!model_digest.ok()) return model_digest.status();
    auto data_digest = Sha256File(data.train_path);
    if (!data_digest.ok()) return data_digest.status();
    const std::string cache_uri =
        absl::StrCat(ctx.data().store_root(), "/teacher-logits/",
                     TeacherLogitsCache::Key(*model_digest, *data_digest, plan));
    const std::string local = ctx.scratch_dir() + "/teacher-topk.safetensors";
    if (auto exists = ctx.store().Exists(cache_uri); exists.ok() && *exists) {
      if (auto s = ctx.store().FetchFile(cache_uri, "topk.safetensors", local); !s.ok()) return s;
      SQ_ASSIGN_OR_RETURN(cached, TeacherLogitsCache::Read(local, plan));
      teacher_logits = "cached, reused";
    } else {
      ctx.Log(absl::StrCat("computing the teacher's top-", top_k, " logits for ", to.steps,
                           " steps (cached for later runs)"));
      SQ_ASSIGN_OR_RETURN(
          cached, TeacherLogitsCache::Compute(
                      *teacher, WindowSampler(train, to.seq_len, to.seed), plan, [&](int64_t step) {
                        ctx.SetProgress(step, to.steps, v1::PROGRESS_UNIT_STEPS, "teacher logits");
                        return ctx.CheckStep();
                      }));
      const fs::path dir = fs::path(ctx.scratch_dir()) / "teacher-topk";
      RemoveTree(dir).IgnoreError();
      fs::create_directories(dir);
      SQ_RETURN_IF_ERROR(cached->Write((dir / "topk.safetensors").string()));
      ArtifactProvenance provenance = ctx.provenance();
      provenance.stage = "distill-teacher-logits";
      SQ_RETURN_IF_ERROR(ctx.store().PutDirectory(dir.string(), cache_uri, provenance));
      teacher_logits = "cached, computed";
    }
    objective.UseCachedTeacher([&](int64_t step, int64_t micro) -> absl::StatusOr<TopKLogits> {
      return cached->At(step, micro);
    });
  }
  PerplexityOptions eval_options = FitToModel({}, student->config());
  eval_options.max_examples = spec.eval_examples();

  v1::DistillResult result;
  const auto start = std::chrono::steady_clock::now();
  int64_t tokens_seen = 0;
  absl::Status stop_reason;
  TrainerCallbacks callbacks = CommonCallbacks(
      ctx, to, spec.log_every(), resumed_from, *student, eval, eval_options,
      [&objective] { return objective.last_parts(); }, result, stop_reason, tokens_seen);
  google::protobuf::RepeatedPtrField<v1::PruneRoundResult> prune_rounds;
  auto eval_perplexity = [&]() -> double {
    if (eval.empty()) return std::nan("");
    c10::NoGradGuard no_grad;
    auto ppl = EvaluatePerplexity(*student, eval, eval_options);
    return ppl.ok() ? ppl->total.perplexity() : std::nan("");
  };
  callbacks.before_step = [&](int64_t step) -> absl::Status {
    if (!sparse) return absl::OkStatus();
    if (!masks) {
      masks = SparsityMasks::FromZeros(*student);
      if (masks->size() > 0)
        ctx.Log(absl::StrCat("keeping the zeros of ", masks->size(), " sparse weight matrices"));
    }
    if (!scheduled) return absl::OkStatus();
    const std::optional<PruneRound> due = schedule.RoundAt(step);
    if (!due) return absl::OkStatus();
    const int64_t round = due->round, rounds = schedule.rounds;
    const double target = due->sparsity;
    // The same calibration windows on every rank, so every rank prunes the same weights.
    const WindowSampler sampler(train, to.seq_len, to.seed ^ 0x7072756e65ull);
    std::vector<at::Tensor> batches;
    for (int64_t i = 0; i < prune.calibration_batches(); ++i)
      batches.push_back(sampler.Batch(round, i, to.batch_size / to.grad_accum));
    const double before = eval_perplexity();
    if (!prune_rounds.empty()) prune_rounds.rbegin()->set_perplexity_after_recovery(before);
    if (auto s = masks->Prune(*student, choice.method, choice.pattern, target, batches); !s.ok())
      return s;
    const double after = eval_perplexity();
    const double sparsity = LinearSparsity(*student);
    v1::PruneRoundResult& r = *prune_rounds.Add();
    r.set_round(round + 1);
    r.set_step(step);
    r.set_sparsity(sparsity);
    r.set_perplexity_before_pruning(before);
    r.set_perplexity_after_pruning(after);
    ctx.Log(absl::StrCat("prune round ", round + 1, "/", rounds, " at step ", step, ": ",
                         choice.method_name, " to ", sparsity, " sparsity; evaluation perplexity ",
                         before, " -> ", after));
    ctx.SetMetric("sparsity", sparsity);
    return absl::OkStatus();
  };
  callbacks.after_update = [&] {
    if (masks) masks->Apply();
  };
  Trainer trainer(&*student, to, parallel.get());
  if (auto s = trainer.Run(WindowSampler(train, to.seq_len, to.seed), objective, callbacks);
      !s.ok()) {
    return stop_reason.ok() ? s : stop_reason;
  }

  TaskOutput out;
  FillStudentResult(*student, teacher_uri, eval, eval_options, result);
  result.set_student_parameters(student->NumParameters());
  result.set_teacher_parameters(teacher->NumParameters());
  result.set_temperature(options.temperature);
  result.set_alpha(options.alpha);
  result.set_teacher_logits(teacher_logits);
  if (scheduled) {
    if (!prune_rounds.empty() && result.has_eval_perplexity())
      prune_rounds.rbegin()->set_perplexity_after_recovery(result.eval_perplexity());
    v1::ScheduledPruneResult& p = *result.mutable_prune();
    p.set_method(choice.method_name);
    p.set_pattern(choice.pattern_name);
    p.set_target_sparsity(prune.target().sparsity());
    p.set_sparsity(LinearSparsity(*student));
    *p.mutable_rounds() = std::move(prune_rounds);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  FillRunResult(ctx, trainer, resumed_from, seconds, tokens_seen, result);
  *out.result.mutable_distill() = std::move(result);
  if (lease.rank() != 0) return out;  // rank 0 writes the model and reports

  const fs::path out_dir = fs::path(ctx.scratch_dir()) / "student-out";
  RemoveTree(out_dir).IgnoreError();
  if (auto s = SaveModelLike(*student, *teacher_dir, out_dir.string()); !s.ok()) return s;
  if (auto s = CommitOutputDirectory(ctx, out_dir.string(), out); !s.ok()) return s;
  return out;
}

}  // namespace squeeze::worker
