// Quantizes a checkpoint without ever holding the model: decoder layers stream from the
// memory-mapped safetensors in their stored dtype (the next one read on a second thread while
// this one is solved), go to the device one at a time with the calibration activations, and go
// back out packed, one safetensors shard per layer, written and handed on (to the store) by a
// writer thread while the next layer computes. Host memory stays at about two layers plus the
// mapped pages; device memory at one layer, its Hessians and the activations.
//
// The output is a Hugging Face sharded checkpoint in a packed layout (quantized_checkpoint.h):
// model-000{i+1}-of-000{N+1}.safetensors holds decoder layer i, the last shard the embeddings,
// final norm and head (float16), with model.safetensors.index.json and config.json. In the GPTQ
// layout, layers whose shapes do not pack into 32-bit words are written dequantized (format
// "dense"); the AWQ layout refuses such shapes.
//
// With Method::kSparseGpt (prune only) the same pass writes the pruned model in floating point:
// every tensor in `float_dtype`, the linears dense or in compressed-tensors' sparse-24-bitmask
// layout (sparse24_checkpoint.h), and resumes from its finished shards the same way.
//
// With `float4` set (and Method::kRtn) every decoder linear is quantized to NF4 or FP4 blockwise
// (float4.h) and written in bitsandbytes' 4-bit layout, the other tensors in `float_dtype`; no
// calibration.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/compress/float4.h"
#include "common/compress/mixed_precision.h"
#include "common/compress/quantized_checkpoint.h"
#include "common/compress/sequential_quantizer.h"

namespace squeeze {

struct StreamingQuantizeOptions {
  // Method, GPTQ options, device, batch size, and the gang's ranks (callbacks unused). In a gang
  // every rank calls this with the same calibration, takes its share of it, and only rank 0
  // writes files.
  SequentialOptions sequential;
  QuantizedFormat format = QuantizedFormat::kGptq;
  // GPTQ layouts: a shape that does not fill 32-bit words makes the whole output dense (float16
  // values of the codes) instead of an error. Only when asked for (the recipe's dense_fallback).
  bool dense_fallback = false;
  // W8A8 (format kCompressedTensorsInt8): how every linear's inputs are quantized, and
  // SmoothQuant's migration strength (negative: off). Static scales are each linear's input
  // absmax / 127 over the calibration windows, on the layer with its quantized weights and the
  // outputs of the quantized layers before it; they and SmoothQuant need calibration windows.
  ActivationQuant::Kind activations = ActivationQuant::Kind::kNone;
  double smoothquant_alpha = -1.0;
  // Method::kSparseGpt: how the pruned linears are stored (`format` does not apply).
  enum class PrunedLayout { kDense, kSparse24Bitmask } pruned_layout = PrunedLayout::kDense;
  // NF4 / FP4 in bitsandbytes' layout instead of `format` (method kRtn).
  std::optional<Float4Options> float4;
  // Pruned and NF4 outputs: the dtype of every floating-point tensor stored.
  at::ScalarType float_dtype = at::kFloat;
  // Layers before it are finished: their shards exist (resume). `finished_shard(i)` gives the
  // local path of layer i's shard, read back to rebuild the layer's quantized weights.
  int64_t start_layer = 0;
  std::function<absl::StatusOr<std::string>(int64_t layer)> finished_shard;
  // Called on the writer thread with each finished file of the output (a layer's shard, then the
  // last shard, the index and config.json): the callee may move the file away (into the store).
  // `layer` is -1 for files that are not a layer's shard.
  std::function<absl::Status(int64_t layer, const std::string& path, const std::string& name)>
      on_file;
  // Progress in layers, then one more step for the last shard and the index; an error stops the
  // run (cancellation). Called on the compute thread after each layer; `completed` counts the
  // layers whose shards on_file has taken (a writer thread lags the compute by up to a layer), so
  // a task killed after a report resumes at least that far. Ranks that do not write count
  // computed layers.
  std::function<absl::Status(int64_t completed, int64_t total, const std::string& phase)>
      on_progress;
};

struct StreamingQuantizeResult {
  std::vector<LinearReport> reports;
  std::map<std::string, double> phase_seconds;  // load, embed, forward, hessian, solve, ...
  std::string format;                           // QuantizedFormatName, or "dense"
  int64_t bytes_written = 0;                    // every output file, once
  QuantizedSize quantized;
  int64_t parameters = 0;
  // Method::kSparseGpt: over every decoder linear, resumed layers included, its weights and those
  // exactly zero (0 for the other methods).
  int64_t linear_weights = 0;
  int64_t zero_weights = 0;
};

// Quantizes the model in `model_dir` into files handed to `on_file`, written under `out_dir`
// first. `calibration` [N, L] token ids (GPTQ, AWQ, static activation scales, SmoothQuant).
absl::StatusOr<StreamingQuantizeResult> QuantizeCheckpointStreaming(
    const std::string& model_dir, const at::Tensor& calibration, const std::string& out_dir,
    const StreamingQuantizeOptions& options);

// Mixed precision's measurement: each decoder linear's output error tr(dW H dW^T) when it alone
// is quantized at each width in `bits`, with H = 2 X^T X / n from the calibration inputs of the
// unquantized model (each layer sees the float outputs of the layers before it). dW is what the
// stage's method leaves: GPTQ's solution (one factorization per input, solved at every width) or
// RTN's. Layers stream as in QuantizeCheckpointStreaming; progress goes to options.on_progress
// as "sensitivity". In a gang the Hessians are the gang's and every rank gets rank 0's figures.
absl::StatusOr<std::vector<LinearSensitivity>> MeasureLinearSensitivity(
    const std::string& model_dir, const at::Tensor& calibration,
    const StreamingQuantizeOptions& options, const std::vector<int>& bits);

}  // namespace squeeze
