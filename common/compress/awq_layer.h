// AWQ (awq.h) over one decoder layer, in AutoAWQ's order. The inputs of every linear are taken
// from the layer in float precision. Scales are searched for the four groups that share an input
// and folded into what produces it:
//   q/k/v    (block: the attention)   into the input norm
//   o_proj   (when v_proj's outputs are its inputs, i.e. no grouped queries)   into v_proj's rows
//   gate/up  (block: the MLP)         into the MLP's input norm
//   down     into up_proj's rows
// Then every linear but q/k is clipped (their outputs meet in a product, too far from the layer's
// output to clip by), and each is rounded to nearest.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/compress/awq.h"
#include "common/model/llama_model.h"

namespace squeeze {

struct AwqLinear {
  std::string name;  // "self_attn.q_proj"
  QuantizedWeight weight;
  double alpha = 0.0;  // the scale exponent of its group (0: unscaled)
  // Its group's mean squared output error at that alpha (o_proj without its own search: 0).
  double error = 0.0;
};

// `hidden` [N, L, hidden] holds the layer's inputs for the calibration windows; it becomes the
// unquantized layer's output, computed in the layer's dtype (AWQ does not carry one layer's
// rounding into the next one's inputs). The searches run in float32 on options.search_windows of
// the windows. Every linear's weight becomes its dequantized value; norms and producers hold the
// folded scales.
absl::StatusOr<std::vector<AwqLinear>> AwqQuantizeDecoderLayer(
    const LlamaConfig& config, DecoderLayer& layer, at::Tensor& hidden, const RotaryTables& rope,
    int64_t index, const AwqOptions& options);

}  // namespace squeeze
