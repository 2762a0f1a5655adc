// Which linear shapes the GPTQ layouts can hold, without libtorch: the worker checks it before
// quantizing, and the recipe check at submit with only the model's config.json.
#pragma once

#include <cstdint>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace squeeze {

// The GPTQ layouts pack `bits`-bit codes into 32-bit words along both the input (qweight) and
// the output (qzeros) dimension, so both must fill whole words.
inline absl::Status CheckGptqWordPacking(int64_t in, int64_t out, int bits) {
  if ((in * bits) % 32 != 0 || (out * bits) % 32 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ", out, "x", in, " layer does not pack into 32-bit words at ", bits,
                     " bits (need in and out multiples of ", 32 / std::gcd(32, bits), ")"));
  }
  return absl::OkStatus();
}

}  // namespace squeeze
