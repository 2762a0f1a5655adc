#include "common/compress/sequential_quantizer.h"

#include <c10/core/GradMode.h>

#include <chrono>
#include <map>
#include <optional>
#include <random>
#include <set>
#ifdef SQUEEZE_HAS_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "absl/strings/str_cat.h"

namespace squeeze {
namespace {

// The linear layers quantized together because they read the same inputs, in true sequential
// order.
const std::vector<std::vector<std::string>>& SequentialGroups() {
  static const std::vector<std::vector<std::string>> groups = {
      {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"},
      {"self_attn.o_proj"},
      {"mlp.gate_proj", "mlp.up_proj"},
      {"mlp.down_proj"}};
  return groups;
}

Linear& LinearByName(DecoderLayer& layer, const std::string& name) {
  for (auto& [n, linear] : layer.Linears()) {
    if (n == name) return *linear;
  }
  return layer.q_proj;  // unreachable: names come from SequentialGroups
}

}  // namespace

void PhaseClock::Charge(const std::string& phase) {
#ifdef SQUEEZE_HAS_CUDA
  if (sync_cuda_) c10::cuda::device_synchronize();
#endif
  const auto now = std::chrono::steady_clock::now();
  seconds_[phase] += std::chrono::duration<double>(now - last_).count();
  last_ = now;
}

int LinearBits(const SequentialOptions& o, int64_t layer, const std::string& name) {
  if (o.bits_by_module.empty()) return o.gptq.quant.bits;
  auto it = o.bits_by_module.find(absl::StrCat("model.layers.", layer, ".", name));
  return it == o.bits_by_module.end() ? o.gptq.quant.bits : it->second;
}

absl::StatusOr<std::vector<QuantizedLinear>> QuantizeDecoderLayer(
    const LlamaConfig& c, DecoderLayer& layer, at::Tensor& hidden, const RotaryTables& rope,
    int64_t index, const SequentialOptions& o) {
  c10::NoGradGuard no_grad;
  // SparseGPT runs on GPTQ's Hessians and factorization.
  const bool prune_only = o.method == SequentialOptions::Method::kSparseGpt;
  const bool gptq = o.method == SequentialOptions::Method::kGptq || prune_only;
  PhaseClock scratch_clock;
  PhaseClock& clock = o.clock ? *o.clock : scratch_clock;
  const int64_t n = gptq ? hidden.size(0) : 0, batch = o.batch_size;
  const at::Device device = layer.q_proj.weight.device();
  auto windows = [&](const at::Tensor& t, int64_t b) { return t.slice(0, b, b + batch); };

  std::vector<QuantizedLinear> out;
  RankCollectives* ranks = o.ranks;
  const int world = ranks ? ranks->world_size() : 1, me = ranks ? ranks->rank() : 0;
  // Quantizes the linears of `group` from the Hessian `h` (GPTQ) or alone (RTN).
  auto quantize_group = [&](const std::vector<std::string>& group,
                            const at::Tensor& h) -> absl::Status {
    // Which rank solves which linear: the largest first, each to the least loaded rank.
    std::vector<int> owner(group.size(), 0);
    if (world > 1) {
      std::vector<size_t> order(group.size());
      for (size_t j = 0; j < order.size(); ++j) order[j] = j;
      auto size = [&](size_t j) { return LinearByName(layer, group[j]).weight.numel(); };
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t a, size_t b) { return size(a) > size(b); });
      std::vector<int64_t> load(world, 0);
      for (size_t j : order) {
        owner[j] = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
        load[owner[j]] += size(j);
      }
    }
    std::optional<GptqSolver> solver;
    const bool solves_here = std::find(owner.begin(), owner.end(), me) != owner.end();
    if (gptq && solves_here) {
      auto prepared = GptqSolver::Prepare(h, o.gptq);
      if (!prepared.ok()) {
        return absl::Status(
            prepared.status().code(),
            absl::StrCat("model.layers.", index, ".", group[0], ": ", prepared.status().message()));
      }
      solver = *std::move(prepared);
    }
    for (size_t j = 0; j < group.size(); ++j) {
      const std::string& name = group[j];
      const auto start = std::chrono::steady_clock::now();
      Linear& linear = LinearByName(layer, name);
      QuantizedLinear q{name, {}, {index, name, 0.0, 0.0}};
      QuantSpec spec = o.gptq.quant;
      spec.bits = LinearBits(o, index, name);
      q.report.bits = spec.bits;
      auto failed = [&](const absl::Status& s) {
        return absl::Status(s.code(),
                            absl::StrCat("model.layers.", index, ".", name, ": ", s.message()));
      };
      at::Tensor pruned;  // prune-only: the pruned floating-point weight
      if (owner[j] == me) {
        SparsityRule rule = o.sparsity;
        // The zeros a pruned input holds stay zeros: GPTQ's fixed mask, or where SparseGPT
        // starts from.
        if (gptq && o.keep_zeros && !o.gptq.act_order && (prune_only || !rule.active())) {
          at::Tensor keep = linear.weight != 0;
          if (!keep.all().item<bool>()) rule.keep = keep;
        }
        if (gptq && rule.active()) {
          auto r = solver->SolveSparse(linear.weight, rule, !prune_only, spec.bits);
          if (!r.ok()) return failed(r.status());
          if (prune_only) {
            pruned = r->weight;
          } else {
            q.weight = std::move(r->quantized);
          }
          q.report.loss = r->loss;
        } else if (gptq) {
          auto r = solver->Solve(linear.weight, spec.bits);
          if (!r.ok()) return failed(r.status());
          q.weight = std::move(r->weight);
          q.report.loss = r->loss;
        } else {
          auto r = QuantizeRtn(linear.weight.to(at::kFloat), spec);
          if (!r.ok()) return r.status();
          q.weight = *std::move(r);
          if (!q.weight.g_idx.defined()) {
            const int64_t in = linear.weight.size(1);
            const int64_t group_size = o.gptq.quant.group_size == -1 ? in : o.gptq.quant.group_size;
            q.weight.g_idx = at::div(at::arange(in, linear.weight.options().dtype(at::kLong)),
                                     group_size, "floor")
                                 .to(at::kInt);
          }
        }
      }
      if (world > 1 && prune_only) {
        if (owner[j] != me)
          pruned = at::empty(linear.weight.sizes(), linear.weight.options().dtype(at::kFloat));
        at::Tensor loss = at::full({1}, q.report.loss, linear.weight.options().dtype(at::kDouble));
        pruned = pruned.contiguous();
        if (auto s = ranks->Broadcast({pruned, loss}, owner[j]); !s.ok()) return s;
        q.report.loss = loss.item<double>();
      } else if (world > 1) {
        // Every rank needs the result to run the layer on; the owner sends it.
        const int64_t rows = linear.weight.size(0), cols = linear.weight.size(1);
        const int64_t groups = o.gptq.quant.group_size == -1 ? 1 : cols / o.gptq.quant.group_size;
        const auto on = linear.weight.options();
        if (owner[j] != me) {
          q.weight.spec = spec;
          q.weight.codes = at::empty({rows, cols}, on.dtype(at::kByte));
          q.weight.scales = at::empty({rows, groups}, on.dtype(at::kFloat));
          q.weight.zeros = at::empty({rows, groups}, on.dtype(at::kFloat));
          q.weight.g_idx = at::empty({cols}, on.dtype(at::kInt));
        }
        at::Tensor loss = at::full({1}, q.report.loss, on.dtype(at::kDouble));
        q.weight.codes = q.weight.codes.contiguous();
        q.weight.scales = q.weight.scales.contiguous();
        q.weight.zeros = q.weight.zeros.contiguous();
        q.weight.g_idx = q.weight.g_idx.contiguous();
        if (auto s = ranks->Broadcast(
                {q.weight.codes, q.weight.scales, q.weight.zeros, q.weight.g_idx, loss}, owner[j]);
            !s.ok())
          return s;
        q.report.loss = loss.item<double>();
      }
      if (prune_only && o.pruned_dtype != at::kFloat)
        pruned = pruned.to(o.pruned_dtype).to(at::kFloat);
      if (prune_only) q.pruned = pruned;
      linear.weight = (prune_only ? pruned : q.weight.Dequantize()).to(linear.weight.scalar_type());
#ifdef SQUEEZE_HAS_CUDA
      if (device.is_cuda()) c10::cuda::device_synchronize();  // a true time per linear
#endif
      q.report.seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (o.on_linear && !prune_only) o.on_linear(index, name, q.weight);
      out.push_back(std::move(q));
    }
    clock.Charge("solve");
    return absl::OkStatus();
  };
  auto global = [&](HessianAccumulator& acc) -> absl::StatusOr<at::Tensor> {
    auto h = GangHessian(acc, ranks);
    if (world > 1) clock.Charge("hessian");
    return h;
  };
  const auto& groups = SequentialGroups();
  if (!gptq) {
    for (const auto& group : groups) {
      if (auto s = quantize_group(group, at::Tensor()); !s.ok()) return s;
    }
    return out;
  }

