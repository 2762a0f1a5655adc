#include "common/train/trainer.h"

#include <torch/optim/adamw.h>
#include <torch/serialize.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/base/file_util.h"
#include "common/model/torch_compat.h"
#include "common/tensor/safetensors.h"
#include "common/tensor/torch_tensor.h"
#include "common/train/data_parallel.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

constexpr char kCheckpointName[] = "checkpoint";
constexpr char kAdaptersFile[] = "adapters.safetensors";

// Scales all gradients so their global L2 norm is at most `max_norm`; returns the norm before,
// as a device scalar. Nothing is read back to the host, so the device never waits for the host
// between the backward pass and the optimizer step. On libtorch 2.x the norms and the scaling are
// multi-tensor kernels (a handful of launches instead of two per parameter).
at::Tensor ClipGradNorm(const std::vector<at::Tensor>& params, double max_norm) {
  c10::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) grads.push_back(p.grad());
  }
  if (grads.empty()) return at::Tensor();
#if TORCH_VERSION_MAJOR >= 2
  const at::Tensor total = at::stack(at::_foreach_norm(grads, 2, at::kFloat)).norm(2);
  const at::Tensor scale = (max_norm / (total + 1e-6)).clamp_max(1.0);
  at::_foreach_mul_(grads, scale);
#else
  std::vector<at::Tensor> norms;
  for (const at::Tensor& g : grads) norms.push_back(g.norm(2).to(at::kFloat));
  const at::Tensor total = at::stack(norms).norm(2);
  const at::Tensor scale = (max_norm / (total + 1e-6)).clamp_max(1.0);
  for (at::Tensor& g : grads) g.mul_(scale.to(g.scalar_type()));
#endif
  return total;
}

// AdamW as one fused multi-tensor kernel per parameter group (libtorch 2.x, CUDA): a single pass
// over parameters, gradients and both moments instead of about eight. The moments live in the
// torch::optim::AdamW state, so checkpoints are the same files either way; the fused kernel keeps
// its step counts on the device (advanced here before each update), mirrored into that state for
// checkpoints.
class FusedAdamW {
 public:
  static bool Supported(const at::Device& device) {
    return TORCH_VERSION_MAJOR >= 2 && device.is_cuda();
  }

  void Step(torch::optim::AdamW& adamw) {
#if TORCH_VERSION_MAJOR >= 2
    c10::NoGradGuard no_grad;
    auto& states = adamw.state();
    for (auto& group : adamw.param_groups()) {
      const auto& o = static_cast<const torch::optim::AdamWOptions&>(group.options());
      std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
      for (const at::Tensor& p : group.params()) {
        if (!p.grad().defined()) continue;
        void* key = p.unsafeGetTensorImpl();
        auto it = states.find(key);
        if (it == states.end()) {
          auto state = std::make_unique<torch::optim::AdamWParamState>();
          state->step(0);
          state->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
          state->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
          it = states.insert({key, std::move(state)}).first;
        }
        auto& state = static_cast<torch::optim::AdamWParamState&>(*it->second);
        // A loaded checkpoint's moments come back on the host.
        if (state.exp_avg().device() != p.device() || state.exp_avg().dtype() != p.dtype()) {
          state.exp_avg(state.exp_avg().to(p.device(), p.scalar_type()));
          state.exp_avg_sq(state.exp_avg_sq().to(p.device(), p.scalar_type()));
        }
        at::Tensor& step = device_steps_[key];
        if (!step.defined()) {
          step = at::full({}, static_cast<double>(state.step()),
                          at::TensorOptions(p.device()).dtype(at::kFloat));
        }
        state.step(state.step() + 1);
        params.push_back(p);
        grads.push_back(p.grad());
        exp_avgs.push_back(state.exp_avg());
        exp_avg_sqs.push_back(state.exp_avg_sq());
        steps.push_back(step);
      }
      if (params.empty()) continue;
      // The kernel reads the step counts (for bias correction) but does not advance them.
      at::_foreach_add_(steps, 1.0);
      at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, steps, o.lr(),
                        std::get<0>(o.betas()), std::get<1>(o.betas()), o.weight_decay(), o.eps(),
                        /*amsgrad=*/false, /*maximize=*/false);
    }
#else
    adamw.step();
#endif
  }

  // After the optimizer state was replaced (a checkpoint was loaded).
  void Reset() { device_steps_.clear(); }

 private:
  std::unordered_map<void*, at::Tensor> device_steps_;
};

}  // namespace

