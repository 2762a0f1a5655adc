#include "common/compress/streaming_quantizer.h"

#include "common/model/lora.h"

#include <c10/core/GradMode.h>

#include <sys/mman.h>
#include <unistd.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/base/status_macros.h"
#include "common/compress/awq_layer.h"
#include "common/compress/copy_stream_cuda.h"
#include "common/compress/layer_sensitivity.h"
#include "common/compress/quantized_checkpoint.h"
#include "common/compress/smoothquant.h"
#include "common/compress/sparse24_checkpoint.h"
#include "common/tensor/torch_tensor.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Runs closures one after another on its own thread, in order. The first error is kept and
// returned by Submit and Drain; later work is skipped.
class SerialWriter {
 public:
  SerialWriter() : thread_([this] { Loop(); }) {}
  ~SerialWriter() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  absl::Status Submit(std::function<absl::Status()> work) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_.ok()) return error_;
    queue_.push_back(std::move(work));
    cv_.notify_all();
    return absl::OkStatus();
  }
  // Waits for everything submitted; the first error, if any.
  absl::Status Drain() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return queue_.empty() && !busy_; });
    return error_;
  }
  double busy_seconds() {
    std::lock_guard<std::mutex> lock(mu_);
    return busy_seconds_;
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      std::function<absl::Status()> work = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      const bool skip = !error_.ok();
      lock.unlock();
      const auto start = std::chrono::steady_clock::now();
      absl::Status s = skip ? absl::OkStatus() : work();
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      lock.lock();
      busy_seconds_ += seconds;
      if (error_.ok() && !s.ok()) error_ = s;
      busy_ = false;
      cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<absl::Status()>> queue_;
  bool busy_ = false, stop_ = false;
  absl::Status error_;
  double busy_seconds_ = 0.0;
  std::thread thread_;
};

std::string ShardName(int64_t index, int64_t count) {
  return absl::StrFormat("model-%05d-of-%05d.safetensors", index + 1, count);
}

std::string LayerPrefix(int64_t layer) { return absl::StrCat("model.layers.", layer, "."); }

// Tensor `name` of `weights` as a CPU tensor over the mapped file itself, in its stored dtype:
// valid while `weights` lives, and only ever read.
absl::StatusOr<at::Tensor> Borrow(const CheckpointReader& weights, const std::string& name) {
  auto view = weights.Get(name);
  if (!view.ok()) return view.status();
  auto type = ToScalarType(view->info->dtype);
  if (!type.ok()) return type.status();
  return at::from_blob(const_cast<uint8_t*>(view->data), view->info->shape,
                       at::TensorOptions().dtype(*type));
}

