#include "common/compress/sequential_quantizer.h"

#include <c10/core/GradMode.h>

#include <chrono>
#include <map>
#include <random>
#include <set>

#include "absl/strings/str_cat.h"

namespace squeeze {
namespace {

// Accumulates Hessians for the inputs of the named linear layers only.
class HessianObserver : public LinearObserver {
 public:
  HessianObserver(const std::vector<std::string>& names, DecoderLayer& layer, at::Device device) {
    for (auto& [name, linear] : layer.Linears()) {
      for (const std::string& n : names) {
        if (n == name) accumulators_.emplace(n, HessianAccumulator(linear->weight.size(1), device));
      }
    }
  }
  void OnLinearInput(int64_t, absl::string_view name, const at::Tensor& input) override {
    auto it = accumulators_.find(std::string(name));
    if (it != accumulators_.end()) it->second.Add(input);
  }
  const at::Tensor& hessian(const std::string& name) const {
    return accumulators_.at(name).hessian();
  }

 private:
  std::map<std::string, HessianAccumulator> accumulators_;
};

const std::vector<std::vector<std::string>>& SequentialGroups() {
  static const std::vector<std::vector<std::string>> groups = {
      {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"},
      {"self_attn.o_proj"},
      {"mlp.gate_proj", "mlp.up_proj"},
      {"mlp.down_proj"}};
  return groups;
}

}  // namespace

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
  const bool gptq = options.method == SequentialOptions::Method::kGptq;
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
      return absl::InvalidArgumentError("calibration: GPTQ needs calibration windows [N, L]");
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
    std::vector<LinearReport> layer_reports;
    for (const std::vector<std::string>& group : SequentialGroups()) {
      std::unique_ptr<HessianObserver> observer;
      if (gptq) {
        observer = std::make_unique<HessianObserver>(group, layer, options.device);
        RunLayerBatched(config, layer, hidden, rope, i, options.batch_size, observer.get());
      }
      for (auto& [name, linear] : layer.Linears()) {
        if (std::find(group.begin(), group.end(), name) == group.end()) continue;
        const auto start = std::chrono::steady_clock::now();
        LinearReport report{i, name, 0.0, 0.0};
        if (gptq) {
          const at::Tensor& h = observer->hessian(name);
          if (!at::isfinite(h).all().item<bool>()) {
            return absl::InvalidArgumentError(absl::StrCat(
                "model.layers.", i, ".", name, ": calibration activations are not finite"));
          }
          auto r = QuantizeGptq(linear->weight, h, options.gptq);
          if (!r.ok()) {
            return absl::Status(r.status().code(), absl::StrCat("model.layers.", i, ".", name, ": ",
                                                                r.status().message()));
          }
          linear->weight = r->weight.Dequantize();
          report.loss = r->loss;
          if (options.on_linear) options.on_linear(i, name, r->weight);
        } else {
          auto r = QuantizeRtn(linear->weight, options.gptq.quant);
          if (!r.ok()) return r.status();
          linear->weight = r->Dequantize();
          if (options.on_linear) options.on_linear(i, name, *r);
        }
        report.seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        layer_reports.push_back(report);
      }
    }
    if (gptq) hidden = RunLayerBatched(config, layer, hidden, rope, i, options.batch_size, nullptr);
    // Back to the host model, in its dtype.
    auto dst = model.layer(i).Tensors();
    auto src = layer.Tensors();
    for (size_t k = 0; k < dst.size(); ++k) {
      *dst[k].second = src[k].second->to(dst[k].second->device(), dst[k].second->scalar_type());
    }
    reports.insert(reports.end(), layer_reports.begin(), layer_reports.end());
    if (options.on_layer_done) {
      if (auto s = options.on_layer_done(i, layer_reports); !s.ok()) return s;
    }
  }
  return reports;
}

}  // namespace squeeze
