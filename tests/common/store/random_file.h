// Incompressible test data: `bytes` of xorshift output, written in 8 MiB pieces.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <vector>

namespace squeeze::testing {

inline void WriteRandomFile(const std::filesystem::path& path, int64_t bytes,
                            uint64_t seed = 0x9e3779b97f4a7c15ull) {
  std::ofstream out(path, std::ios::binary);
  std::vector<uint64_t> block(1 << 20);
  uint64_t x = seed;
  for (int64_t written = 0; written < bytes;) {
    for (uint64_t& v : block) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      v = x;
    }
    const int64_t n =
        std::min<int64_t>(bytes - written, static_cast<int64_t>(block.size() * sizeof(uint64_t)));
    out.write(reinterpret_cast<const char*>(block.data()), n);
    written += n;
  }
}

}  // namespace squeeze::testing