// Drops this process's pages of tensor `name` of the mapped checkpoint once it has been read:
// they are clean file pages (read again from the file if touched), so resident memory stays at
// about the layers in flight instead of growing to the whole checkpoint.
void ReleasePages(const CheckpointReader& weights, const std::string& name) {
  auto view = weights.Get(name);
  if (!view.ok() || view->info->nbytes == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(view->data) + page - 1) / page * page;
  const uintptr_t end =
      (reinterpret_cast<uintptr_t>(view->data) + view->info->nbytes) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

// A decoder layer read on the host in its stored dtype (pinned when it will go to a GPU), so that
// the copy to the device can overlap the work before it.
// How the passes read an input's layers: a quantized input (NF4, GPTQ, ...) dequantized through
// `dense`, and adapters stored beside it (a lora stage's output) merged in.
struct InputLayers {
  LlamaModel::TensorSource dense;  // empty: the checkpoint is dense
  std::optional<StoredLoraAdapters> adapters;
};
absl::StatusOr<InputLayers> OpenInputLayers(const std::string& model_dir, const LlamaConfig& c,
                                            const CheckpointReader& weights) {
  InputLayers out;
  SQ_ASSIGN_OR_RETURN(out.dense, DenseTensorSource(model_dir, c, weights));
  if (HasLoraAdapters(model_dir)) {
    SQ_ASSIGN_OR_RETURN(StoredLoraAdapters opened, StoredLoraAdapters::Open(model_dir, c));
    out.adapters.emplace(std::move(opened));
  }
  return out;
}

// `dense`, when set, reads a quantized checkpoint's linears dequantized (DenseTensorSource);
// adapters stored beside the checkpoint (a lora stage's output) are merged in.
absl::StatusOr<DecoderLayer> ReadLayer(const LlamaConfig& config, const CheckpointReader& weights,
                                       int64_t index, at::ScalarType dtype, bool pin,
                                       const LlamaModel::TensorSource& dense,
                                       const StoredLoraAdapters* adapters) {
  auto layer =
      dense ? LoadDecoderLayer(
                  config, index, dense,
                  [&](const std::string& name) { return weights.FileOf(name); }, dtype, at::kCPU)
            : LoadDecoderLayer(config, index, weights, dtype, at::kCPU);
  if (!layer.ok()) return layer;
  if (adapters) {
    if (auto s = adapters->MergeInto(index, *layer); !s.ok()) return s;
  }
  for (auto& [name, t] : layer->Tensors()) {
    if (pin) *t = t->pin_memory();
    ReleasePages(weights, LayerPrefix(index) + name);
  }
  return layer;
}

// This rank's share of the calibration windows [N, L] embedded on the device (each rank of a
// gang takes its slice), gathered from the mapped table. `who` names what needs them in errors.
absl::StatusOr<at::Tensor> EmbedCalibration(const LlamaConfig& c, const CheckpointReader& weights,
                                            const at::Tensor& calibration,
                                            const SequentialOptions& seq, at::ScalarType compute,
                                            const std::string& who) {
  if (!calibration.defined() || calibration.dim() != 2 || calibration.size(0) == 0)
    return absl::InvalidArgumentError(
        absl::StrCat("calibration: ", who, " needs calibration windows [N, L]"));
  if (calibration.max().item<int64_t>() >= c.vocab_size || calibration.min().item<int64_t>() < 0)
    return absl::InvalidArgumentError("calibration: token ids outside the model's vocabulary");
  auto embed = Borrow(weights, "model.embed_tokens.weight");
  if (!embed.ok()) return embed.status();
  at::Tensor share = calibration.to(at::kLong);
  if (seq.ranks != nullptr && seq.ranks->world_size() > 1) {
    const int64_t n = share.size(0), world = seq.ranks->world_size(), r = seq.ranks->rank();
    share = share.slice(0, n * r / world, n * (r + 1) / world);
  }
  at::Tensor hidden = at::embedding(*embed, share).to(seq.device, compute);
  ReleasePages(weights, "model.embed_tokens.weight");
  return hidden;
}

// Accumulates the Hessian of each distinct input of a decoder layer's linears: q/k/v read one
// (kept under q_proj), gate/up one (under gate_proj).
class LayerHessianObserver : public LinearObserver {
 public:
  LayerHessianObserver(const LlamaConfig& c, at::Device device) {
    hessians_.emplace("self_attn.q_proj", HessianAccumulator(c.hidden_size, device));
    hessians_.emplace("self_attn.o_proj",
                      HessianAccumulator(c.num_attention_heads * c.head_dim, device));
    hessians_.emplace("mlp.gate_proj", HessianAccumulator(c.hidden_size, device));
    hessians_.emplace("mlp.down_proj", HessianAccumulator(c.intermediate_size, device));
  }
  void OnLinearInput(int64_t, absl::string_view name, const at::Tensor& input) override {
    auto it = hessians_.find(std::string(name));
    if (it != hessians_.end()) it->second.Add(input);
  }
  // The accumulator of the input `linear` reads.
  const HessianAccumulator& For(const std::string& linear) const {
    if (linear == "self_attn.k_proj" || linear == "self_attn.v_proj")
      return hessians_.at("self_attn.q_proj");
    if (linear == "mlp.up_proj") return hessians_.at("mlp.gate_proj");
    return hessians_.at(linear);
  }

 private:
  std::map<std::string, HessianAccumulator> hessians_;
};

// A layer read on the host, and on a GPU its copy to the device already under way.
struct PrefetchedLayer {
  DecoderLayer layer;
  std::unique_ptr<CopyStreamTransfer> copy;
};

DecoderLayer ToDevice(const DecoderLayer& host, at::Device device, at::ScalarType dtype) {
  DecoderLayer layer = host;
  for (auto& [name, t] : layer.Tensors()) *t = t->to(device, dtype, /*non_blocking=*/true);
  return layer;
}

// Whether every linear of the model can be stored in `format` at each width it takes; the reason
// when not.
absl::Status Packs(const LlamaConfig& c, const SequentialOptions& seq, QuantizedFormat format) {
  std::set<int> widths = {seq.gptq.quant.bits};
  for (const auto& [module, bits] : seq.bits_by_module) widths.insert(bits);
  for (int bits : widths) {
    GptqOptions options = seq.gptq;
    options.quant.bits = bits;
    for (const LinearShape& l : DecoderLinearShapes(c)) {
      if (auto s = CheckPackable(format, options, l.in, l.out); !s.ok())
        return absl::InvalidArgumentError(
            absl::StrCat(l.name, " at ", bits, " bits: ", s.message()));
    }
  }
  return absl::OkStatus();
}

// The layer's tensors that belong to no linear (its norms), by their names inside the layer.
std::vector<std::pair<std::string, at::Tensor*>> NonLinearTensors(DecoderLayer& layer) {
  std::set<std::string> linear_tensors;
  for (const auto& [name, linear] : layer.Linears()) {
    linear_tensors.insert(name + ".weight");
    linear_tensors.insert(name + ".bias");
  }
  std::vector<std::pair<std::string, at::Tensor*>> out;
  for (auto& [name, t] : layer.Tensors()) {
    if (!linear_tensors.count(name)) out.emplace_back(name, t);
  }
  return out;
}

// How a layer's linears are stored: packed codes, dequantized (`stored` dtype), or pruned in
// floating point (dense or 2:4 bitmask).
struct ShardLayout {
  bool packed = false;
  QuantizedFormat format = QuantizedFormat::kGptq;
  bool pruned = false;
  bool sparse24 = false;
  bool float4 = false;                // bitsandbytes' NF4 / FP4 layout
  at::ScalarType stored = at::kHalf;  // every floating-point tensor of the shard
};

// The tensors of one quantized (or pruned) decoder layer as they are stored, on the host.
absl::StatusOr<std::vector<std::pair<std::string, at::Tensor>>> LayerShardTensors(
    const LlamaConfig& config, DecoderLayer& layer, int64_t index,
    const std::vector<QuantizedLinear>& quantized, const ShardLayout& shard) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  const std::string prefix = LayerPrefix(index);
  // Every tensor that is not a linear's: the norms, whichever the architecture has.
  for (const auto& [name, t] : NonLinearTensors(layer))
    out.emplace_back(prefix + name, t->to(shard.stored));
  std::map<std::string, const Linear*> linears;
  for (const auto& [name, linear] : layer.Linears()) linears[name] = linear;
  for (const QuantizedLinear& q : quantized) {
    const std::string base = prefix + q.name;
    if (shard.float4) {
      auto p = PackBnb4bit(base + ".weight", q.float4, shard.stored);
      if (!p.ok()) return p.status();
      for (auto& t : *p) out.push_back(std::move(t));
    } else if (shard.pruned) {
      const at::Tensor w = q.pruned.defined() ? q.pruned : linears.at(q.name)->weight;
      if (shard.sparse24) {
        auto p = PackSparse24(base, w.to(at::kCPU), shard.stored);
        if (!p.ok()) return p.status();
        for (auto& t : *p) out.push_back(std::move(t));
      } else {
        out.emplace_back(base + ".weight", w.to(shard.stored));
      }
    } else if (shard.packed) {
      auto p = PackLinearTensors(base, q.weight, shard.format, linears.at(q.name)->input_quant);
      if (!p.ok()) return p.status();
      for (auto& t : *p) out.push_back(std::move(t));
    } else {
      out.emplace_back(base + ".weight", q.weight.Dequantize().to(shard.stored));
    }
  }
  for (auto& [name, linear] : layer.Linears()) {
    if (linear->bias.defined())
      out.emplace_back(prefix + name + ".bias", linear->bias.to(shard.stored));
  }
  // Phi-3's fused projections are stored fused, as transformers and vLLM load them.
  if (auto s = FuseStoredTensors(config, out); !s.ok()) return s;
  for (auto& [name, t] : out) t = t.to(at::kCPU).contiguous();
  return out;
}

