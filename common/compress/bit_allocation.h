// Mixed precision: a bit width per linear layer, chosen to fit a size budget with the least total
// sensitivity (the output error each linear adds when it alone is quantized at that width). This
// is a multiple-choice knapsack; AllocateBits solves it by dynamic programming over the budget in
// units. When every cost is a whole number of bits and their greatest common divisor cuts the
// budget into at most kExactUnits units, that divisor is the unit and the answer is exact (code
// bits per weight always are: the unit is the gcd of the layers' sizes). Otherwise the budget is
// cut into `resolution` units and each choice's cost rounded up to whole units: a solution never
// exceeds the budget, and can miss a better one only by the rounding, at most one unit per
// linear (with the default 20,000 units, 128 groups of an 8B model: 0.64%).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace squeeze {

inline constexpr int64_t kExactUnits = 200000;

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
