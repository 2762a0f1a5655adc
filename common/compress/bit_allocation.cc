#include "common/compress/bit_allocation.h"

#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace squeeze {

absl::StatusOr<BitAllocation> AllocateBits(const std::vector<LinearCandidates>& linears,
                                           double budget_bits, int64_t resolution) {
  if (resolution < 1) return absl::InvalidArgumentError("resolution: must be positive");
  double cheapest_total = 0;
  for (const LinearCandidates& l : linears) {
    if (l.choices.empty())
      return absl::InvalidArgumentError(absl::StrCat(l.name, ": no bit width to choose from"));
    double cheapest = std::numeric_limits<double>::infinity();
    for (const BitChoice& c : l.choices) cheapest = std::min(cheapest, c.cost_bits);
    cheapest_total += cheapest;
  }
  if (cheapest_total > budget_bits) {
    return absl::InvalidArgumentError(absl::StrCat("the budget of ", budget_bits / 8,
                                                   " bytes is below the smallest the "
                                                   "candidate widths allow (",
                                                   cheapest_total / 8, " bytes)"));
  }
  // Costs that are whole numbers of bits share a unit, their greatest common divisor (for code
  // bits, the gcd of the layers' sizes: 8M bits for Llama-3-8B, ~2,900 units at 3.5 bits). When
  // the budget holds few enough of them the program runs on that unit and is exact.
  int64_t common = 0;
  bool whole = true;
  for (const LinearCandidates& l : linears) {
    for (const BitChoice& c : l.choices) {
      if (c.cost_bits < 0 || c.cost_bits > 9e15 || c.cost_bits != std::floor(c.cost_bits)) {
        whole = false;
      } else {
        common = std::gcd(common, static_cast<int64_t>(c.cost_bits));
      }
    }
  }
  double unit = budget_bits / static_cast<double>(resolution);
  if (whole && common > 0 && budget_bits / static_cast<double>(common) <= kExactUnits) {
    unit = static_cast<double>(common);
    resolution = static_cast<int64_t>(std::floor(budget_bits / unit));
  }
  const double inf = std::numeric_limits<double>::infinity();
  // best[u]: the least sensitivity of the linears so far at a total cost of exactly u units.
  std::vector<double> best(resolution + 1, inf), next(resolution + 1);
  best[0] = 0;
  // choice[i][u]: the choice of linear i on the best path to u units after it.
  std::vector<std::vector<int16_t>> choice(linears.size(),
                                           std::vector<int16_t>(resolution + 1, -1));
  for (size_t i = 0; i < linears.size(); ++i) {
    std::fill(next.begin(), next.end(), inf);
    const std::vector<BitChoice>& choices = linears[i].choices;
    for (size_t k = 0; k < choices.size(); ++k) {
      const double units = std::ceil(choices[k].cost_bits / unit - 1e-9);
      if (units > static_cast<double>(resolution)) continue;
      const int64_t cost = static_cast<int64_t>(units);
      for (int64_t u = cost; u <= resolution; ++u) {
        if (best[u - cost] == inf) continue;
        const double value = best[u - cost] + choices[k].sensitivity;
        if (value < next[u]) {
          next[u] = value;
          choice[i][u] = static_cast<int16_t>(k);
        }
      }
    }
    best.swap(next);
  }
  int64_t end = -1;
  for (int64_t u = 0; u <= resolution; ++u) {
    if (best[u] < inf && (end < 0 || best[u] < best[end])) end = u;
  }
  if (end < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the budget of ", budget_bits / 8, " bytes fits no choice once costs are rounded to ",
        resolution, " units; use a larger budget"));
  }
  BitAllocation out;
  out.bits.resize(linears.size());
  for (size_t i = linears.size(); i-- > 0;) {
    const int k = choice[i][end];
    const BitChoice& c = linears[i].choices[k];
    out.bits[i] = c.bits;
    out.cost_bits += c.cost_bits;
    out.sensitivity += c.sensitivity;
    end -= static_cast<int64_t>(std::ceil(c.cost_bits / unit - 1e-9));
  }
  return out;
}

}  // namespace squeeze