// Sets the linear weights of `layer` from its finished shard (resume).
// With `norms`, the layer's other tensors too (norms that SmoothQuant rescaled); input scales
// when the export quantizes activations.
absl::Status RestoreLayer(const LlamaConfig& config, DecoderLayer& layer, int64_t index,
                          const std::string& path, const ShardLayout& shard,
                          const QuantizedExportOptions& export_options, bool norms,
                          std::vector<std::pair<std::string, int64_t>>* names) {
  auto file = SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  for (const TensorInfo& t : (*file)->tensors())
    names->emplace_back(t.name, static_cast<int64_t>(t.nbytes));
  auto get = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
    auto view = (*file)->Get(name);
    if (!view.ok()) return view.status();
    return ToTorch(*view);
  };
  // A linear's dense weight from the shard: unpacked when packed; the parts of a fused linear
  // are cut from it.
  auto dense = [&](const std::string& name) -> absl::StatusOr<at::Tensor> {
    const std::string base = name.substr(0, name.size() - std::string(".weight").size());
    if (shard.float4) {
      auto w = UnpackBnb4bit(name, get);
      if (!w.ok()) return absl::DataLossError(absl::StrCat(path, ": ", w.status().message()));
      return w->Dequantize();
    }
    if (shard.sparse24) {
      auto w = UnpackSparse24(base, get);
      if (!w.ok()) return absl::DataLossError(absl::StrCat(path, ": ", w.status().message()));
      return w;
    }
    if (!shard.packed) return get(name);
    auto width = export_options.bits_by_module.find(base);
    const int bits = width == export_options.bits_by_module.end() ? export_options.gptq.quant.bits
                                                                  : width->second;
    auto q = UnpackLinearTensors(base, get, export_options.format, bits,
                                 export_options.gptq.quant.group_size);
    if (!q.ok()) return absl::DataLossError(absl::StrCat(path, ": ", q.status().message()));
    return q->Dequantize();
  };
  const LlamaModel::TensorSource source = SplitFusedSource(config, dense);
  const std::string prefix = LayerPrefix(index);
  for (auto& [name, linear] : layer.Linears()) {
    auto weight = source(prefix + name + ".weight");
    if (!weight.ok()) return weight.status();
    linear->weight = weight->to(linear->weight.device(), linear->weight.scalar_type());
    if (shard.packed && export_options.activations != ActivationQuant::Kind::kNone) {
      auto quant = ReadInputQuant(prefix + name, get, export_options.activations);
      if (!quant.ok())
        return absl::DataLossError(absl::StrCat(path, ": ", quant.status().message()));
      linear->input_quant = *quant;
    }
  }
  if (norms) {
    for (auto& [name, t] : NonLinearTensors(layer)) {
      auto stored = get(prefix + name);
      if (!stored.ok()) return stored.status();
      *t = stored->to(t->device(), t->scalar_type());
    }
  }
  return absl::OkStatus();
}

// Per-linear input absmax over `inputs` run through the layer; in a gang, over every rank's share
// of the calibration windows (each rank's maxima broadcast in turn: the collectives have no max),
// so that all ranks smooth and scale alike.
absl::StatusOr<std::map<std::string, at::Tensor>> LayerInputAbsMax(
    const LlamaConfig& c, const DecoderLayer& layer, const at::Tensor& inputs,
    const RotaryTables& rope, int64_t index, int64_t batch, RankCollectives* ranks) {
  InputAbsMaxObserver observer;
  RunLayerBatched(c, layer, inputs, rope, index, batch, &observer);
  std::map<std::string, at::Tensor> absmax = observer.absmax();
  if (ranks == nullptr || ranks->world_size() <= 1) return absmax;
  for (auto& [name, mine] : absmax) {
    at::Tensor all = mine.clone();
    for (int r = 0; r < ranks->world_size(); ++r) {
      at::Tensor theirs = r == ranks->rank() ? mine.clone() : at::empty_like(mine);
      if (auto s = ranks->Broadcast({theirs}, r); !s.ok()) return s;
      all = at::maximum(all, theirs);
    }
    mine = all;
  }
  return absmax;
}

// Sets every linear's input quantization after its weights are quantized: dynamic per token, or
// static with each linear's input absmax / 127 over `inputs` run through the layer.
absl::Status SetInputQuant(const LlamaConfig& c, DecoderLayer& layer, const at::Tensor& inputs,
                           const RotaryTables& rope, int64_t index, int64_t batch,
                           ActivationQuant::Kind kind, RankCollectives* ranks) {
  std::map<std::string, at::Tensor> absmax;
  if (kind == ActivationQuant::Kind::kStaticPerTensor) {
    auto observed = LayerInputAbsMax(c, layer, inputs, rope, index, batch, ranks);
    if (!observed.ok()) return observed.status();
    absmax = *std::move(observed);
  }
  for (auto& [name, linear] : layer.Linears()) {
    linear->input_quant.kind = kind;
    linear->input_quant.bits = 8;
    if (kind == ActivationQuant::Kind::kStaticPerTensor)
      linear->input_quant.scale = (absmax.at(name).max() / 127.0).clamp_min(1e-8).reshape({1});
  }
  return absl::OkStatus();
}

