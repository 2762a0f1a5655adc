// Shared by the CUDA kernel benchmarks: timing (mean seconds per call after a warm-up, the device
// synchronized around the timed calls), the --iterations flag, and Llama-3-8B's linears as vLLM
// runs them (q/k/v and gate/up fused).
#pragma once

#include <c10/cuda/CUDAFunctions.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "common/base/flags.h"

namespace squeeze {

inline double TimeCudaCalls(const std::function<void()>& fn, int iterations) {
  for (int i = 0; i < 10; ++i) fn();
  c10::cuda::device_synchronize();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) fn();
  c10::cuda::device_synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
         iterations;
}

struct LinearShape8B {
  const char* name;
  int64_t out, in;
};

inline std::vector<LinearShape8B> Llama8BFusedLinears() {
  return {{"qkv_proj", 6144, 4096},
          {"o_proj", 4096, 4096},
          {"gate_up_proj", 28672, 4096},
          {"down_proj", 4096, 14336}};
}

// The benchmark's --iterations (default 200), or -1 after printing why the flags are wrong.
inline int ParseIterations(int argc, char** argv) {
  Flags flags;
  flags.Value("iterations", "200");
  if (auto s = flags.Parse(std::vector<std::string>(argv + 1, argv + argc)); !s.ok()) {
    std::cerr << s << "\n";
    return -1;
  }
  return static_cast<int>(*flags.GetInt("iterations"));
}

}  // namespace squeeze