absl::Status ValidateTrainerOptions(const TrainerOptions& o) {
  auto bad = [](absl::string_view field, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
  };
  if (o.steps <= 0) return bad("steps", "must be positive");
  if (o.batch_size <= 0) return bad("batch_size", "must be positive");
  if (o.seq_len < 2) return bad("seq_len", "must be at least 2");
  if (o.grad_accum <= 0 || o.batch_size % o.grad_accum != 0) {
    return bad("grad_accum", "must be positive and divide batch_size");
  }
  if (!(o.lr > 0)) return bad("lr", "must be positive");
  if (o.min_lr_ratio < 0 || o.min_lr_ratio > 1) return bad("min_lr_ratio", "must be in [0, 1]");
  if (o.warmup_steps < 0) return bad("warmup_steps", "must not be negative");
  if (o.weight_decay < 0) return bad("weight_decay", "must not be negative");
  if (o.beta1 < 0 || o.beta1 >= 1 || o.beta2 < 0 || o.beta2 >= 1)
    return bad("betas", "must be in [0, 1)");
  if (o.early_stopping_patience < 0) return bad("early_stopping.patience", "must not be negative");
  return absl::OkStatus();
}

double LearningRateAt(const TrainerOptions& o, int64_t step) {
  if (step < o.warmup_steps) return o.lr * static_cast<double>(step + 1) / o.warmup_steps;
  const int64_t decay_steps = std::max<int64_t>(1, o.steps - o.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup_steps) / decay_steps);
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return o.lr * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * cosine);
}

WindowSampler::WindowSampler(const std::vector<TextExample>& examples, int64_t seq_len,
                             uint64_t seed)
    : seq_len_(seq_len), seed_(seed) {
  for (const TextExample& e : examples) stream_.insert(stream_.end(), e.ids.begin(), e.ids.end());
}

at::Tensor WindowSampler::Batch(int64_t step, int64_t micro, int64_t rows,
                                int64_t first_row) const {
  const int64_t span = seq_len_ + 1;
  const int64_t positions = std::max<int64_t>(1, num_tokens() - span + 1);
  at::Tensor out = at::zeros({rows, span}, at::kLong);
  auto a = out.accessor<int64_t, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    const uint64_t h =
        SplitMix64(seed_ ^ SplitMix64(step * 1000003ull + micro * 7919ull + first_row + r));
    const int64_t begin = static_cast<int64_t>(h % static_cast<uint64_t>(positions));
    for (int64_t t = 0; t < span; ++t) {
      a[r][t] = begin + t < num_tokens() ? stream_[begin + t] : 0;
    }
  }
  return out;
}

at::Tensor CrossEntropyObjective::Loss(const LlamaModel& model, const at::Tensor& ids) {
  const int64_t n = ids.size(1);
  at::Tensor logits = model.Forward(ids.slice(1, 0, n - 1));
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat),
                                ids.slice(1, 1).reshape({-1}));
}

struct Trainer::OptimizerState {
  std::unique_ptr<torch::optim::AdamW> adamw;
  std::vector<at::Tensor> params;
  std::optional<FusedAdamW> fused;  // set on CUDA with libtorch 2.x

  void Step() {
    if (fused) {
      fused->Step(*adamw);
    } else {
      adamw->step();
    }
  }
};

