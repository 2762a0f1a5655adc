// Per-channel scales moved between a linear's inputs and what produces them, which leaves the
// layer's function unchanged in exact arithmetic: AWQ and SmoothQuant both fold x / s into the
// norm or linear before and W * s into the linears after.
#pragma once

#include <ATen/ATen.h>

#include "common/model/llama_model.h"

namespace squeeze {

// Divides a norm's effective scale by `s`: w / s, or for (1 + w) norms (1 + w) / s - 1.
void FoldIntoNorm(const LlamaConfig& c, at::Tensor& norm, const at::Tensor& s);

// Multiplies the input columns of `linear` by `s`.
void ScaleInputs(Linear& linear, const at::Tensor& s);

// Divides the output rows (and bias) of `linear` by `s`.
void ScaleOutputs(Linear& linear, const at::Tensor& s);

// The norm that feeds the MLP: post_attention_layernorm, or Gemma's pre_feedforward_layernorm.
at::Tensor& MlpInputNorm(const LlamaConfig& c, DecoderLayer& layer);

}  // namespace squeeze
