// SmoothQuant (Xiao et al., 2022): activations of LLMs have a few channels far larger than the
// rest, so a per-token INT8 grid sized by them rounds every other channel to a handful of steps.
// Dividing each input channel j by s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) and multiplying
// the weights' column j by it moves that range into the weights, which quantize per output
// channel and absorb it. The division folds into the norm before the linears (q/k/v after the
// input norm, gate/up after the MLP's norm), so the smoothed model computes the same function and
// costs nothing at run time. alpha = 0.5 is the paper's default for most models.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/model/llama_model.h"

namespace squeeze {

// Records, per linear of a layer, the per-channel absmax of its input over everything it sees.
class InputAbsMaxObserver : public LinearObserver {
 public:
  void OnLinearInput(int64_t layer, absl::string_view name, const at::Tensor& input) override;
  // [in] float32 per linear name ("self_attn.q_proj"); empty before any input.
  const std::map<std::string, at::Tensor>& absmax() const { return absmax_; }

 private:
  std::map<std::string, at::Tensor> absmax_;
};

// s_j = x_absmax_j^alpha / (max over the rows of every weight of |W_ij|)^(1 - alpha), kept in
// [1e-5, 1e5] (a channel the calibration never excites gets no extreme scale).
at::Tensor SmoothQuantScales(const at::Tensor& x_absmax, const std::vector<at::Tensor>& weights,
                             double alpha);

// Smooths q/k/v against the input norm and gate/up against the MLP's norm, from the absmax of
// their inputs (InputAbsMaxObserver over the calibration windows, on this layer unsmoothed).
absl::Status SmoothDecoderLayer(const LlamaConfig& c, DecoderLayer& layer,
                                const std::map<std::string, at::Tensor>& input_absmax,
                                double alpha);

}  // namespace squeeze