Trainer::Trainer(LlamaModel* model, TrainerOptions options, DataParallel* parallel)
    : model_(model),
      options_(std::move(options)),
      parallel_(parallel),
      optimizer_(std::make_unique<OptimizerState>()) {}

Trainer::~Trainer() = default;

std::optional<int64_t> Trainer::CheckpointStep(const std::string& dir) {
  std::ifstream in(fs::path(dir) / kCheckpointName / "trainer_state.json");
  if (!in) return std::nullopt;
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.contains("step") || !j["step"].is_number_integer())
    return std::nullopt;
  return j["step"].get<int64_t>();
}

absl::Status Trainer::SaveCheckpoint(const TrainingObjective& objective) {
  // Written beside the live checkpoint and swapped in by rename: a crash mid-write leaves the
  // previous checkpoint intact.
  const fs::path dir(options_.checkpoint_dir);
  const fs::path tmp = dir / (std::string(kCheckpointName) + ".tmp");
  const fs::path live = dir / kCheckpointName;
  const fs::path old = dir / (std::string(kCheckpointName) + ".old");
  std::error_code ec;
  RemoveTree(tmp).IgnoreError();
  fs::create_directories(tmp, ec);
  if (ec)
    return absl::UnavailableError(absl::StrCat("cannot create ", tmp.string(), ": ", ec.message()));
  if (model_->has_adapters()) {
    // The base is frozen: the trained adapters are the whole model state.
    SafetensorsWriter writer;
    for (auto& [name, t] : model_->TrainableParameters()) {
      if (auto s = AddTensor(writer, name, t->detach().to(at::kCPU).contiguous()); !s.ok())
        return s;
    }
    if (auto s = writer.WriteFile((tmp / kAdaptersFile).string()); !s.ok()) return s;
  } else if (auto s = model_->Save(tmp.string(), at::kFloat); !s.ok()) {
    return s;
  }
  if (auto s = objective.SaveState(tmp.string()); !s.ok()) return s;
  try {
    torch::save(*optimizer_->adamw, (tmp / "optimizer.pt").string());
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot save optimizer state: ", e.what()));
  }
  {
    std::ofstream out(tmp / "trainer_state.json");
    out << nlohmann::json{{"step", step_},
                          {"seed", options_.seed},
                          {"best_eval_loss", best_eval_},
                          {"evals_since_best", evals_since_best_}}
               .dump()
        << "\n";
    if (!out.good()) return absl::UnavailableError("cannot write trainer_state.json");
  }
  RemoveTree(old).IgnoreError();
  if (fs::exists(live)) fs::rename(live, old, ec);
  fs::rename(tmp, live, ec);
  if (ec)
    return absl::UnavailableError(
        absl::StrCat("cannot move checkpoint into ", live.string(), ": ", ec.message()));
  RemoveTree(old).IgnoreError();
  return absl::OkStatus();
}

absl::Status Trainer::LoadCheckpoint(TrainingObjective& objective) {
  const fs::path live = fs::path(options_.checkpoint_dir) / kCheckpointName;
  auto step = CheckpointStep(options_.checkpoint_dir);
  if (!step) return absl::NotFoundError(absl::StrCat(live.string(), ": no trainer_state.json"));
  if (model_->has_adapters()) {
    const std::string path = (live / kAdaptersFile).string();
    auto file = SafetensorsFile::Open(path);
    if (!file.ok()) return file.status();
    c10::NoGradGuard no_grad;
    for (auto& [name, t] : model_->TrainableParameters()) {
      auto view = (*file)->Get(name);
      if (!view.ok()) return view.status();
      auto loaded = ToTorch(*view);
      if (!loaded.ok()) return loaded.status();
      if (loaded->sizes() != t->sizes())
        return absl::DataLossError(absl::StrCat(path, ": tensor \"", name, "\" has another shape"));
      t->copy_(*loaded);
    }
  } else {
    auto weights = CheckpointReader::Open(live.string());
    if (!weights.ok()) return weights.status();
    if (auto s = model_->CopyWeightsFrom(**weights); !s.ok()) return s;
  }
  if (auto s = objective.LoadState(live.string()); !s.ok()) return s;
  try {
    torch::load(*optimizer_->adamw, (live / "optimizer.pt").string());
    if (optimizer_->fused) optimizer_->fused->Reset();
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(live.string(), "/optimizer.pt: ", e.what()));
  }
  step_ = *step;
  std::ifstream in(live / "trainer_state.json");
  const auto state = nlohmann::json::parse(in, nullptr, false);
  if (!state.is_discarded()) {
    best_eval_ = state.value("best_eval_loss", 0.0);
    evals_since_best_ = state.value("evals_since_best", int64_t{-1});
  }
  return absl::OkStatus();
}