  auto accumulate = [&](HessianAccumulator& acc, const at::Tensor& x) {
    clock.Charge("forward");
    acc.Add(x);
    clock.Charge("hessian");
  };
  // The layer's pieces in Forward's order (DecoderLayer::AttentionInput ... MlpResidual), each
  // group quantized before the next reads its output.
  // q/k/v read the normalized inputs.
  HessianAccumulator h_qkv(c.hidden_size, device);
  for (int64_t b = 0; b < n; b += batch)
    accumulate(h_qkv, layer.AttentionInput(c, windows(hidden, b)));
  auto h = global(h_qkv);
  if (!h.ok()) return h.status();
  if (auto s = quantize_group(groups[0], *h); !s.ok()) return s;
  // o_proj reads the attention of the quantized q/k/v, kept for the residual below.
  HessianAccumulator h_o(c.num_attention_heads * c.head_dim, device);
  std::vector<at::Tensor> attention;
  for (int64_t b = 0; b < n; b += batch) {
    attention.push_back(
        layer.AttentionCore(c, index, layer.AttentionInput(c, windows(hidden, b)), rope));
    accumulate(h_o, attention.back());
  }
  h = global(h_o);
  if (!h.ok()) return h.status();
  if (auto s = quantize_group(groups[1], *h); !s.ok()) return s;
  // gate/up read the normalized residual after the quantized o_proj; the residual is kept.
  HessianAccumulator h_mlp(c.hidden_size, device);
  std::vector<at::Tensor> residual;
  for (int64_t b = 0, k = 0; b < n; b += batch, ++k) {
    residual.push_back(
        layer.AttentionResidual(c, windows(hidden, b), layer.o_proj.Forward(attention[k])));
    attention[k] = at::Tensor();
    accumulate(h_mlp, layer.MlpInput(c, residual.back()));
  }
  h = global(h_mlp);
  if (!h.ok()) return h.status();
  if (auto s = quantize_group(groups[2], *h); !s.ok()) return s;
  // down_proj reads the activation of the quantized gate/up.
  HessianAccumulator h_down(c.intermediate_size, device);
  for (const at::Tensor& r : residual)
    accumulate(h_down, layer.MlpActivation(c, layer.MlpInput(c, r)));
  h = global(h_down);
  if (!h.ok()) return h.status();
  if (auto s = quantize_group(groups[3], *h); !s.ok()) return s;
  // The quantized layer's output is the next layer's input.
  for (int64_t b = 0, k = 0; b < n; b += batch, ++k) {
    const at::Tensor& r = residual[k];
    windows(hidden, b).copy_(layer.MlpResidual(
        c, r, layer.down_proj.Forward(layer.MlpActivation(c, layer.MlpInput(c, r)))));
    residual[k] = at::Tensor();
  }
  clock.Charge("reforward");
  return out;
}

