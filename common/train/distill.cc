#include "common/train/distill.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "common/tensor/safetensors.h"
#include "common/tensor/torch_tensor.h"
#ifdef SQUEEZE_HAS_CUDA_KERNELS
#include "common/train/distill_loss_cuda.h"
#endif

namespace squeeze {
namespace {

// Rows per chunk of the fused loss: about 64 Mi float32 elements per temporary.
int64_t LossChunkRows(int64_t vocab) { return std::max<int64_t>(1, (int64_t{1} << 26) / vocab); }

class FusedDistillLossFunction : public torch::autograd::Function<FusedDistillLossFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& student_logits,
                                                const at::Tensor& teacher_logits,
                                                const at::Tensor& labels, double temperature,
                                                double alpha, int64_t chunk_rows) {
    const int64_t vocab = student_logits.size(-1);
    const at::Tensor s = student_logits.reshape({-1, vocab});
    const at::Tensor y = labels.reshape({-1, 1}).to(s.device(), at::kLong);
    const int64_t n = s.size(0);
    const bool soft = alpha > 0;
    const at::Tensor t = soft ? teacher_logits.reshape({-1, vocab}) : at::Tensor();
    const auto f32 = s.options().dtype(at::kFloat);
    at::Tensor grad;
    at::Tensor ce_rows = at::empty({n}, f32), kd_rows = at::zeros({n}, f32);
    bool done = false;
#ifdef SQUEEZE_HAS_CUDA_KERNELS
    if (s.is_cuda()) {  // one kernel; no float32 temporaries
      const at::Tensor sc = s.contiguous();
      const at::Tensor tc = soft ? t.to(sc.scalar_type()).contiguous() : at::Tensor();
      grad = at::empty_like(sc);
      DistillLossRowsCuda(sc, tc, y.reshape({-1}).contiguous(), temperature, alpha,
                          1.0 / static_cast<double>(n), grad, ce_rows, kd_rows);
      done = true;
    }
#endif
    if (!done) {
      grad = at::empty_like(s);
      const int64_t chunk = chunk_rows > 0 ? chunk_rows : LossChunkRows(vocab);
      for (int64_t a = 0; a < n; a += chunk) {
        const int64_t b = std::min(n, a + chunk);
        const at::Tensor sf = s.slice(0, a, b).to(at::kFloat);
        const at::Tensor yc = y.slice(0, a, b);
        const at::Tensor lse = at::logsumexp(sf, -1, /*keepdim=*/true);
        ce_rows.slice(0, a, b).copy_((lse - sf.gather(1, yc)).squeeze(-1));
        at::Tensor g = (sf - lse).exp_().mul_(1.0 - alpha);  // (1 - alpha) * softmax(s)
        g.scatter_add_(1, yc, at::full({b - a, 1}, alpha - 1.0, f32));
        if (soft) {
          at::Tensor log_q = sf / temperature;  // student log-probabilities at temperature T
          log_q.sub_(at::logsumexp(log_q, -1, /*keepdim=*/true));
          at::Tensor log_p = t.slice(0, a, b).to(at::kFloat) / temperature;
          log_p.sub_(at::logsumexp(log_p, -1, /*keepdim=*/true));
          const at::Tensor p = log_p.exp();
          kd_rows.slice(0, a, b).copy_(
              (p * (log_p - log_q)).sum(-1).mul_(temperature * temperature));
          g.add_(log_q.exp_().sub_(p), alpha * temperature);
        }
        grad.slice(0, a, b).copy_(g.div_(static_cast<double>(n)));
      }
    }
    const at::Tensor ce = ce_rows.mean(), kd = kd_rows.mean();
    const at::Tensor loss = ce * (1.0 - alpha) + kd * alpha;
    ctx->save_for_backward({grad});
    ctx->saved_data["shape"] = student_logits.sizes().vec();
    ctx->mark_non_differentiable({ce, kd});
    return {loss, ce, kd};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor grad = ctx->get_saved_variables()[0];
    const auto shape = ctx->saved_data["shape"].toIntVector();
    at::Tensor out = grad.mul(grad_outputs[0].to(grad.scalar_type())).view(shape);
    return {out, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

DistillLossParts FusedDistillLoss(const at::Tensor& student_logits,
                                  const at::Tensor& teacher_logits, const at::Tensor& labels,
                                  double temperature, double alpha, int64_t chunk_rows) {
  // Autograd functions take defined tensors only.
  const at::Tensor teacher =
      teacher_logits.defined() ? teacher_logits : at::empty({0}, student_logits.options());
  auto out = FusedDistillLossFunction::apply(student_logits, teacher, labels, temperature, alpha,
                                             chunk_rows);
  return {out[0], out[1], out[2]};
}

absl::Status ValidateDistillOptions(const DistillOptions& o, const LlamaConfig& teacher,
                                    const LlamaConfig& student) {
  if (!(o.temperature > 0))
    return absl::InvalidArgumentError(
        absl::StrCat("temperature: must be positive, got ", o.temperature));
  if (!(o.alpha >= 0 && o.alpha <= 1))
    return absl::InvalidArgumentError(absl::StrCat("alpha: must be in [0, 1], got ", o.alpha));
  if (teacher.vocab_size != student.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "student: vocabulary of ", student.vocab_size, " tokens differs from the teacher's ",
        teacher.vocab_size, " (distillation compares distributions over the same tokens)"));
  }
  if (o.hidden_loss == DistillOptions::HiddenLoss::kNone) return absl::OkStatus();
  if (o.hidden_layers.empty())
    return absl::InvalidArgumentError("hidden_loss.layers: at least one pair is needed");
  for (const auto& [s, t] : o.hidden_layers) {
    if (s < 0 || s >= student.num_hidden_layers)
      return absl::InvalidArgumentError(absl::StrCat("hidden_loss.layers: student layer ", s,
                                                     " is outside 0..",
                                                     student.num_hidden_layers - 1));
    if (t < 0 || t >= teacher.num_hidden_layers)
      return absl::InvalidArgumentError(absl::StrCat("hidden_loss.layers: teacher layer ", t,
                                                     " is outside 0..",
                                                     teacher.num_hidden_layers - 1));
  }
  if (student.hidden_size != teacher.hidden_size && !o.projection) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hidden_loss.projection: the student is ", student.hidden_size, " wide and the teacher ",
        teacher.hidden_size, "; set projection: true to compare their hidden states"));
  }
  return absl::OkStatus();
}

