#include "common/compress/prune.h"

#include "gtest/gtest.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

int64_t Kept(const at::Tensor& keep) { return keep.sum().item<int64_t>(); }

TEST(PruneTest, UnstructuredDropsTheLowestScoresOfEveryRow) {
  const at::Tensor w = at::tensor({1.0, -5.0, 0.5, 3.0, -2.0, 0.1, 4.0, -0.2}).reshape({2, 4});
  auto keep =
      PruneMask(PruneScores(PruneMethod::kMagnitude, w), 0.5, PrunePattern::kUnstructured, {}, "w");
  ASSERT_TRUE(keep.ok()) << keep.status();
  const at::Tensor expected = at::tensor({0, 1, 0, 1, 1, 0, 1, 0}).reshape({2, 4}).to(at::kBool);
  EXPECT_TRUE(at::equal(*keep, expected));
}

TEST(PruneTest, MasksAreCumulative) {
  at::manual_seed(0);
  const at::Tensor w = at::randn({16, 40});
  const at::Tensor scores = PruneScores(PruneMethod::kMagnitude, w);
  auto first = PruneMask(scores, 0.25, PrunePattern::kUnstructured, {}, "w");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(Kept(*first), 16 * 30);
  // Scores that change between rounds cannot bring a pruned weight back.
  const at::Tensor shuffled = at::randn({16, 40}).abs();
  auto second = PruneMask(shuffled, 0.5, PrunePattern::kUnstructured, *first, "w");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(Kept(*second), 16 * 20);
  EXPECT_FALSE(second->logical_and(first->logical_not()).any().item<bool>());
}

TEST(PruneTest, TwoOfFourKeepsTwoOfEveryFourInputs) {
  at::manual_seed(1);
  const at::Tensor w = at::randn({8, 32});
  auto keep = PruneMask(PruneScores(PruneMethod::kMagnitude, w), 0.5, PrunePattern::k2of4, {}, "w");
  ASSERT_TRUE(keep.ok());
  EXPECT_TRUE(keep->reshape({8, 8, 4}).sum(-1).eq(2).all().item<bool>());
  // The two kept are the two largest of their group.
  const at::Tensor groups = w.abs().reshape({8, 8, 4});
  const at::Tensor kept_min =
      groups.masked_fill(keep->reshape({8, 8, 4}).logical_not(), 1e9).amin(-1);
  const at::Tensor dropped_max = groups.masked_fill(keep->reshape({8, 8, 4}), -1).amax(-1);
  EXPECT_TRUE(kept_min.ge(dropped_max).all().item<bool>());
}

TEST(PruneTest, WandaKeepsWeightsOfLoudInputs) {
  // Column 0 has the smallest weights but an input 100x louder than the others: magnitude drops
  // it, Wanda keeps it.
  at::Tensor w = at::ones({4, 4});
  w.select(1, 0).fill_(0.1);
  const at::Tensor norms = at::tensor({100.0, 1.0, 1.0, 1.0}, at::kFloat);
  auto magnitude = PruneMask(PruneScores(PruneMethod::kMagnitude, w), 0.25,
                             PrunePattern::kUnstructured, {}, "w");
  auto wanda = PruneMask(PruneScores(PruneMethod::kWanda, w, norms), 0.25,
                         PrunePattern::kUnstructured, {}, "w");
  ASSERT_TRUE(magnitude.ok() && wanda.ok());
  EXPECT_FALSE(magnitude->select(1, 0).any().item<bool>());
  EXPECT_TRUE(wanda->select(1, 0).all().item<bool>());
}

