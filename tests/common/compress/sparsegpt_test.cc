// SparseGPT against a straightforward implementation written here: column by column, the OBS
// update from the explicit inverse Hessian, which loses a row and column per eliminated input
// (H^-1 <- H^-1 - H^-1[:, j] H^-1[j, :] / H^-1[j, j]), with the mask chosen by OBS saliency
// w^2 / [H^-1]_jj (the paper's w^2 / [chol(H^-1)]_jj^2).
// The solver's lazy blocks and Cholesky rows must give the same weights; its masks must have the
// asked-for pattern, its zeros must be exact, and its output error must beat pruning alone.
#include <ATen/ATen.h>

#include "common/compress/gptq.h"
#include "common/compress/layer_sensitivity.h"
#include "gtest/gtest.h"

namespace squeeze {
namespace {

struct Problem {
  at::Tensor w, h;
};

Problem MakeProblem(int64_t rows, int64_t cols, uint64_t seed) {
  at::manual_seed(seed);
  const at::Tensor x =
      at::matmul(at::randn({512, cols}, at::kDouble),
                 at::randn({cols, cols}, at::kDouble) * 0.3 + at::eye(cols, at::kDouble));
  return {at::randn({rows, cols}, at::kDouble), 2.0 * x.t().matmul(x) / 512.0};
}

// The reference: every column in order, n:m masks chosen every m columns from the weights as they
// are then, unstructured masks chosen per block of `block` columns at its start.
at::Tensor ReferenceSparseGpt(const Problem& p, const SparsityRule& rule, int64_t block,
                              double damp) {
  at::Tensor w = p.w.clone();
  const int64_t rows = w.size(0), cols = w.size(1);
  at::Tensor h = p.h + at::eye(cols, at::kDouble) * (p.h.diagonal().mean() * damp);
  at::Tensor hinv = at::inverse(h);
  // [H^-1]_jj as each column meets it: the diagonal of the eliminated inverse at that time.
  std::vector<double> d(cols);
  {
    at::Tensor t = hinv.clone();
    for (int64_t j = 0; j < cols; ++j) {
      d[j] = t[j][j].item<double>();
      t = t - t.select(1, j).unsqueeze(1).matmul(t.select(0, j).unsqueeze(0)) / d[j];
    }
  }
  at::Tensor pruned = at::zeros({rows, cols}, at::kBool);
  for (int64_t j = 0; j < cols; ++j) {
    if (rule.n == 0 && j % block == 0) {
      const int64_t end = std::min(cols, j + block);
      at::Tensor s = w.slice(1, j, end).pow(2).clone();
      for (int64_t k = j; k < end; ++k) s.select(1, k - j).div_(d[k]);
      const int64_t count = static_cast<int64_t>(static_cast<double>(s.numel()) * rule.sparsity);
      at::Tensor order = at::argsort(s.flatten());
      for (int64_t t = 0; t < count; ++t) {
        const int64_t flat = order[t].item<int64_t>();
        pruned[flat / (end - j)][j + flat % (end - j)] = true;
      }
    }
    if (rule.n > 0 && j % rule.m == 0) {
      for (int64_t r = 0; r < rows; ++r) {
        at::Tensor s = w[r].slice(0, j, j + rule.m).pow(2).clone();
        for (int64_t k = 0; k < rule.m; ++k) s[k].div_(d[j + k]);
        at::Tensor order = at::argsort(s);
        for (int64_t t = 0; t < rule.n; ++t) pruned[r][j + order[t].item<int64_t>()] = true;
      }
    }
    const at::Tensor q = w.select(1, j).masked_fill(pruned.select(1, j), 0.0);
    const at::Tensor err = w.select(1, j) - q;
    // Every later column moves by err * H^-1[j, k] / H^-1[j, j]; then input j is eliminated.
    for (int64_t k = j + 1; k < cols; ++k)
      w.select(1, k).sub_(err * (hinv[j][k].item<double>() / hinv[j][j].item<double>()));
    w.select(1, j).copy_(q);
    hinv = hinv - hinv.select(1, j).unsqueeze(1).matmul(hinv.select(0, j).unsqueeze(0)) /
                      hinv[j][j].item<double>();
  }
  return w;
}

absl::StatusOr<SparseSolveResult> Solve(const Problem& p, const SparsityRule& rule, int64_t block,
                                        bool quantize = false, int bits = 4) {
  GptqOptions o;
  o.block_size = block;
  o.quant.group_size = 32;
  auto solver = GptqSolver::Prepare(p.h.to(at::kFloat), o);
  if (!solver.ok()) return solver.status();
  return solver->SolveSparse(p.w.to(at::kFloat), rule, quantize, bits);
}

TEST(SparseGptTest, UnstructuredMatchesTheColumnByColumnObsUpdate) {
  const Problem p = MakeProblem(12, 64, 1);
  SparsityRule rule;
  rule.sparsity = 0.5;
  auto got = Solve(p, rule, /*block=*/16);
  ASSERT_TRUE(got.ok()) << got.status();
  const at::Tensor want = ReferenceSparseGpt(p, rule, 16, 0.01);
  EXPECT_LT((got->weight.to(at::kDouble) - want).abs().max().item<double>(),
            1e-3 * want.abs().max().item<double>());
  EXPECT_TRUE(at::equal(got->keep, want != 0));
  // Half of every block of 16 columns, over all rows.
  for (int64_t b = 0; b < 64; b += 16)
    EXPECT_EQ(got->keep.slice(1, b, b + 16).sum().item<int64_t>(), 12 * 8);
  EXPECT_TRUE(at::equal(got->weight == 0, got->keep.logical_not())) << "zeros are exact";
}

TEST(SparseGptTest, TwoOfFourMatchesTheReferenceAndHasThePattern) {
  const Problem p = MakeProblem(8, 32, 2);
  SparsityRule rule;
  rule.n = 2;
  rule.m = 4;
  auto got = Solve(p, rule, /*block=*/8);
  ASSERT_TRUE(got.ok()) << got.status();
  const at::Tensor want = ReferenceSparseGpt(p, rule, 8, 0.01);
  EXPECT_LT((got->weight.to(at::kDouble) - want).abs().max().item<double>(),
            1e-3 * want.abs().max().item<double>());
  EXPECT_TRUE(at::equal(got->keep.view({8, 8, 4}).sum(2), at::full({8, 8}, 2, at::kLong)))
      << "exactly 2 of every 4 consecutive inputs kept";
}

TEST(SparseGptTest, TheUpdateBeatsPruningAloneAndJointQuantizationKeepsExactZeros) {
  const Problem p = MakeProblem(32, 128, 3);
  SparsityRule rule;
  rule.sparsity = 0.5;
  auto sparse = Solve(p, rule, 32);
  ASSERT_TRUE(sparse.ok()) << sparse.status();
  const at::Tensor h = p.h.to(at::kFloat), w = p.w.to(at::kFloat);
  // Pruning the same weights without updating the others.
  const double no_update = OutputError(w, w * sparse->keep, h);
  const double with_update = OutputError(w, sparse->weight, h);
  EXPECT_LT(with_update, 0.7 * no_update);
  // Magnitude pruning per block, the baseline the paper beats.
  const at::Tensor magnitude_keep =
      w.abs() >= std::get<0>(w.abs().view({-1}).kthvalue(w.numel() / 2));
  EXPECT_LT(with_update, OutputError(w, w * magnitude_keep, h));

  // Joint: 50% and 4-bit in one pass. Pruned weights hold the zero point: exactly 0.
  auto joint = Solve(p, rule, 32, /*quantize=*/true, 4);
  ASSERT_TRUE(joint.ok()) << joint.status();
  const at::Tensor dequantized = joint->quantized.Dequantize();
  EXPECT_TRUE(at::allclose(dequantized, joint->weight, 1e-5, 1e-6));
  EXPECT_TRUE((dequantized.masked_select(joint->keep.logical_not()) == 0).all().item<bool>());
  EXPECT_EQ(joint->keep.sum().item<int64_t>(), 32 * 128 / 2);
  EXPECT_LT(OutputError(w, dequantized, h), 1.5 * with_update) << "rounding adds little at 4 bits";
}

TEST(SparseGptTest, AFixedMaskKeepsAPrunedModelsZerosThroughGptq) {
  const Problem p = MakeProblem(16, 64, 4);
  const at::Tensor keep = at::rand({16, 64}) > 0.5;
  const at::Tensor w = p.w.to(at::kFloat) * keep;
  SparsityRule rule;
  rule.keep = keep;
  GptqOptions o;
  o.quant.group_size = 32;
  auto solver = GptqSolver::Prepare(p.h.to(at::kFloat), o);
  ASSERT_TRUE(solver.ok());
  auto masked = solver->SolveSparse(w, rule, /*quantize=*/true, 4);
  ASSERT_TRUE(masked.ok()) << masked.status();
  const at::Tensor q = masked->quantized.Dequantize();
  EXPECT_TRUE((q.masked_select(keep.logical_not()) == 0).all().item<bool>());
  // Plain GPTQ fills the zeros in.
  const at::Tensor plain = solver->Solve(w)->weight.Dequantize();
  EXPECT_GT((plain.masked_select(keep.logical_not()) != 0).sum().item<int64_t>(), 0);
  // With a sparsity, the fixed zeros are chosen first and the rule adds to them.
  SparsityRule more;
  more.keep = keep;
  more.sparsity = 0.75;
  auto further = solver->SolveSparse(w, more, /*quantize=*/false, 4);
  ASSERT_TRUE(further.ok()) << further.status();
  EXPECT_TRUE((further->weight.masked_select(keep.logical_not()) == 0).all().item<bool>());
  // One block of 128 columns covers all 64: a quarter of it is kept.
  EXPECT_EQ(further->keep.sum().item<int64_t>(), 16 * 64 / 4);
  // And an n:m rule on top of them keeps at most n of every m.
  SparsityRule pattern;
  pattern.keep = keep;
  pattern.n = 2;
  pattern.m = 4;
  auto nm = solver->SolveSparse(w, pattern, /*quantize=*/false, 4);
  ASSERT_TRUE(nm.ok()) << nm.status();
  EXPECT_TRUE((nm->weight.masked_select(keep.logical_not()) == 0).all().item<bool>());
  EXPECT_TRUE((nm->weight == 0).view({16, 16, 4}).sum(-1).ge(2).all().item<bool>());
  // Bad rules are errors.
  SparsityRule bad;
  bad.n = 2;
  bad.m = 5;
  EXPECT_FALSE(solver->SolveSparse(w, bad, false, 4).ok());
  bad = {};
  bad.sparsity = 1.0;
  EXPECT_FALSE(solver->SolveSparse(w, bad, false, 4).ok());
}

}  // namespace
}  // namespace squeeze