absl::StatusOr<at::Tensor> GangHessian(const HessianAccumulator& acc, RankCollectives* ranks) {
  if (ranks == nullptr || ranks->world_size() <= 1) return acc.hessian();
  at::Tensor sum = acc.hessian() * static_cast<double>(acc.samples());
  at::Tensor n =
      at::full({1}, static_cast<double>(acc.samples()), sum.options().dtype(at::kDouble));
  if (auto s = ranks->AllReduceSum(sum); !s.ok()) return s;
  if (auto s = ranks->AllReduceSum(n); !s.ok()) return s;
  const double total = n.item<double>();
  return total > 0 ? sum / total : sum;
}

at::Tensor EmbedWindows(const LlamaModel& model, const at::Tensor& windows, at::Device device,
                        int64_t batch) {
  std::vector<at::Tensor> parts;
  for (int64_t b = 0; b < windows.size(0); b += batch) {
    parts.push_back(
        model.Embed(windows.slice(0, b, b + batch).to(model.device())).to(device, at::kFloat));
  }
  return at::cat(parts, 0);
}

at::Tensor RunLayerBatched(const LlamaConfig& config, const DecoderLayer& layer,
                           const at::Tensor& inputs, const RotaryTables& rope, int64_t index,
                           int64_t batch, LinearObserver* observer) {
  std::vector<at::Tensor> outputs;
  for (int64_t b = 0; b < inputs.size(0); b += batch) {
    outputs.push_back(layer.Forward(config, inputs.slice(0, b, b + batch), rope, index, observer));
  }
  return at::cat(outputs, 0);
}

QuantizedSize QuantizedLinearSize(const LlamaModel& model, const QuantSpec& spec) {
  QuantizedSize size;
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (auto& [name, linear] : model.layer(i).Linears()) {
      size.weights += linear->weight.numel();
      size.bits += BitsPerWeight(spec, linear->weight.size(1)) * linear->weight.numel();
    }
  }
  return size;
}