TensorInfo InfoOf(const std::string& name, const at::Tensor& t) {
  TensorInfo info;
  info.name = name;
  info.dtype = *FromScalarType(t.scalar_type());
  info.shape = t.sizes().vec();
  info.nbytes = t.nbytes();
  return info;
}

// Writes host tensors as the safetensors file `dir/name`, straight from their memory; returns
// its size.
absl::StatusOr<int64_t> WriteShard(const std::string& dir, const std::string& name,
                                   const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  std::vector<TensorInfo> infos;
  for (const auto& [n, t] : tensors) infos.push_back(InfoOf(n, t));
  const std::string path = (fs::path(dir) / name).string();
  auto written = WriteSafetensorsStreaming(
      path, infos, {{"format", "pt"}},
      [&](size_t i, const std::function<absl::Status(absl::string_view)>& write) {
        const at::Tensor& t = tensors[i].second;
        return write(absl::string_view(static_cast<const char*>(t.data_ptr()), t.nbytes()));
      });
  if (!written.ok()) return written;
  std::error_code ec;
  return static_cast<int64_t>(fs::file_size(path, ec));
}

// AWQ over one layer (awq_layer.h), its linears reported as the sequential quantizer's are: the
// loss is the group's output error at the chosen scales.
absl::StatusOr<std::vector<QuantizedLinear>> AwqLayer(const LlamaConfig& c, DecoderLayer& layer,
                                                      at::Tensor& hidden, const RotaryTables& rope,
                                                      int64_t index, const SequentialOptions& seq,
                                                      PhaseClock& clock) {
  AwqOptions options = seq.awq;
  options.quant = seq.gptq.quant;
  options.on_part = [&clock](const std::string& part) { clock.Charge(part); };
  const auto start = std::chrono::steady_clock::now();
  auto linears = AwqQuantizeDecoderLayer(c, layer, hidden, rope, index, options);
  if (!linears.ok()) return linears.status();
  clock.Charge("awq: to the layer's dtype");
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::vector<QuantizedLinear> out;
  for (AwqLinear& l : *linears) {
    QuantizedLinear q{
        l.name, std::move(l.weight), {index, l.name, l.error, 0.0, seq.gptq.quant.bits}};
    q.report.seconds = seconds / static_cast<double>(linears->size());
    out.push_back(std::move(q));
  }
  return out;
}

// NF4 / FP4 over one layer: every linear alone, no calibration; its loss is the squared error.
absl::StatusOr<std::vector<QuantizedLinear>> Float4Layer(DecoderLayer& layer, int64_t index,
                                                         const Float4Options& options,
                                                         PhaseClock& clock) {
  std::vector<QuantizedLinear> out;
  for (auto& [name, linear] : layer.Linears()) {
    const auto start = std::chrono::steady_clock::now();
    auto q = QuantizeFloat4(linear->weight, options);
    if (!q.ok())
      return absl::Status(q.status().code(),
                          absl::StrCat(LayerPrefix(index), name, ": ", q.status().message()));
    const at::Tensor w = q->Dequantize();
    QuantizedLinear l{name, {}, {index, name, 0.0, 0.0, 4}};
    l.report.loss = (w - linear->weight.to(at::kFloat)).pow(2).sum().item<double>();
    linear->weight = w.to(linear->weight.device(), linear->weight.scalar_type());
    l.report.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    l.float4 = *std::move(q);
    out.push_back(std::move(l));
  }
  clock.Charge("solve");
  return out;
}

}  // namespace