std::vector<int64_t> EveryKthLayer(int64_t num_layers, int64_t k) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < num_layers; i += std::max<int64_t>(1, k)) out.push_back(i);
  return out;
}

absl::StatusOr<LlamaModel> StudentFromTeacherLayers(const LlamaModel& teacher,
                                                    const std::vector<int64_t>& layers) {
  if (layers.empty()) return absl::InvalidArgumentError("student.layers: at least one layer");
  const LlamaConfig config = KeepLayers(teacher.config(), layers);
  for (int64_t l : layers) {
    if (l < 0 || l >= teacher.num_layers()) {
      return absl::InvalidArgumentError(absl::StrCat("student.layers: teacher layer ", l,
                                                     " is outside 0..", teacher.num_layers() - 1));
    }
  }
  return teacher.Derive(config, [&](int64_t j, const std::string& name) {
    auto t = teacher.LayerTensor(layers[j], name);
    return t.ok() ? absl::StatusOr<at::Tensor>(t->clone()) : t;
  });
}

at::Tensor SoftTargetLoss(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                          double temperature) {
  const int64_t vocab = student_logits.size(-1);
  const at::Tensor s = student_logits.reshape({-1, vocab}).to(at::kFloat) / temperature;
  const at::Tensor t = teacher_logits.reshape({-1, vocab}).to(at::kFloat) / temperature;
  const at::Tensor log_p_t = at::log_softmax(t, -1);
  const at::Tensor kl = (log_p_t.exp() * (log_p_t - at::log_softmax(s, -1))).sum(-1).mean();
  return kl * (temperature * temperature);
}

at::Tensor SoftTargetLossTopK(const at::Tensor& student_logits, const TopKLogits& teacher,
                              double temperature) {
  const int64_t vocab = student_logits.size(-1), k = teacher.values.size(-1);
  const at::Tensor s = student_logits.reshape({-1, vocab}).to(at::kFloat) / temperature;
  const at::Tensor idx = teacher.indices.reshape({-1, k}).to(s.device(), at::kLong);
  const at::Tensor t = teacher.values.reshape({-1, k}).to(s.device(), at::kFloat) / temperature;
  const at::Tensor log_p_t = at::log_softmax(t, -1);
  const at::Tensor log_p_s = at::log_softmax(s, -1).gather(-1, idx);
  const at::Tensor kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean();
  return kl * (temperature * temperature);
}

TopKLogits TeacherTopK(const LlamaModel& teacher, const at::Tensor& ids, int64_t k) {
  c10::NoGradGuard no_grad;
  const at::Tensor inputs = ids.slice(1, 0, ids.size(1) - 1).to(teacher.device());
  const auto [values, indices] = teacher.Forward(inputs).to(at::kFloat).topk(k, -1);
  return {values.to(at::kCPU, at::kBFloat16), indices.to(at::kCPU, at::kInt)};
}

DistillationObjective::DistillationObjective(const LlamaModel* teacher, DistillOptions options,
                                             const LlamaConfig& student, at::Device device)
    : teacher_(teacher), options_(std::move(options)) {
  if (options_.hidden_loss == DistillOptions::HiddenLoss::kNone || !options_.projection) return;
  const int64_t th = teacher->config().hidden_size, sh = student.hidden_size;
  for (size_t i = 0; i < options_.hidden_layers.size(); ++i) {
    at::Tensor p = at::eye(th, sh, at::TensorOptions(device).dtype(at::kFloat));
    projections_.push_back(p.set_requires_grad(true));
  }
}