absl::Status Trainer::Run(const WindowSampler& sampler, TrainingObjective& objective,
                          const TrainerCallbacks& callbacks) {
  if (auto s = ValidateTrainerOptions(options_); !s.ok()) return s;
  model_->SetTrainable(true);
  std::vector<at::Tensor> decay, no_decay;
  for (auto& [name, t] : model_->TrainableParameters())
    (t->dim() >= 2 ? decay : no_decay).push_back(*t);
  for (at::Tensor& t : objective.Parameters()) (t.dim() >= 2 ? decay : no_decay).push_back(t);
  auto defaults = torch::optim::AdamWOptions(options_.lr)
                      .betas({options_.beta1, options_.beta2})
                      .weight_decay(options_.weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(defaults));
  auto no_decay_options = std::make_unique<torch::optim::AdamWOptions>(defaults);
  no_decay_options->weight_decay(0.0);
  groups.emplace_back(no_decay, std::move(no_decay_options));
  optimizer_->adamw = std::make_unique<torch::optim::AdamW>(std::move(groups), defaults);
  optimizer_->params = decay;
  optimizer_->params.insert(optimizer_->params.end(), no_decay.begin(), no_decay.end());
  optimizer_->fused.reset();
  if (FusedAdamW::Supported(model_->device())) optimizer_->fused.emplace();

  step_ = 0;
  best_eval_ = 0.0;
  evals_since_best_ = -1;
  stopped_early_ = false;
  if (!options_.checkpoint_dir.empty() && CheckpointStep(options_.checkpoint_dir)) {
    if (auto s = LoadCheckpoint(objective); !s.ok()) return s;
  }
  const int world = parallel_ ? parallel_->world_size() : 1;
  const int rank = parallel_ ? parallel_->rank() : 0;
  const int64_t micro_rows = options_.batch_size / options_.grad_accum;
  if (micro_rows % world != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch_size: ", options_.batch_size, " sequences in ", options_.grad_accum,
                     " micro-batches cannot be split over ", world, " ranks"));
  }
  const int64_t rank_rows = micro_rows / world;
  if (parallel_) {
    // Every rank starts from rank 0's weights (and step), whatever each loaded.
    if (auto s = parallel_->Broadcast(optimizer_->params); !s.ok()) return s;
    step_ = static_cast<int64_t>(parallel_->AllReduceMax(static_cast<double>(step_)));
    parallel_->Attach(optimizer_->params);
  }
  const bool writes_checkpoints = !options_.checkpoint_dir.empty() && rank == 0;

  const at::Device device = model_->device();
  while (step_ < options_.steps) {
    bool stop = callbacks.should_stop && callbacks.should_stop();
    if (parallel_) stop = parallel_->AllReduceMax(stop ? 1.0 : 0.0) > 0;  // all ranks stop together
    if (stop) {
      model_->SetTrainable(false);
      return absl::CancelledError(absl::StrCat("training stopped after step ", step_));
    }
    if (callbacks.before_step) {
      if (auto s = callbacks.before_step(step_); !s.ok()) {
        model_->SetTrainable(false);
        return s;
      }
    }
    const auto start = std::chrono::steady_clock::now();
    const double lr = LearningRateAt(options_, step_);
    for (auto& group : optimizer_->adamw->param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    optimizer_->adamw->zero_grad();
    at::Tensor loss_total;  // a device scalar: read back once per step, after the update
    for (int64_t micro = 0; micro < options_.grad_accum; ++micro) {
      at::Tensor ids = sampler.Batch(step_, micro, rank_rows, rank * rank_rows).to(device);
      if (parallel_ && micro == options_.grad_accum - 1) parallel_->ArmForNextBackward();
      objective.BeginMicroBatch(step_, micro);
      // Random draws inside the step (adapter dropout) depend on (seed, step, micro, rank) only,
      // so a resumed run draws what the uninterrupted one did.
      at::manual_seed(
          SplitMix64(options_.seed ^ SplitMix64(step_ * 7919ull + micro * 31ull + rank)));
      at::Tensor loss;
      if (options_.autocast_bf16 && device.is_cuda()) {
        compat::CudaBf16Autocast autocast;
        loss = objective.Loss(*model_, ids) / static_cast<double>(options_.grad_accum);
      } else {
        loss = objective.Loss(*model_, ids) / static_cast<double>(options_.grad_accum);
      }
      loss.backward();
      loss_total = loss_total.defined() ? loss_total + loss.detach() : loss.detach();
    }
    if (parallel_) {
      if (auto s = parallel_->FinishGradients(); !s.ok()) return s;
    }
    at::Tensor grad_norm_total;
    if (options_.grad_clip > 0) {
      grad_norm_total = ClipGradNorm(optimizer_->params, options_.grad_clip);
    }
    optimizer_->Step();
    if (callbacks.after_update) callbacks.after_update();
    ++step_;
    double loss_sum = loss_total.item<double>();
    if (parallel_) loss_sum = parallel_->AllReduceMean(loss_sum);
    const double grad_norm = grad_norm_total.defined() ? grad_norm_total.item<double>() : 0.0;
    if (!std::isfinite(loss_sum)) {
      // The run stops here: the weights of this step are not checkpointed, and a resumed run
      // starts from the last checkpoint.
      return absl::InternalError(absl::StrCat("step ", step_, ": loss is not finite (", loss_sum,
                                              "); lower lr or check the data"));
    }

    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (callbacks.on_step) {
      callbacks.on_step({step_, loss_sum, lr, grad_norm,
                         options_.batch_size * options_.seq_len / std::max(seconds, 1e-9)});
    }
    bool plateau = false;
    if (options_.eval_every > 0 && step_ % options_.eval_every == 0 && callbacks.evaluate) {
      double eval_loss;
      {
        c10::NoGradGuard no_grad;
        eval_loss = callbacks.evaluate(step_);
      }
      if (parallel_) eval_loss = parallel_->AllReduceMean(eval_loss);
      if (callbacks.on_eval) callbacks.on_eval(step_, eval_loss);
      if (evals_since_best_ < 0 || eval_loss < best_eval_ - options_.early_stopping_min_delta) {
        best_eval_ = eval_loss;
        evals_since_best_ = 0;
      } else {
        ++evals_since_best_;
      }
      plateau = options_.early_stopping_patience > 0 &&
                evals_since_best_ >= options_.early_stopping_patience;
    }
    const bool last = step_ == options_.steps || plateau;
    if (writes_checkpoints &&
        (last || (options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0))) {
      if (auto s = SaveCheckpoint(objective); !s.ok()) return s;
      if (callbacks.on_checkpoint) {
        if (auto s = callbacks.on_checkpoint(step_); !s.ok()) return s;
      }
    }
    if (plateau) {
      stopped_early_ = true;
      break;
    }
  }
  model_->SetTrainable(false);
  return absl::OkStatus();
}

}  // namespace squeeze
