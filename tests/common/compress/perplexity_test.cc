#include "common/compress/perplexity.h"

#include <cmath>

#include "gtest/gtest.h"

namespace squeeze {
namespace {

LlamaConfig TinyConfig() {
  LlamaConfig c;
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  return c;
}

std::vector<TextExample> Examples(std::vector<int> lengths, uint64_t seed) {
  at::manual_seed(seed);
  std::vector<TextExample> out;
  for (size_t i = 0; i < lengths.size(); ++i) {
    at::Tensor ids = at::randint(0, 50, {lengths[i]}, at::kLong);
    TextExample e;
    for (int64_t j = 0; j < lengths[i]; ++j)
      e.ids.push_back(static_cast<int32_t>(ids[j].item<int64_t>()));
    e.category = i % 2 == 0 ? "even" : "odd";
    out.push_back(e);
  }
  return out;
}

TEST(PerplexityTest, WindowsScoreEveryTargetExactlyOnce) {
  auto examples = Examples({5, 17, 40, 2}, 1);
  for (auto [window, stride] :
       {std::pair{8, 4}, std::pair{8, 7}, std::pair{64, 32}, std::pair{3, 1}}) {
    std::vector<std::vector<int>> count(examples.size());
    for (size_t e = 0; e < examples.size(); ++e) count[e].assign(examples[e].ids.size(), 0);
    for (const ScoringWindow& w : PlanScoringWindows(examples, window, stride)) {
      EXPECT_LE(w.end - w.begin, window);
      EXPECT_GT(w.score_from, w.begin);  // every scored token has context in its window
      for (int64_t t = w.score_from; t < w.end; ++t) count[w.example][t]++;
    }
    for (size_t e = 0; e < examples.size(); ++e) {
      EXPECT_EQ(count[e][0], 0);
      for (size_t t = 1; t < count[e].size(); ++t)
        EXPECT_EQ(count[e][t], 1) << window << "/" << stride;
    }
  }
}

TEST(PerplexityTest, UniformModelHasPerplexityEqualToVocabulary) {
  LlamaModel m = LlamaModel::RandomInit(TinyConfig(), 2);
  for (auto& [name, t] : m.NamedParameters()) {
    if (name == "lm_head.weight") t->zero_();  // every logit 0: uniform prediction
  }
  auto r = EvaluatePerplexity(m, Examples({10, 20, 30}, 3));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->total.perplexity(), 50.0, 1e-3);
  EXPECT_EQ(r->total.tokens, 9 + 19 + 29);
}

TEST(PerplexityTest, BatchingAndWindowsDoNotChangeShortSequences) {
  LlamaModel m = LlamaModel::RandomInit(TinyConfig(), 4);
  auto examples = Examples({12, 7, 30, 3, 19}, 5);
  PerplexityOptions one;
  one.window = 64;
  one.stride = 32;
  one.batch_size = 1;
  PerplexityOptions many = one;
  many.batch_size = 4;
  auto a = EvaluatePerplexity(m, examples, one);
  auto b = EvaluatePerplexity(m, examples, many);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NEAR(a->total.nll, b->total.nll, 1e-3);
  EXPECT_EQ(a->total.tokens, b->total.tokens);
  // Categories partition the total.
  EXPECT_EQ(a->by_category["even"].tokens + a->by_category["odd"].tokens, a->total.tokens);
  EXPECT_NEAR(a->by_category["even"].nll + a->by_category["odd"].nll, a->total.nll, 1e-6);

  // Sliding windows see less context, so the same sequences score a different (finite) NLL over
  // the same number of tokens.
  PerplexityOptions sliding = one;
  sliding.window = 8;
  sliding.stride = 4;
  auto c = EvaluatePerplexity(m, examples, sliding);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->total.tokens, a->total.tokens);
  EXPECT_TRUE(std::isfinite(c->total.nll));
}

TEST(PerplexityTest, UnigramBaselineMatchesHandComputation) {
  // Train targets: 0, 0, 1 (the first token of each example is context only). Vocabulary 4.
  std::vector<TextExample> train = {{{3, 0, 0}, ""}, {{3, 1}, ""}};
  std::vector<TextExample> eval = {{{3, 0, 3}, ""}};
  // Smoothed counts of ids 0..3: 3, 2, 1, 1 over 7.
  NllSum s = UnigramPerplexity(train, eval, 4);
  EXPECT_EQ(s.tokens, 2);
  EXPECT_NEAR(s.nll, -std::log(3.0 / 7) - std::log(1.0 / 7), 1e-12);
}

TEST(PerplexityTest, BadOptionsAndIdsAreRejected) {
  LlamaModel m = LlamaModel::RandomInit(TinyConfig(), 6);
  auto examples = Examples({5}, 7);
  PerplexityOptions o;
  o.window = 8;
  o.stride = 8;
  EXPECT_NE(EvaluatePerplexity(m, examples, o).status().message().find("stride"),
            std::string::npos);
  examples[0].ids[2] = 50;
  EXPECT_NE(EvaluatePerplexity(m, examples).status().message().find("token id 50"),
            std::string::npos);
}

}  // namespace
}  // namespace squeeze
