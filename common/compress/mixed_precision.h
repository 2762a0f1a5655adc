// Mixed precision: a bit width per linear layer of the decoder, chosen by sensitivity to fit a
// budget. The measurement (each linear's output error at each candidate width) needs the model
// and calibration inputs (streaming_quantizer.h); this file holds what does not: the size of a
// quantized model, the groups of linears that share a width, the allocation and its record.
// No libtorch, so the coordinator can check a budget at submit.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/llama_config.h"

namespace squeeze {

// Exactly one of average_bits (code bits per weight over the decoder's linears) and
// max_size_bytes (every tensor of the output checkpoint) is positive.
struct MixedPrecisionBudget {
  std::vector<int> bits = {2, 3, 4, 8};  // candidate widths
  double average_bits = 0.0;
  int64_t max_size_bytes = 0;
};

// Bits a [out, in] linear stores at `bits` in the GPTQ layout: the codes, per group a float16
// scale and a packed zero point, and g_idx (int32 per input).
double StoredLinearBits(int64_t out, int64_t in, int bits, int64_t group_size);
// Bytes of every tensor that is not a decoder linear's weight (embeddings, norms, head, biases),
// as the quantized checkpoint stores them (float16).
int64_t UnquantizedTensorBytes(const LlamaConfig& config);
// The checkpoint's tensor bytes with every linear at `bits`.
int64_t QuantizedCheckpointBytes(const LlamaConfig& config, int bits, int64_t group_size);

// The linears that must share a width because vLLM runs them as one fused matrix: a layer's
// q/k/v ("model.layers.3.self_attn.qkv") and gate/up ("model.layers.3.mlp.gate_up"); every other
// module is its own group.
std::string WidthGroupOf(const std::string& module);

// One linear's measured output error at each candidate width.
struct LinearSensitivity {
  std::string module;  // "model.layers.3.mlp.down_proj"
  int64_t out = 0, in = 0;
  std::map<int, double> error_by_bits;
};

struct MixedPrecisionPlan {
  std::map<std::string, int> bits_by_module;  // every decoder linear
  int base_bits = 0;                          // the most common width (by weights)
  double average_bits = 0.0;                  // code bits per weight
  int64_t checkpoint_bytes = 0;               // QuantizedCheckpointBytes at these widths
  double error = 0.0;                         // the sum of the chosen widths' errors
  std::vector<LinearSensitivity> linears;     // the measurements it was chosen from
};

// The widths with the least total error within `budget`, one per WidthGroupOf group (its
// error and size are its members' sums): an exact multiple-choice knapsack (bit_allocation.h).
// InvalidArgument naming the budget's field when nothing fits.
absl::StatusOr<MixedPrecisionPlan> PlanMixedPrecision(const LlamaConfig& config, int64_t group_size,
                                                      const MixedPrecisionBudget& budget,
                                                      std::vector<LinearSensitivity> linears);

// The plan as the mixed_precision.json file written next to the model (and kept with a
// task's checkpoint, so a resumed task quantizes at the widths it started with), and back.
std::string MixedPrecisionPlanJson(const MixedPrecisionPlan& plan,
                                   const MixedPrecisionBudget& budget);
absl::StatusOr<MixedPrecisionPlan> ParseMixedPrecisionPlan(const std::string& text,
                                                           const std::string& where);

}  // namespace squeeze
