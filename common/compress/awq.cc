#include "common/compress/awq.h"

#include <c10/core/GradMode.h>

#include <functional>
#include <limits>

#include "absl/strings/str_cat.h"

namespace squeeze {
namespace {

double MeanSquaredError(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).pow(2).mean().item<double>();
}

absl::Status CheckShapes(const at::Tensor& x, const std::vector<at::Tensor>& weights,
                         const QuantSpec& spec) {
  if (x.dim() != 2) return absl::InvalidArgumentError("awq: x must be [tokens, in]");
  if (weights.empty()) return absl::InvalidArgumentError("awq: no weights");
  for (const at::Tensor& w : weights) {
    if (w.dim() != 2 || w.size(1) != x.size(1)) {
      return absl::InvalidArgumentError(
          absl::StrCat("awq: a weight of ", w.size(1), " inputs for an input of ", x.size(1)));
    }
  }
  return ValidateQuantSpec(spec, x.size(1));
}

}  // namespace

at::Tensor FakeQuantize(const at::Tensor& weight, const QuantSpec& spec) {
  auto q = QuantizeRtn(weight, spec);
  return q.ok() ? q->Dequantize().to(weight.device()) : weight.to(at::kFloat);
}

absl::StatusOr<AwqScales> SearchAwqScales(const at::Tensor& x_in,
                                          const std::vector<at::Tensor>& weights_in,
                                          const AwqOptions& o, const AwqBlock& block_in) {
  c10::NoGradGuard no_grad;
  if (auto s = CheckShapes(x_in, weights_in, o.quant); !s.ok()) return s;
  if (o.grid < 1) return absl::InvalidArgumentError("awq: grid must be at least 1");
  const at::Tensor x = x_in.to(at::kFloat);
  std::vector<at::Tensor> weights;
  int64_t outputs = 0;
  for (const at::Tensor& w : weights_in) {
    weights.push_back(w.to(x.device(), at::kFloat));
    outputs += w.size(0);
  }
  // The candidates' mean squared output error. With the linears' own outputs as the block it is
  // sum_i tr(dW_i H dW_i^T) / (tokens x outputs) with H = x^T x, formed once: each alpha then
  // costs out x in^2 instead of tokens x in x out (down_proj at 8B: 4.6x fewer), and dW is exact
  // in float32 where the difference of two rounded outputs is not.
  std::function<double(const std::vector<at::Tensor>&)> error_of;
  if (block_in) {
    const at::Tensor reference = block_in(weights);
    error_of = [&, reference](const std::vector<at::Tensor>& candidate) {
      return MeanSquaredError(block_in(candidate), reference);
    };
  } else {
    const at::Tensor gram = at::matmul(x.t(), x);  // [in, in]
    const double count = static_cast<double>(x.size(0)) * static_cast<double>(outputs);
    error_of = [&, gram, count](const std::vector<at::Tensor>& candidate) {
      at::Tensor total = at::zeros({}, gram.options());
      for (size_t i = 0; i < candidate.size(); ++i) {
        const at::Tensor d = candidate[i] - weights[i];
        total += (at::matmul(d, gram) * d).sum();
      }
      return total.item<double>() / count;
    };
  }
  const at::Tensor x_mean = x.abs().mean(0);  // [in]
  AwqScales best;
  best.error = std::numeric_limits<double>::infinity();
  for (int step = 0; step < o.grid; ++step) {
    const double alpha = static_cast<double>(step) / o.grid;
    at::Tensor s = x_mean.pow(alpha).clamp_min(1e-4);
    s = s / (s.max() * s.min()).sqrt();
    // The layer computes x/s against W*s: quantize W*s, undo the scale, compare outputs.
    std::vector<at::Tensor> candidate;
    for (const at::Tensor& w : weights) candidate.push_back(FakeQuantize(w * s, o.quant) / s);
    const double error = error_of(candidate);
    if (step == 0) best.error_unscaled = error;
    if (error < best.error) {
      best.error = error;
      best.alpha = alpha;
      best.scales = s;
    }
  }
  return best;
}

absl::StatusOr<at::Tensor> SearchAwqClip(const at::Tensor& x_in, const at::Tensor& weight,
                                         const AwqOptions& o) {
  c10::NoGradGuard no_grad;
  if (auto s = CheckShapes(x_in, {weight}, o.quant); !s.ok()) return s;
  const int64_t out = weight.size(0), in = weight.size(1);
  const int64_t group = o.quant.group_size == -1 ? in : o.quant.group_size;
  const int64_t groups = in / group;
  const int64_t tokens = x_in.size(0);
  // A group's share of an output row's error over every token is d H_k d^T, with d the group's
  // weight change and H_k = x_k^T x_k its inputs' Gram matrix: [groups, g, g], formed once. Each
  // candidate then costs out x in x g, with no [rows, tokens, groups] partial outputs.
  const at::Tensor x = x_in.to(at::kFloat).view({tokens, groups, group}).transpose(0, 1);
  const at::Tensor gram = at::bmm(x.transpose(1, 2), x) / static_cast<double>(tokens);
  const at::Tensor w_all = weight.to(x.device(), at::kFloat).view({out, groups, group});
  const int64_t row_step = std::max<int64_t>(1, o.clip_rows);
  std::vector<at::Tensor> best_parts;
  for (int64_t r = 0; r < out; r += row_step) {
    const at::Tensor w = w_all.slice(0, r, std::min(out, r + row_step));  // [rows, groups, g]
    const int64_t rows = w.size(0);
    const at::Tensor original_max = w.abs().amax(-1);  // [rows, groups]
    at::Tensor best_max = original_max.clone();
    at::Tensor best_error =
        at::full({rows, groups}, std::numeric_limits<float>::infinity(), original_max.options());
    const int steps = static_cast<int>(o.max_shrink * o.clip_grid);
    for (int i = 0; i <= steps; ++i) {
      const at::Tensor max_abs = original_max * (1.0 - static_cast<double>(i) / o.clip_grid);
      const at::Tensor clipped = at::clamp(w, -max_abs.unsqueeze(-1), max_abs.unsqueeze(-1));
      const at::Tensor q = FakeQuantize(clipped.reshape({rows, in}), o.quant).view(w.sizes());
      const at::Tensor d = (q - w).transpose(0, 1);                             // [groups, rows, g]
      const at::Tensor error = (at::bmm(d, gram) * d).sum(-1).transpose(0, 1);  // [rows, groups]
      const at::Tensor better = error < best_error;
      best_error = at::where(better, error, best_error);
      best_max = at::where(better, max_abs, best_max);
    }
    best_parts.push_back(best_max);
  }
  return at::cat(best_parts, 0);
}

at::Tensor ClipWeight(const at::Tensor& weight, const at::Tensor& max_abs, int64_t group_size) {
  const int64_t out = weight.size(0), in = weight.size(1);
  const int64_t group = group_size == -1 ? in : group_size;
  const at::Tensor m = max_abs.to(weight.device(), weight.scalar_type()).unsqueeze(-1);
  return at::clamp(weight.view({out, in / group, group}), -m, m).reshape({out, in});
}

}  // namespace squeeze
