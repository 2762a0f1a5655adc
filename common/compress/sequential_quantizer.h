// Layer-by-layer quantization of a whole model: the model stays on the host, one decoder layer at a
// time goes to the device with the calibration activations, its linear layers are quantized in
// "true sequential" order (q/k/v, then o, then gate/up, then down, each seeing the inputs produced
// by the already-quantized sublayers before it), and the quantized layer's outputs become the next
// layer's inputs. Device memory stays at about one layer, its Hessians and the activations.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/compress/gptq.h"
#include "common/data/text_dataset.h"
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
};

struct SequentialOptions {
  enum class Method { kRtn, kGptq } method = Method::kGptq;
  GptqOptions gptq;  // gptq.quant is used by RTN too
  at::Device device = at::kCPU;
  int64_t batch_size = 16;  // calibration windows per forward pass
  int64_t start_layer = 0;  // layers before it are already quantized (resume)
  // Called with each linear layer's codes, scales and zero points (for packed export).
  std::function<void(int64_t layer, const std::string& name, const QuantizedWeight&)> on_linear;
  // Called after each layer with its reports; an error stops the run (cancellation).
  std::function<absl::Status(int64_t layer, const std::vector<LinearReport>&)> on_layer_done;
};

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