TEST(PruneTest, BadInputIsNamed) {
  const at::Tensor scores = at::rand({4, 6});
  auto two_four = PruneMask(scores, 0.5, PrunePattern::k2of4, {}, "model.layers.0.mlp.up_proj");
  EXPECT_EQ(two_four.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(two_four.status().message().find("model.layers.0.mlp.up_proj"), std::string::npos);
  EXPECT_NE(two_four.status().message().find("multiple of 4"), std::string::npos);
  EXPECT_NE(PruneMask(scores, 1.0, PrunePattern::kUnstructured, {}, "w")
                .status()
                .message()
                .find("prune.sparsity"),
            std::string::npos);
  EXPECT_NE(PruneMask(scores, 0.3, PrunePattern::k2of4, {}, "w").status().message().find("0.5"),
            std::string::npos);
  EXPECT_NE(ParsePruneMethod("obs").status().message().find("magnitude, wanda, sparsegpt"),
            std::string::npos);
  EXPECT_NE(ParsePrunePattern("8:16").status().message().find("unstructured, 2:4, 4:8"),
            std::string::npos);
  EXPECT_TRUE(ParsePruneMethod("sparsegpt").ok());
  EXPECT_TRUE(ParsePrunePattern("4:8").ok());
  // 4:8 has no score-based masks.
  LlamaModel model = LlamaModel::RandomInit(TinyLlamaConfig(1, 32, 64), 2);
  SparsityMasks masks;
  EXPECT_EQ(masks.Prune(model, PruneMethod::kWanda, PrunePattern::k4of8, 0.5, {}).message(),
            "4:8 masks are chosen by sparsegpt only");
}

TEST(PruneTest, ModelMasksPruneEveryLinearAndSurviveUpdates) {
  LlamaModel model = LlamaModel::RandomInit(TinyLlamaConfig(2, 32, 64), 2);
  const std::vector<at::Tensor> batches = {at::randint(0, 64, {2, 16}, at::kLong)};
  SparsityMasks masks;
  ASSERT_TRUE(
      masks.Prune(model, PruneMethod::kWanda, PrunePattern::kUnstructured, 0.25, batches).ok());
  EXPECT_EQ(masks.size(), 2u * 7u);
  EXPECT_NEAR(LinearSparsity(model), 0.25, 1e-6);
  ASSERT_TRUE(
      masks.Prune(model, PruneMethod::kWanda, PrunePattern::kUnstructured, 0.5, batches).ok());
  EXPECT_NEAR(LinearSparsity(model), 0.5, 1e-6);
  EXPECT_NEAR(masks.Sparsity(), 0.5, 1e-6);
  // An update that touches every weight; Apply restores the zeros.
  {
    c10::NoGradGuard no_grad;
    for (auto& [name, t] : model.NamedParameters()) t->add_(0.01);
  }
  EXPECT_LT(LinearSparsity(model), 0.01);
  masks.Apply();
  EXPECT_NEAR(LinearSparsity(model), 0.5, 1e-6);
  // Masks rebuilt from a pruned model's zeros (a resumed run) keep the same weights.
  SparsityMasks resumed = SparsityMasks::FromZeros(model);
  EXPECT_EQ(resumed.size(), masks.size());
  EXPECT_NEAR(resumed.Sparsity(), 0.5, 1e-6);
}

// SparseGPT in an iterative schedule: each round prunes on the Hessians of the batches, keeps
// the zeros of the rounds before it, updates the kept weights in place (the tensors an optimizer
// holds stay the model's), and leaves masks that hold the zeros through updates.
TEST(PruneTest, SparseGptRoundsAreCumulativeAndPruneInPlace) {
  LlamaModel model = LlamaModel::RandomInit(TinyLlamaConfig(2, 64, 64), 4);
  for (auto& [name, t] : model.NamedParameters()) t->set_requires_grad(true);
  const LlamaModel original = LlamaModel::RandomInit(TinyLlamaConfig(2, 64, 64), 4);
  const std::vector<at::Tensor> batches = {at::randint(0, 64, {4, 16}, at::kLong),
                                           at::randint(0, 64, {4, 16}, at::kLong)};
  std::vector<const void*> storage;
  for (auto& [name, t] : model.NamedParameters()) storage.push_back(t->data_ptr());
  SparsityMasks masks;
  ASSERT_TRUE(
      masks.Prune(model, PruneMethod::kSparseGpt, PrunePattern::kUnstructured, 0.3, batches).ok());
  EXPECT_NEAR(LinearSparsity(model), 0.3, 0.01);
  EXPECT_EQ(masks.size(), 2u * 7u);
  const at::Tensor first_zeros = model.layer(1).down_proj.weight == 0;
  // The kept weights moved (the OBS update), unlike a mask alone.
  const at::Tensor kept = first_zeros.logical_not();
  EXPECT_FALSE(at::allclose(model.layer(1).down_proj.weight.masked_select(kept),
                            original.layer(1).down_proj.weight.masked_select(kept)));
  ASSERT_TRUE(
      masks.Prune(model, PruneMethod::kSparseGpt, PrunePattern::kUnstructured, 0.6, batches).ok());
  EXPECT_NEAR(LinearSparsity(model), 0.6, 0.01);
  EXPECT_TRUE((model.layer(1).down_proj.weight.masked_select(first_zeros) == 0).all().item<bool>())
      << "a weight pruned in round 1 stays pruned";
  size_t k = 0;
  for (auto& [name, t] : model.NamedParameters()) {
    EXPECT_EQ(t->data_ptr(), storage[k++]) << name << " was replaced, not updated in place";
    EXPECT_TRUE(t->requires_grad()) << name;
  }
  {
    c10::NoGradGuard no_grad;
    for (auto& [name, t] : model.NamedParameters()) t->add_(0.01);
  }
  masks.Apply();
  EXPECT_NEAR(LinearSparsity(model), 0.6, 0.01);
  // 4:8 on top of the zeros: every group of 8 has at least 4, and the earlier zeros stay.
  const at::Tensor before = model.layer(0).q_proj.weight == 0;
  ASSERT_TRUE(masks.Prune(model, PruneMethod::kSparseGpt, PrunePattern::k4of8, 0.5, batches).ok());
  const at::Tensor w = model.layer(0).q_proj.weight;
  EXPECT_TRUE((w == 0).view({w.size(0), -1, 8}).sum(-1).ge(4).all().item<bool>());
  EXPECT_TRUE((w.masked_select(before) == 0).all().item<bool>());
  // Without batches there are no Hessians.
  EXPECT_EQ(
      masks.Prune(model, PruneMethod::kSparseGpt, PrunePattern::kUnstructured, 0.7, {}).message(),
      "sparsegpt needs calibration batches");
}

// The narrower model computes exactly what the original computes with the removed channels zeroed.
TEST(PruneTest, MlpChannelPruningIsExactRemoval) {
  for (PruneMethod method : {PruneMethod::kMagnitude, PruneMethod::kWanda}) {
    LlamaModel model = LlamaModel::RandomInit(TinyLlamaConfig(2, 32, 64), 3);
    const at::Tensor ids = at::randint(0, 64, {2, 12}, at::kLong);
    std::vector<at::Tensor> kept;
    auto narrow = PruneMlpChannels(model, method, 0.25, {ids}, &kept);
    ASSERT_TRUE(narrow.ok()) << narrow.status();
    EXPECT_EQ(narrow->config().intermediate_size, 48);
    EXPECT_LT(narrow->NumParameters(), model.NumParameters());
    ASSERT_EQ(kept.size(), 2u);
    {
      c10::NoGradGuard no_grad;
      for (int64_t i = 0; i < 2; ++i) {
        at::Tensor removed = at::ones({64}, at::kBool).index_fill(0, kept[i], false);
        model.layer(i).gate_proj.weight.index_fill_(0, removed.nonzero().squeeze(1), 0);
        model.layer(i).up_proj.weight.index_fill_(0, removed.nonzero().squeeze(1), 0);
        model.layer(i).down_proj.weight.index_fill_(1, removed.nonzero().squeeze(1), 0);
      }
    }
    EXPECT_TRUE(at::allclose(narrow->Forward(ids), model.Forward(ids), 1e-5, 1e-5));
  }
}

// Removing a key/value head group equals zeroing its query heads' o_proj columns in the original.
TEST(PruneTest, AttentionHeadPruningIsExactRemoval) {
  for (PruneMethod method : {PruneMethod::kMagnitude, PruneMethod::kWanda}) {
    LlamaModel model = LlamaModel::RandomInit(TinyLlamaConfig(2, 32, 64), 5);
    const at::Tensor ids = at::randint(0, 64, {2, 12}, at::kLong);
    std::vector<at::Tensor> kept;
    auto narrow = PruneAttentionHeads(model, method, 0.5, {ids}, &kept);
    ASSERT_TRUE(narrow.ok()) << narrow.status();
    EXPECT_EQ(narrow->config().num_key_value_heads, 1);
    EXPECT_EQ(narrow->config().num_attention_heads, 2);
    EXPECT_EQ(narrow->config().head_dim, 8);
    {
      c10::NoGradGuard no_grad;
      for (int64_t i = 0; i < 2; ++i) {
        const int64_t removed = 1 - kept[i].item<int64_t>();  // of key/value heads 0 and 1
        model.layer(i).o_proj.weight.slice(1, removed * 16, (removed + 1) * 16).zero_();
      }
    }
    EXPECT_TRUE(at::allclose(narrow->Forward(ids), model.Forward(ids), 1e-5, 1e-5));
  }
  LlamaModel model = LlamaModel::RandomInit(TinyLlamaConfig(2, 32, 64), 5);
  EXPECT_NE(PruneAttentionHeads(model, PruneMethod::kMagnitude, 0.1, {})
                .status()
                .message()
                .find("removes none or all"),
            std::string::npos);
}

TEST(PruneTest, MagnitudeChannelPruningDropsDeadChannelsFirst) {
  LlamaModel model = LlamaModel::RandomInit(TinyLlamaConfig(1, 32, 64), 4);
  {
    c10::NoGradGuard no_grad;
    for (int64_t c : {3, 17, 40, 63}) model.layer(0).down_proj.weight.select(1, c).zero_();
  }
  std::vector<at::Tensor> kept;
  ASSERT_TRUE(PruneMlpChannels(model, PruneMethod::kMagnitude, 4.0 / 64, {}, &kept).ok());
  for (int64_t c : {3, 17, 40, 63}) EXPECT_FALSE(kept[0].eq(c).any().item<bool>()) << c;
  EXPECT_EQ(kept[0].numel(), 60);
  EXPECT_FALSE(PruneMlpChannels(model, PruneMethod::kMagnitude, 0.001, {}).ok());
}

}  // namespace
}  // namespace squeeze
