// Activation-aware weight quantization (Lin et al., 2023, "AWQ: Activation-aware Weight
// Quantization for LLM Compression and Acceleration"). Before round-to-nearest, every input
// channel j of the linears that read one input x is scaled by s_j = mean|x_j|^alpha (normalized so
// that max(s) * min(s) = 1), and 1/s_j is folded into what produces x (the preceding norm or
// linear), so the network computes the same function while salient channels (large activations)
// lose less to rounding. alpha is searched on a grid with the group's output error after real
// quantization as the objective; alpha = 0 (no scaling, plain RTN) is on the grid, so the search
// never does worse than RTN on its calibration data. An optional clipping search then shrinks the
// range of each (output row, input group) to the ratio that minimizes that group's output error.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/compress/rtn.h"

namespace squeeze {

struct AwqOptions {
  QuantSpec quant;  // bits and group_size; AWQ's grid is asymmetric (a zero point)
  int grid = 20;    // alpha in {0, 1/grid, ..., (grid - 1)/grid}
  bool clip = true;
  int clip_grid = 20;       // ratios 1, 1 - 1/clip_grid, ... down to 1 - max_shrink
  double max_shrink = 0.5;  // the smallest range tried is (1 - max_shrink) of the original
  // Output rows per step of the clip search: bounds its memory (a few float32 copies of that
  // many rows of the weight) and sets how many steps a linear takes.
  int64_t clip_rows = 4096;
  // Calibration windows the layer-level scale search evaluates its blocks on (evenly spaced); the
  // search costs grid x (one forward of the block) on them.
  int64_t search_windows = 32;
  // Called after each part of a layer's work (`awq: scales q/k/v`, `awq: clip`, ...) with its
  // name: a phase clock charges the time since the last part to it. Optional.
  std::function<void(const std::string& part)> on_part;
};

// The group's output for candidate weights (each [out_i, in], float32, on x's device), compared in
// the search against the output of the original weights. The default is the linears' own outputs;
// a layer can pass its attention or MLP block instead.
using AwqBlock = std::function<at::Tensor(const std::vector<at::Tensor>& weights)>;

struct AwqScales {
  at::Tensor scales;  // [in], float32: multiply the linears' input columns, divide the producer
  double alpha = 0.0;
  double error = 0.0;           // mean squared output error at the chosen alpha
  double error_unscaled = 0.0;  // the same at alpha = 0 (RTN)
};

// `x` [tokens, in] is the input the `weights` ([out_i, in] each) read. Weights are not changed.
absl::StatusOr<AwqScales> SearchAwqScales(const at::Tensor& x,
                                          const std::vector<at::Tensor>& weights,
                                          const AwqOptions& options, const AwqBlock& block = {});

// The clip search for one linear (its input already scaled): the largest |w| kept per output row
// and input group, [out, groups] float32, chosen by that group's share of the row's squared
// output error over every token of `x`. Apply with ClipWeight before quantizing.
absl::StatusOr<at::Tensor> SearchAwqClip(const at::Tensor& x, const at::Tensor& weight,
                                         const AwqOptions& options);
at::Tensor ClipWeight(const at::Tensor& weight, const at::Tensor& max_abs, int64_t group_size);

// Round-to-nearest and back ([out, in] float32): what a quantized linear computes with.
at::Tensor FakeQuantize(const at::Tensor& weight, const QuantSpec& spec);

}  // namespace squeeze