absl::StatusOr<StreamingQuantizeResult> QuantizeCheckpointStreaming(
    const std::string& model_dir, const at::Tensor& calibration, const std::string& out_dir,
    const StreamingQuantizeOptions& o) {
  c10::NoGradGuard no_grad;
  const SequentialOptions& seq = o.sequential;
  const bool gptq = seq.method == SequentialOptions::Method::kGptq;
  const bool awq = seq.method == SequentialOptions::Method::kAwq;
  const bool prune_only = seq.method == SequentialOptions::Method::kSparseGpt;
  const bool smooth = o.smoothquant_alpha >= 0.0;
  const bool act_static = o.activations == ActivationQuant::Kind::kStaticPerTensor;
  // Runs the calibration windows through the layers.
  const bool calibrated = gptq || awq || prune_only || smooth || act_static;
  const at::Device device = seq.device;
  const bool cuda = device.is_cuda();
  PhaseClock clock(cuda);
  SequentialOptions layer_options = seq;
  layer_options.clock = &clock;
  layer_options.on_linear = nullptr;
  layer_options.on_layer_done = nullptr;

  auto config = LoadLlamaConfig(model_dir);
  if (!config.ok()) return config.status();
  const LlamaConfig& c = *config;
  auto reader = CheckpointReader::Open(model_dir);
  if (!reader.ok()) return reader.status();
  const CheckpointReader& weights = **reader;
  SQ_ASSIGN_OR_RETURN(const InputLayers input, OpenInputLayers(model_dir, c, weights));
  const LlamaModel::TensorSource& dense = input.dense;
  const std::optional<StoredLoraAdapters>& adapters = input.adapters;
  const int64_t layers = c.num_hidden_layers, shards = layers + 1, total_steps = layers + 1;
  // Layers compute in bfloat16 on a GPU (the dtype these models are trained and served in; the
  // Hessians still accumulate in float32), in float32 on the host.
  const at::ScalarType compute = cuda ? at::kBFloat16 : at::kFloat;
  const bool sparse24 =
      prune_only && o.pruned_layout == StreamingQuantizeOptions::PrunedLayout::kSparse24Bitmask;
  const bool float4 = o.float4.has_value();
  if (float4) {
    if (seq.method != SequentialOptions::Method::kRtn || seq.sparsity.active() ||
        !seq.bits_by_module.empty() || smooth || o.activations != ActivationQuant::Kind::kNone)
      return absl::InvalidArgumentError(
          "nf4 and fp4 quantize every linear alone (no GPTQ, AWQ, pruning, mixed widths or "
          "activation quantization)");
    if (!FusedLinears(c).empty())
      return absl::UnimplementedError(absl::StrCat("the bitsandbytes layout is not written for ",
                                                   c.model_type, " (fused projections) yet"));
  }
  if ((prune_only || float4) && o.float_dtype != at::kFloat && o.float_dtype != at::kBFloat16 &&
      o.float_dtype != at::kHalf)
    return absl::InvalidArgumentError(
        "float_dtype: pruned and nf4 models are stored in float32, bfloat16 or float16");
  if (prune_only) {
    if (!seq.sparsity.active())
      return absl::InvalidArgumentError("SparseGPT needs a sparsity or an n:m pattern");
    if (sparse24 && !(seq.sparsity.n == 2 && seq.sparsity.m == 4))
      return absl::InvalidArgumentError("the sparse-24-bitmask layout holds 2:4 sparsity only");
    if (sparse24 && !FusedLinears(c).empty())
      return absl::UnimplementedError(
          absl::StrCat("the sparse-24-bitmask layout is not written for ", c.model_type,
                       " (fused projections) yet"));
    if (sparse24 && o.float_dtype == at::kFloat)
      return absl::InvalidArgumentError(
          "the sparse-24-bitmask layout is stored in bfloat16 or float16");
  } else if (seq.sparsity.active() && !gptq) {
    return absl::InvalidArgumentError("pruning in the quantize pass needs method gptq");
  }
  const absl::Status packable = prune_only || float4 ? absl::OkStatus() : Packs(c, seq, o.format);
  if (!seq.bits_by_module.empty()) {
    if (awq || (o.format != QuantizedFormat::kGptq && o.format != QuantizedFormat::kGptqV2))
      return absl::InvalidArgumentError(
          "mixed precision is written in the GPTQ layout, by RTN or GPTQ only");
    if (!packable.ok()) return packable;  // GPTQModel's `dynamic` needs every layer packed
    if (!FusedLinears(c).empty())
      return absl::UnimplementedError(absl::StrCat("mixed precision is not written for ",
                                                   c.model_type, " (fused projections) yet"));
  }
  // A shape the layout cannot hold is an error before any work; the GPTQ layout writes the model
  // dense instead only when asked to (dense_fallback), never silently.
  if (!packable.ok() && (!o.dense_fallback || (o.format != QuantizedFormat::kGptq &&
                                               o.format != QuantizedFormat::kGptqV2)))
    return absl::InvalidArgumentError(
        absl::StrCat(packable.message(),
                     o.format == QuantizedFormat::kGptq || o.format == QuantizedFormat::kGptqV2
                         ? "; set dense_fallback: true to write the model dense"
                         : ""));
  if ((o.activations != ActivationQuant::Kind::kNone || smooth) &&
      o.format != QuantizedFormat::kCompressedTensorsInt8)
    return absl::InvalidArgumentError(
        "activation quantization and SmoothQuant are written in the compressed-tensors layout "
        "only");
  if (o.format == QuantizedFormat::kCompressedTensorsInt8 && !FusedLinears(c).empty())
    return absl::UnimplementedError(
        absl::StrCat("the compressed-tensors layout is not written for ", c.model_type,
                     " (fused projections) yet"));
  const bool packed = packable.ok() && !prune_only && !float4;
  ShardLayout shard;
  shard.packed = packed;
  shard.format = o.format;
  shard.pruned = prune_only;
  shard.sparse24 = sparse24;
  shard.float4 = float4;
  shard.stored = prune_only || float4 ? o.float_dtype : at::kHalf;
  layer_options.pruned_dtype = shard.stored;
  QuantizedExportOptions export_options;
  export_options.gptq = seq.gptq;
  export_options.format = o.format;
  export_options.activations = o.activations;
  export_options.bits_by_module = seq.bits_by_module;
  export_options.method = gptq ? "gptq" : "rtn";

  StreamingQuantizeResult result;
  result.format = sparse24 ? "sparse_24_bitmask"
                  : float4 ? "bitsandbytes_" + Float4TypeName(o.float4->type)
                  : packed ? QuantizedFormatName(o.format)
                           : "dense";
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec)
    return absl::UnavailableError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));

  // Validate every linear's options against its shape before any work (NF4's blocks run over
  // the flattened weight: any shape).
  for (const LinearShape& l : float4 ? std::vector<LinearShape>() : DecoderLinearShapes(c)) {
    if (auto s = ValidateGptqOptions(seq.gptq, l.in); !s.ok())
      return absl::InvalidArgumentError(
          absl::StrCat(l.name, " (", l.in, " inputs): ", s.message()));
  }

  // The calibration windows' embeddings, gathered on the host from the mapped table.
  at::Tensor hidden;
  RotaryTables rope;
  if (calibrated) {
    auto embedded = EmbedCalibration(c, weights, calibration, seq, compute,
                                     gptq         ? "GPTQ"
                                     : prune_only ? "SparseGPT"
                                     : awq        ? "AWQ"
                                     : smooth     ? "SmoothQuant"
                                                  : "static input scales");
    if (!embedded.ok()) return embedded.status();
    hidden = *std::move(embedded);
    rope = MakeRotaryTables(c, calibration.size(1), device, compute);
    clock.Charge("embed");
  }

  // In a gang only rank 0 writes; the others compute alongside it.
  const bool writes = seq.ranks == nullptr || seq.ranks->rank() == 0;
  // Declared before the writer: its pending work uses them until it is destroyed.
  std::mutex written_mu;
  int64_t bytes_written = 0;
  std::map<std::string, std::string> weight_map;
  int64_t total_size = 0;
  // Layers whose shards on_file has taken: what progress reports (the writer runs in order).
  std::atomic<int64_t> durable_layers{o.start_layer};
  SerialWriter writer;
  // Hands a finished file to the writer thread: written, counted, then given to on_file.
  auto emit = [&](int64_t layer, const std::string& name,
                  std::vector<std::pair<std::string, at::Tensor>> tensors) -> absl::Status {
    for (const auto& [n, t] : tensors) {
      weight_map[n] = name;
      total_size += static_cast<int64_t>(t.nbytes());
    }
    if (!writes) return absl::OkStatus();
    return writer.Submit([&, layer, name, tensors = std::move(tensors)]() -> absl::Status {
      auto size = WriteShard(out_dir, name, tensors);
      if (!size.ok()) return size.status();
      {
        std::lock_guard<std::mutex> lock(written_mu);
        bytes_written += *size;
      }
      if (o.on_file) {
        if (auto s = o.on_file(layer, (fs::path(out_dir) / name).string(), name); !s.ok()) return s;
      }
      if (layer >= 0) durable_layers.store(layer + 1);
      return absl::OkStatus();
    });
  };

  // The last shard (embeddings, final norm and head in float16; float_dtype for pruned and NF4)
  // does not depend on the quantization: the writer thread converts and writes it a tensor at a
  // time from the mapped checkpoint while the layers compute.
  {
    std::vector<std::string> names = {"model.embed_tokens.weight", "model.norm.weight"};
    if (!c.tie_word_embeddings) names.push_back("lm_head.weight");
    std::vector<TensorInfo> infos;
    for (const std::string& name : names) {
      auto view = weights.Get(name);
      if (!view.ok()) return view.status();
      TensorInfo info;
      info.name = name;
      info.dtype = *FromScalarType(shard.stored);
      info.shape = view->info->shape;
      info.nbytes = static_cast<uint64_t>(view->info->numel()) * c10::elementSize(shard.stored);
      infos.push_back(info);
      weight_map[name] = ShardName(layers, shards);
      total_size += static_cast<int64_t>(info.nbytes);
    }
    const std::string name = ShardName(layers, shards);
    auto submitted =
        !writes ? absl::OkStatus() : writer.Submit([&, names, infos, name]() -> absl::Status {
          const std::string path = (fs::path(out_dir) / name).string();
          auto written = WriteSafetensorsStreaming(
              path, infos, {{"format", "pt"}},
              [&](size_t i, const std::function<absl::Status(absl::string_view)>& write) {
                auto stored = Borrow(weights, names[i]);
                if (!stored.ok()) return stored.status();
                const at::Tensor converted = stored->to(shard.stored).contiguous();
                ReleasePages(weights, names[i]);
                return write(absl::string_view(static_cast<const char*>(converted.data_ptr()),
                                               converted.nbytes()));
              });
          if (!written.ok()) return written;
          {
            std::lock_guard<std::mutex> lock(written_mu);
            bytes_written += static_cast<int64_t>(fs::file_size(path));
          }
          return o.on_file ? o.on_file(-1, path, name) : absl::OkStatus();
        });
    if (!submitted.ok()) return submitted;
  }

  const bool pin = cuda;
  // The next layer is read from the mapped checkpoint on a host thread and, on a GPU, copied on
  // a copy stream while this layer computes.
  auto prefetch = [&](int64_t i) {
    return std::async(std::launch::async, [&, i]() -> absl::StatusOr<PrefetchedLayer> {
      auto host = ReadLayer(c, weights, i, cuda ? compute : at::kFloat, pin, dense,
                            adapters ? &*adapters : nullptr);
      if (!host.ok()) return host.status();
      PrefetchedLayer out{*std::move(host), nullptr};
#if SQUEEZE_HAS_CUDA_KERNELS
      if (cuda) {
        std::vector<at::Tensor> tensors;
        for (auto& [name, t] : out.layer.Tensors()) tensors.push_back(*t);
        out.copy = CopyStreamTransfer::Start(std::move(tensors), device, compute);
      }
#endif
      return out;
    });
  };
  // Pruning only: a count (a device sync per linear) no other method needs.
  auto count_zeros = [&](DecoderLayer& layer) {
    if (!prune_only) return;
    for (auto& [name, linear] : layer.Linears()) {
      result.linear_weights += linear->weight.numel();
      result.zero_weights += (linear->weight == 0).sum().item<int64_t>();
    }
  };
  std::future<absl::StatusOr<PrefetchedLayer>> next = prefetch(0);
  for (int64_t i = 0; i < layers; ++i) {
    auto fetched = next.get();
    if (!fetched.ok()) return fetched.status();
    DecoderLayer layer;
    if (fetched->copy) {
      layer = std::move(fetched->layer);
      std::vector<at::Tensor> on_device = fetched->copy->Finish();
      size_t k = 0;
      for (auto& [name, t] : layer.Tensors()) *t = on_device[k++];
    } else {
      layer = ToDevice(fetched->layer, device, compute);
    }
    if (i + 1 < layers) next = prefetch(i + 1);
    clock.Charge("load");
    if (i < o.start_layer) {
      // Finished before a restart: its shard holds the codes; rebuild the layer from them and
      // only run it forward.
      if (!o.finished_shard) return absl::InternalError("resume without finished shards");
      // AWQ's next inputs are the float layer's outputs: run it before its codes replace it.
      if (awq) {
        hidden = RunLayerBatched(c, layer, hidden, rope, i, seq.batch_size, nullptr);
        clock.Charge("reforward");
      }
      auto path = o.finished_shard(i);
      if (!path.ok()) return path.status();
      std::vector<std::pair<std::string, int64_t>> names;
      if (auto s = RestoreLayer(c, layer, i, *path, shard, export_options, smooth, &names); !s.ok())
        return s;
      count_zeros(layer);
      for (const auto& [n, bytes] : names) {
        weight_map[n] = ShardName(i, shards);
        total_size += bytes;
      }
      if (calibrated && !awq) {
        hidden = RunLayerBatched(c, layer, hidden, rope, i, seq.batch_size, nullptr);
        clock.Charge("reforward");
      }
      continue;
    }
    if (smooth) {
      auto absmax = LayerInputAbsMax(c, layer, hidden, rope, i, seq.batch_size, seq.ranks);
      if (!absmax.ok()) return absmax.status();
      if (auto s = SmoothDecoderLayer(c, layer, *absmax, o.smoothquant_alpha); !s.ok()) return s;
      // The rescaled norms as the shard stores them (float16), so that the next layers see what a
      // loader (or a resumed run) computes.
      for (auto& [name, t] : layer.Tensors()) {
        if (name.find("norm") != std::string::npos) *t = t->to(at::kHalf).to(t->scalar_type());
      }
      clock.Charge("smooth");
    }
    // GPTQ overwrites `hidden` with the layer's outputs in place; W8A8 reads the inputs again.
    const bool reads_inputs_again = o.activations != ActivationQuant::Kind::kNone || smooth;
    const at::Tensor layer_inputs = gptq && reads_inputs_again ? hidden.clone() : hidden;
    auto quantized = float4 ? Float4Layer(layer, i, *o.float4, clock)
                     : awq  ? AwqLayer(c, layer, hidden, rope, i, seq, clock)
                            : QuantizeDecoderLayer(c, layer, hidden, rope, i, layer_options);
    if (!quantized.ok()) return quantized.status();
    if (o.activations != ActivationQuant::Kind::kNone) {
      if (auto s = SetInputQuant(c, layer, layer_inputs, rope, i, seq.batch_size, o.activations,
                                 seq.ranks);
          !s.ok())
        return s;
      // The next layer sees this one as it will run: weights and inputs quantized.
      if (calibrated)
        hidden = RunLayerBatched(c, layer, layer_inputs, rope, i, seq.batch_size, nullptr);
      clock.Charge("activation scales");
    } else if (smooth && !gptq) {
      hidden = RunLayerBatched(c, layer, layer_inputs, rope, i, seq.batch_size, nullptr);
    }
    for (const QuantizedLinear& q : *quantized) result.reports.push_back(q.report);
    count_zeros(layer);
    if (writes) {
      auto tensors = LayerShardTensors(c, layer, i, *quantized, shard);
      if (!tensors.ok()) return tensors.status();
      clock.Charge("pack");
      if (auto s = emit(i, ShardName(i, shards), *std::move(tensors)); !s.ok()) return s;
    }
    if (o.on_progress) {
      const int64_t completed = writes ? durable_layers.load() : i + 1;
      if (auto s = o.on_progress(completed, total_steps, "layers"); !s.ok()) return s;
    }
  }
  hidden = at::Tensor();

  if (auto s = writer.Drain(); !s.ok()) return s;
  clock.Charge("write (waiting for the writer)");
  if (o.on_progress) {
    if (auto s = o.on_progress(layers, total_steps, "layers"); !s.ok()) return s;
  }
  // The index and config.json, once every shard's tensors are known.
  if (writes) {
    json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
    const std::string path = (fs::path(out_dir) / "model.safetensors.index.json").string();
    std::ofstream(path) << index.dump(2) << "\n";
    if (float4) {
      if (auto s = WriteBnb4bitConfig(out_dir, c, *o.float4, shard.stored); !s.ok()) return s;
    } else if (sparse24) {
      const double sparsity = static_cast<double>(result.zero_weights) /
                              static_cast<double>(std::max<int64_t>(result.linear_weights, 1));
      if (auto s = WriteSparse24Config(out_dir, c, shard.stored, sparsity); !s.ok()) return s;
    } else if (packed) {
      if (auto s = WriteQuantizedConfig(out_dir, c, export_options); !s.ok()) return s;
    } else {
      LlamaConfig plain = c;
      plain.torch_dtype = shard.stored == at::kBFloat16 ? "bfloat16"
                          : shard.stored == at::kFloat  ? "float32"
                                                        : "float16";
      // A quantized input's quantization_config describes its layout, not this one.
      json extra = json::parse(plain.extra_json, nullptr, false);
      if (extra.is_object() && extra.erase("quantization_config") > 0)
        plain.extra_json = extra.dump();
      std::ofstream(fs::path(out_dir) / "config.json") << LlamaConfigToJson(plain);
    }
    for (const char* name : {"model.safetensors.index.json", "config.json"}) {
      const std::string file = (fs::path(out_dir) / name).string();
      bytes_written += static_cast<int64_t>(fs::file_size(file, ec));
      if (o.on_file) {
        if (auto s = o.on_file(-1, file, name); !s.ok()) return s;
      }
    }
  }
  if (o.on_progress) {
    if (auto s = o.on_progress(total_steps, total_steps, "layers"); !s.ok()) return s;
  }
  clock.Charge("write (waiting for the writer)");
  result.phase_seconds = clock.seconds();
  result.phase_seconds["write (writer thread, overlapped)"] = writer.busy_seconds();
  result.bytes_written = bytes_written;
  // Sizes from the config's shapes.
  for (int64_t i = 0; i < layers && !prune_only; ++i) {
    for (const LinearShape& l : DecoderLinearShapes(c)) {
      QuantSpec spec = seq.gptq.quant;
      spec.bits = LinearBits(seq, i, l.name);
      result.quantized.weights += l.out * l.in;
      result.quantized.bits +=
          l.out * l.in * (float4 ? Float4BitsPerWeight(*o.float4) : BitsPerWeight(spec, l.in));
    }
  }
  for (const auto& [name, shape] : CheckpointTensorShapes(c)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    result.parameters += n;
  }
  return result;
}

