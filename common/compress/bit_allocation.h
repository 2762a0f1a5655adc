// Mixed precision: a bit width per linear layer, chosen to fit a size budget with the least total
// sensitivity (the output error each linear adds when it alone is quantized at that width). This
// is a multiple-choice knapsack; AllocateBits solves it exactly by dynamic programming over the
// budget cut into `resolution` units, each choice's cost rounded up to whole units. Rounding up
// means a solution never exceeds the budget; it can miss a better one only by the rounding, at
// most one unit per linear (with the default 20,000 units, 224 linears of an 8B model: 1.1%).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace squeeze {

struct BitChoice {
  int bits = 4;
  double cost_bits = 0;    // what the linear stores at this width: codes plus scales and zeros
  double sensitivity = 0;  // the output error it adds at this width (lower is better)
};

struct LinearCandidates {
  std::string name;  // "model.layers.3.mlp.down_proj"
  std::vector<BitChoice> choices;
};

struct BitAllocation {
  std::vector<int> bits;  // one per linear, in the order given
  double cost_bits = 0;
  double sensitivity = 0;
};

// InvalidArgument when a linear has no choices, or when even the cheapest choice of every linear
// exceeds `budget_bits` (the message gives the smallest budget that fits).
absl::StatusOr<BitAllocation> AllocateBits(const std::vector<LinearCandidates>& linears,
                                           double budget_bits, int64_t resolution = 20000);

}  // namespace squeeze
