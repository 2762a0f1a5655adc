// Timing for the CUDA kernel benchmarks: mean seconds per call after a warm-up, the device
// synchronized around the timed calls.
#pragma once

#include <c10/cuda/CUDAFunctions.h>

#include <chrono>
#include <functional>

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

}  // namespace squeeze
