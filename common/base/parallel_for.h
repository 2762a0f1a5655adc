// Runs fn(0..n-1) on up to `max_threads` threads (the calling one among them), each taking the
// next index until none is left. For independent I/O- or hash-bound work items, such as the
// files of an artifact.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

namespace squeeze {

template <typename Fn>
void ParallelFor(size_t n, size_t max_threads, Fn fn) {
  const size_t threads = std::max<size_t>(1, std::min(n, max_threads));
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) fn(i);
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
}

// Threads for store transfers: every core, at most 16 (beyond that the disk or network is the
// limit, not hashing).
inline size_t TransferThreads() {
  return std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 16);
}

}  // namespace squeeze
