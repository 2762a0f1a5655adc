// libFuzzer target: a safetensors header against a data region whose size the first 4 bytes give.
// Every accepted entry must lie inside the region, and the entries must cover it exactly.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/tensor/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const uint64_t data_size = (uint64_t{data[0]} | uint64_t{data[1]} << 8) * 16;
  const std::string text(reinterpret_cast<const char*>(data) + 4, size - 4);
  auto header = squeeze::ParseSafetensorsHeader(text, data_size, "fuzz.safetensors");
  if (!header.ok()) return 0;
  uint64_t covered = 0;
  for (const squeeze::TensorInfo& t : header->tensors) {
    if (t.offset + t.nbytes > data_size || t.offset != covered) __builtin_trap();
    covered += t.nbytes;
  }
  if (covered != data_size) __builtin_trap();
  return 0;
}
