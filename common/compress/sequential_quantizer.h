// Layer-by-layer quantization of a whole model: the model stays on the host, one decoder layer at a
// time goes to the device with the calibration activations, its linear layers are quantized in
// "true sequential" order (q/k/v, then o, then gate/up, then down, each seeing the inputs produced
// by the already-quantized sublayers before it), and the quantized layer's outputs become the next
// layer's inputs. Device memory stays at about one layer, its Hessians and the activations.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/compress/awq.h"
#include "common/compress/float4.h"
#include "common/compress/gptq.h"
#include "common/data/text_dataset.h"
#include "common/dist/collectives.h"
#include "common/model/llama_model.h"

namespace squeeze {

struct CalibrationOptions {
  int64_t num_samples = 128;
  int64_t seq_len = 256;
  uint64_t seed = 0;
};

// N windows of L tokens ([N, L] int64): an equal share per category (examples without one form
// their own), the remainder to the largest categories, each window drawn at random from the
// category's examples laid end to end. InvalidArgument when there is nothing to sample.
absl::StatusOr<at::Tensor> SampleCalibration(const std::vector<TextExample>& examples,
                                             const CalibrationOptions& options);

struct LinearReport {
  int64_t layer = 0;
  std::string name;
  double loss = 0.0;  // GPTQ's reconstruction loss (0 for RTN)
  double seconds = 0.0;
  int bits = 0;  // the width it was quantized at
};

// Wall time by phase ("forward", "hessian", "solve", "reforward", ...), summed over layers. On
// CUDA every phase boundary synchronizes the device, so that time is charged to the phase that
// spent it (a few hundred synchronizations for a whole model).
class PhaseClock {
 public:
  explicit PhaseClock(bool sync_cuda = false) : sync_cuda_(sync_cuda) {}
  // Charges the time since the last call (or construction) to `phase`.
  void Charge(const std::string& phase);
  const std::map<std::string, double>& seconds() const { return seconds_; }

 private:
  bool sync_cuda_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  std::map<std::string, double> seconds_;
};

struct SequentialOptions {
  // kSparseGpt prunes only (the weights stay floating point); kGptq with `sparsity` set prunes
  // and quantizes in one pass.
  enum class Method { kRtn, kGptq, kAwq, kSparseGpt } method = Method::kGptq;
  GptqOptions gptq;  // gptq.quant is used by RTN and AWQ too; damp and block_size by SparseGPT
  // SparseGPT's target (gptq.h), for kSparseGpt and optionally kGptq.
  SparsityRule sparsity;
  // The exact zeros a linear already holds (a pruned model) stay zeros: GPTQ's fixed mask, and
  // where SparseGPT starts from (its sparsity then counts them). Not with act_order (SparseGPT's
  // update keeps the column order).
  bool keep_zeros = true;
  // kSparseGpt: the dtype the pruned weights are stored in. The layer runs on them rounded to it,
  // so that later sublayers and layers see what a loader computes (and a resumed run, which
  // reads them back, sees the same).
  at::ScalarType pruned_dtype = at::kFloat;
  AwqOptions awq;  // AWQ's searches (its quant is gptq.quant)
  at::Device device = at::kCPU;
  int64_t batch_size = 16;  // calibration windows per forward pass
  // The MLP activations of all calibration windows are kept between down_proj's Hessian and the
  // layer's output when they fit in this many bytes (7.5 GB for 128 x 2048 tokens of an 8B
  // model), and computed again otherwise.
  int64_t keep_activation_bytes = int64_t{8} << 30;
  int64_t start_layer = 0;  // layers before it are already quantized (resume)
  // Mixed precision: the width of each linear named here ("model.layers.3.mlp.down_proj");
  // the others take gptq.quant.bits.
  std::map<std::string, int> bits_by_module;
  // Called with each linear layer's codes, scales and zero points (for packed export).
  std::function<void(int64_t layer, const std::string& name, const QuantizedWeight&)> on_linear;
  // Called after each layer with its reports; an error stops the run (cancellation).
  std::function<absl::Status(int64_t layer, const std::vector<LinearReport>&)> on_layer_done;
  // Where phase times go (optional).
  PhaseClock* clock = nullptr;
  // A gang of ranks quantizing together (optional): each rank holds its share of the calibration
  // windows; Hessians are summed over ranks, each linear is solved on one rank (the largest
  // first, each to the least loaded rank) and its codes broadcast to all.
  RankCollectives* ranks = nullptr;
};

// The width linear `name` ("self_attn.q_proj") of layer `layer` is quantized at.
int LinearBits(const SequentialOptions& options, int64_t layer, const std::string& name);

// One linear layer's result in QuantizeDecoderLayer.
struct QuantizedLinear {
  std::string name;        // "self_attn.q_proj"
  QuantizedWeight weight;  // empty for Method::kSparseGpt
  LinearReport report;
  at::Tensor pruned;    // Method::kSparseGpt: the pruned weight, float32, exact zeros
  Float4Weight float4;  // NF4 / FP4 (the streaming quantizer): the codes, when `packed` is set
};

// Quantizes decoder layer `index` (on the device, in the dtype it computes in) in the true
// sequential order, in stages, so that the calibration data passes through the layer about twice
// in all: q/k/v from the normalized inputs; o_proj from the attention of the quantized q/k/v
// (kept); gate/up from the residual after the quantized o_proj (kept); down_proj from their
// activation; then the quantized layer's output replaces `hidden` ([N, L, hidden], GPTQ only).
// Linears reading the same inputs share one Hessian and one factorization. Each linear's weight
// is replaced by its dequantized value in the layer's dtype.
absl::StatusOr<std::vector<QuantizedLinear>> QuantizeDecoderLayer(
    const LlamaConfig& config, DecoderLayer& layer, at::Tensor& hidden, const RotaryTables& rope,
    int64_t index, const SequentialOptions& options);

// The Hessian over every rank's windows (the sum of each rank's n x H over the total n); `acc`'s
// own without a gang.
absl::StatusOr<at::Tensor> GangHessian(const HessianAccumulator& acc, RankCollectives* ranks);

// Embeddings of calibration windows [N, L], computed in batches, as float32 on `device`.
at::Tensor EmbedWindows(const LlamaModel& model, const at::Tensor& windows, at::Device device,
                        int64_t batch);
// One decoder layer over [N, L, hidden] inputs in batches of `batch` windows.
at::Tensor RunLayerBatched(const LlamaConfig& config, const DecoderLayer& layer,
                           const at::Tensor& inputs, const RotaryTables& rope, int64_t index,
                           int64_t batch, LinearObserver* observer);

// Weights in the decoder layers' linear layers, and the bits they take quantized with `spec`.
struct QuantizedSize {
  int64_t weights = 0;
  double bits = 0.0;
};
QuantizedSize QuantizedLinearSize(const LlamaModel& model, const QuantSpec& spec);

// Quantizes `model` in place (its tensors stay on their device and dtype). `calibration` [N, L] is
// needed for GPTQ only.
absl::StatusOr<std::vector<LinearReport>> QuantizeSequential(LlamaModel& model,
                                                             const at::Tensor& calibration,
                                                             const SequentialOptions& options);

}  // namespace squeeze