absl::StatusOr<std::vector<LinearSensitivity>> MeasureLinearSensitivity(
    const std::string& model_dir, const at::Tensor& calibration, const StreamingQuantizeOptions& o,
    const std::vector<int>& bits) {
  c10::NoGradGuard no_grad;
  const SequentialOptions& seq = o.sequential;
  const bool gptq = seq.method == SequentialOptions::Method::kGptq;
  if (!gptq && seq.method != SequentialOptions::Method::kRtn)
    return absl::InvalidArgumentError("mixed precision: method must be rtn or gptq");
  auto config = LoadLlamaConfig(model_dir);
  if (!config.ok()) return config.status();
  const LlamaConfig& c = *config;
  if (!FusedLinears(c).empty())
    return absl::UnimplementedError(absl::StrCat("mixed precision is not measured for ",
                                                 c.model_type, " (fused projections) yet"));
  auto reader = CheckpointReader::Open(model_dir);
  if (!reader.ok()) return reader.status();
  const CheckpointReader& weights = **reader;
  SQ_ASSIGN_OR_RETURN(const InputLayers input, OpenInputLayers(model_dir, c, weights));
  const LlamaModel::TensorSource& dense = input.dense;
  const std::optional<StoredLoraAdapters>& adapters = input.adapters;
  const at::Device device = seq.device;
  const at::ScalarType compute = device.is_cuda() ? at::kBFloat16 : at::kFloat;
  for (const LinearShape& l : DecoderLinearShapes(c)) {
    for (int b : bits) {
      GptqOptions options = seq.gptq;
      options.quant.bits = b;
      if (auto s = ValidateGptqOptions(options, l.in); !s.ok())
        return absl::InvalidArgumentError(
            absl::StrCat(l.name, " (", l.in, " inputs) at ", b, " bits: ", s.message()));
    }
  }
  auto embedded = EmbedCalibration(c, weights, calibration, seq, compute, "mixed precision");
  if (!embedded.ok()) return embedded.status();
  at::Tensor hidden = *std::move(embedded);
  const RotaryTables rope = MakeRotaryTables(c, calibration.size(1), device, compute);

  std::vector<LinearSensitivity> out;
  const int64_t layers = c.num_hidden_layers;
  for (int64_t i = 0; i < layers; ++i) {
    auto host =
        ReadLayer(c, weights, i, compute, /*pin=*/false, dense, adapters ? &*adapters : nullptr);
    if (!host.ok()) return host.status();
    DecoderLayer layer = ToDevice(*host, device, compute);
    LayerHessianObserver observer(c, device);
    hidden = RunLayerBatched(c, layer, hidden, rope, i, seq.batch_size, &observer);
    // One Hessian (and for GPTQ one factorization) per distinct input, in the layer's order.
    const HessianAccumulator* prepared_for = nullptr;
    at::Tensor h;
    std::optional<GptqSolver> solver;
    for (auto& [name, linear] : layer.Linears()) {
      const HessianAccumulator& acc = observer.For(name);
      if (&acc != prepared_for) {
        auto global = GangHessian(acc, seq.ranks);
        if (!global.ok()) return global.status();
        h = *std::move(global);
        if (gptq) {
          auto s = GptqSolver::Prepare(h, seq.gptq);
          if (!s.ok())
            return absl::Status(s.status().code(),
                                absl::StrCat(LayerPrefix(i), name, ": ", s.status().message()));
          solver = *std::move(s);
        }
        prepared_for = &acc;
      }
      const at::Tensor w = linear->weight.to(at::kFloat);
      auto errors = ErrorByWidth(w, h, bits, seq.gptq.quant, gptq ? &*solver : nullptr);
      if (!errors.ok())
        return absl::Status(errors.status().code(),
                            absl::StrCat(LayerPrefix(i), name, ": ", errors.status().message()));
      LinearSensitivity l{LayerPrefix(i) + name, w.size(0), w.size(1), *std::move(errors)};
      out.push_back(std::move(l));
    }
    if (o.on_progress) {
      if (auto s = o.on_progress(i + 1, layers, "sensitivity"); !s.ok()) return s;
    }
  }
  // In a gang every rank measured the same (its Hessians are the gang's); rank 0's figures are
  // taken by all, so that every rank plans alike whatever the last bits of each device's sums.
  if (seq.ranks != nullptr && seq.ranks->world_size() > 1) {
    at::Tensor errors =
        at::empty({static_cast<int64_t>(out.size()), static_cast<int64_t>(bits.size())},
                  at::TensorOptions().dtype(at::kDouble).device(device));
    at::Tensor host = errors.to(at::kCPU);
    for (size_t k = 0; k < out.size(); ++k)
      for (size_t j = 0; j < bits.size(); ++j) host[k][j] = out[k].error_by_bits.at(bits[j]);
    errors.copy_(host);
    if (auto s = seq.ranks->Broadcast({errors}, 0); !s.ok()) return s;
    host = errors.to(at::kCPU);
    for (size_t k = 0; k < out.size(); ++k)
      for (size_t j = 0; j < bits.size(); ++j)
        out[k].error_by_bits[bits[j]] = host[k][j].item<double>();
  }
  return out;
}

}  // namespace squeeze