at::Tensor DistillationObjective::Loss(const LlamaModel& student, const at::Tensor& ids) {
  const int64_t n = ids.size(1);
  const at::Tensor inputs = ids.slice(1, 0, n - 1);
  const at::Tensor labels = ids.slice(1, 1).reshape({-1});
  const bool hidden = options_.hidden_loss != DistillOptions::HiddenLoss::kNone;
  std::vector<at::Tensor> student_hidden, teacher_hidden;
  at::Tensor logits = student.Forward(inputs, hidden ? &student_hidden : nullptr);
  if (cached_ && !hidden) {
    const at::Tensor ce =
        at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat), labels);
    last_ce_ = ce.detach();
    last_hidden_ = at::Tensor();
    auto topk = cached_(step_, micro_);
    if (!topk.ok()) throw std::runtime_error(std::string(topk.status().message()));
    const at::Tensor kd = SoftTargetLossTopK(logits, *topk, options_.temperature);
    last_kd_ = kd.detach();
    return ce * (1.0 - options_.alpha) + kd * options_.alpha;
  }
  // With alpha = 0 and no hidden-state loss the teacher's outputs are not used: skip it.
  at::Tensor teacher_logits;
  if (options_.alpha > 0 || hidden) {
    c10::NoGradGuard no_grad;
    teacher_logits =
        teacher_->Forward(inputs.to(teacher_->device()), hidden ? &teacher_hidden : nullptr)
            .to(logits.device());
  }
  const DistillLossParts parts =
      FusedDistillLoss(logits, teacher_logits, labels, options_.temperature, options_.alpha);
  at::Tensor loss = parts.loss;
  last_ce_ = parts.ce;
  last_kd_ = options_.alpha > 0 ? parts.kd : at::Tensor();
  last_hidden_ = at::Tensor();
  if (hidden) {
    at::Tensor total = at::zeros({}, loss.options());
    for (size_t i = 0; i < options_.hidden_layers.size(); ++i) {
      const auto [si, ti] = options_.hidden_layers[i];
      at::Tensor s = student_hidden[si].to(at::kFloat);
      const at::Tensor t = teacher_hidden[ti].to(s.device(), at::kFloat);
      if (!projections_.empty()) s = at::matmul(s, projections_[i].t());
      if (options_.hidden_loss == DistillOptions::HiddenLoss::kMse) {
        // Normalised by the teacher's mean square, so the weight does not depend on scale.
        total = total + (s - t).pow(2).mean() / (t.pow(2).mean() + 1e-6);
      } else {
        total = total + (1.0 - at::cosine_similarity(s, t, -1, 1e-6)).mean();
      }
    }
    total = total / static_cast<double>(options_.hidden_layers.size());
    last_hidden_ = total.detach();
    loss = loss + total * options_.hidden_weight;
  }
  return loss;
}

DistillationObjective::Parts DistillationObjective::last_parts() const {
  auto value = [](const at::Tensor& t) { return t.defined() ? t.item<double>() : 0.0; };
  return {value(last_kd_), value(last_ce_), value(last_hidden_)};
}

absl::Status DistillationObjective::SaveState(const std::string& dir) const {
  if (projections_.empty()) return absl::OkStatus();
  SafetensorsWriter writer;
  for (size_t i = 0; i < projections_.size(); ++i) {
    const at::Tensor p = projections_[i].detach().to(at::kCPU).contiguous();
    if (auto s = writer.Add(absl::StrCat("projection.", i), DType::kF32, p.sizes().vec(),
                            p.data_ptr(), p.numel() * sizeof(float));
        !s.ok())
      return s;
  }
  return writer.WriteFile((std::filesystem::path(dir) / "projections.safetensors").string());
}

absl::Status DistillationObjective::LoadState(const std::string& dir) {
  if (projections_.empty()) return absl::OkStatus();
  auto file =
      SafetensorsFile::Open((std::filesystem::path(dir) / "projections.safetensors").string());
  if (!file.ok()) return file.status();
  c10::NoGradGuard no_grad;
  for (size_t i = 0; i < projections_.size(); ++i) {
    auto view = (*file)->Get(absl::StrCat("projection.", i));
    if (!view.ok()) return view.status();
    auto t = ToTorch(*view);
    if (!t.ok()) return t.status();
    if (t->sizes() != projections_[i].sizes())
      return absl::DataLossError(absl::StrCat(dir, ": projection.", i, " has the wrong shape"));
    projections_[i].copy_(*t);
  }
  return absl::OkStatus();
}

}  // namespace squeeze
