// Iterative pruning with recovery (gradual magnitude pruning, Zhu & Gupta 2017, in its simplest
// linear form): `rounds` prunes, one every `recover_steps` training steps from step 0, each to the
// next equal fraction of the final sparsity, the steps between them training the pruned model.
#pragma once

#include <cstdint>
#include <optional>

namespace squeeze {

struct PruneRound {
  int64_t round = 0;      // 0-based
  double sparsity = 0.0;  // what this round prunes to
};

struct PruneSchedule {
  int64_t rounds = 1;
  int64_t recover_steps = 1;
  double final_sparsity = 0.5;

  // The round that prunes before training step `step`, if one does.
  std::optional<PruneRound> RoundAt(int64_t step) const {
    if (rounds <= 0 || recover_steps <= 0 || step < 0 || step % recover_steps != 0)
      return std::nullopt;
    const int64_t round = step / recover_steps;
    if (round >= rounds) return std::nullopt;
    return PruneRound{round, final_sparsity * static_cast<double>(round + 1) / rounds};
  }
};

}  // namespace squeeze