absl::StatusOr<at::Tensor> SampleCalibration(const std::vector<TextExample>& examples,
                                             const CalibrationOptions& o) {
  if (o.num_samples <= 0)
    return absl::InvalidArgumentError("calibration num_samples: must be positive");
  if (o.seq_len < 2) return absl::InvalidArgumentError("calibration seq_len: must be at least 2");
  std::map<std::string, std::vector<int32_t>> streams;
  for (const TextExample& e : examples) {
    auto& s = streams[e.category];
    s.insert(s.end(), e.ids.begin(), e.ids.end());
  }
  std::vector<std::pair<std::string, const std::vector<int32_t>*>> usable;
  for (const auto& [category, stream] : streams) {
    if (static_cast<int64_t>(stream.size()) >= o.seq_len) usable.emplace_back(category, &stream);
  }
  if (usable.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("calibration data: no category has ", o.seq_len,
                                                   " tokens for one window (", examples.size(),
                                                   " examples)"));
  }
  // Equal shares; the remainder goes to the largest categories.
  std::vector<int64_t> share(usable.size(), o.num_samples / static_cast<int64_t>(usable.size()));
  std::vector<size_t> by_size(usable.size());
  for (size_t i = 0; i < by_size.size(); ++i) by_size[i] = i;
  std::stable_sort(by_size.begin(), by_size.end(), [&](size_t a, size_t b) {
    return usable[a].second->size() > usable[b].second->size();
  });
  for (int64_t r = 0; r < o.num_samples % static_cast<int64_t>(usable.size()); ++r)
    share[by_size[r]]++;

  std::mt19937_64 rng(o.seed);
  at::Tensor out = at::zeros({o.num_samples, o.seq_len}, at::kLong);
  auto a = out.accessor<int64_t, 2>();
  int64_t row = 0;
  for (size_t c = 0; c < usable.size(); ++c) {
    const auto& stream = *usable[c].second;
    std::uniform_int_distribution<int64_t> start(0,
                                                 static_cast<int64_t>(stream.size()) - o.seq_len);
    for (int64_t k = 0; k < share[c]; ++k, ++row) {
      const int64_t s = start(rng);
      for (int64_t t = 0; t < o.seq_len; ++t) a[row][t] = stream[s + t];
    }
  }
  return out;
}

absl::StatusOr<std::vector<LinearReport>> QuantizeSequential(LlamaModel& model,
                                                             const at::Tensor& calibration,
                                                             const SequentialOptions& options) {
  c10::NoGradGuard no_grad;
  const LlamaConfig& config = model.config();
  const bool gptq = options.method == SequentialOptions::Method::kGptq ||
                    options.method == SequentialOptions::Method::kSparseGpt;
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (auto& [name, linear] : model.layer(i).Linears()) {
      if (auto s = ValidateGptqOptions(options.gptq, linear->weight.size(1)); !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("model.layers.", i, ".", name, ": ", s.message()));
      }
    }
  }
  at::Tensor hidden;
  RotaryTables rope;
  if (gptq) {
    if (!calibration.defined() || calibration.dim() != 2 || calibration.size(0) == 0) {
      return absl::InvalidArgumentError(
          "calibration: GPTQ and SparseGPT need calibration windows [N, L]");
    }
    if (calibration.max().item<int64_t>() >= config.vocab_size ||
        calibration.min().item<int64_t>() < 0) {
      return absl::InvalidArgumentError("calibration: token ids outside the model's vocabulary");
    }
    // Embeddings of every window, then through the layers already done (on resume).
    hidden = EmbedWindows(model, calibration, options.device, options.batch_size);
    rope = model.Rotary(calibration.size(1), options.device, at::kFloat);
    for (int64_t i = 0; i < options.start_layer; ++i) {
      DecoderLayer layer = model.layer(i).To(options.device, at::kFloat);
      hidden = RunLayerBatched(config, layer, hidden, rope, i, options.batch_size, nullptr);
    }
  }

  std::vector<LinearReport> reports;
  for (int64_t i = options.start_layer; i < model.num_layers(); ++i) {
    DecoderLayer layer = model.layer(i).To(options.device, at::kFloat);
    auto quantized = QuantizeDecoderLayer(config, layer, hidden, rope, i, options);
    if (!quantized.ok()) return quantized.status();
    std::vector<LinearReport> layer_reports;
    for (const QuantizedLinear& q : *quantized) layer_reports.push_back(q.report);
    // Back to the host model, in its dtype.
    auto dst = model.layer(i).Tensors();
    auto src = layer.Tensors();
    // In place: the model's tensors may be a trainer's parameters (a distill stage's prune
    // rounds), which must stay the tensors its optimizer holds.
    for (size_t k = 0; k < dst.size(); ++k) {
      if (!dst[k].second->is_same(*src[k].second)) dst[k].second->copy_(*src[k].second);
    }
    reports.insert(reports.end(), layer_reports.begin(), layer_reports.end());
    if (options.on_layer_done) {
      if (auto s = options.on_layer_done(i, layer_reports); !s.ok()) return s;
    }
  }
  return reports;
}

}  // namespace squeeze
