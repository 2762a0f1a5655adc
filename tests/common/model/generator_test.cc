// Generation with a key/value cache gives what the full forward pass gives: the cached layers
// agree with the uncached ones position by position, and greedy tokens are the full pass's argmax.
#include "common/model/generator.h"

#include <gtest/gtest.h>

#include <map>

#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

// Grouped queries (4 over 2 kv heads): the cache holds kv heads only.
LlamaConfig SmallConfig() {
  LlamaConfig c = TinyLlamaConfig(/*layers=*/2, /*hidden=*/32, /*vocab=*/64);
  c.max_position_embeddings = 64;
  return c;
}

// Every new token is the argmax of the full forward pass (no cache) over everything before it.
void ExpectFullPassArgmax(const LlamaModel& m, const std::vector<int32_t>& prompt,
                          const std::vector<int32_t>& tokens) {
  std::vector<int64_t> all(prompt.begin(), prompt.end());
  all.insert(all.end(), tokens.begin(), tokens.end());
  c10::InferenceMode inference;
  const at::Tensor logits = m.Forward(at::tensor(all, at::kLong).view({1, -1}))[0];  // [len, vocab]
  for (size_t t = 0; t < tokens.size(); ++t) {
    EXPECT_EQ(logits[prompt.size() - 1 + t].argmax().item<int64_t>(), tokens[t]) << "token " << t;
  }
}

TEST(GeneratorTest, CachedChunksMatchTheFullForwardPass) {
  const LlamaConfig c = SmallConfig();
  const LlamaModel m = LlamaModel::RandomInit(c, 7);
  c10::InferenceMode inference;
  at::Tensor ids = at::randint(0, c.vocab_size, {1, 9}, at::kLong);
  const at::Tensor full = m.Forward(ids);  // [1, 9, vocab]
  // The same positions in three chunks: 4 (prefill), 3 (several new positions at once, which
  // needs the causal mask offset by the cached length), then 2 one at a time.
  std::vector<LayerKvCache> cache(m.num_layers());
  for (LayerKvCache& l : cache) {
    l.k = at::zeros({1, c.num_key_value_heads, 9, c.head_dim});
    l.v = at::zeros_like(l.k);
  }
  const RotaryTables rope = m.Rotary(9, at::kCPU, at::kFloat);
  std::vector<at::Tensor> pieces;
  int64_t pos = 0;
  for (int64_t n : {4, 3, 1, 1}) {
    at::Tensor h = m.Embed(ids.narrow(1, pos, n));
    const RotaryTables rows = rope.Rows(pos, n);
    for (int64_t i = 0; i < m.num_layers(); ++i)
      h = m.layer(i).Forward(c, h, rows, i, nullptr, &cache[i]);
    pieces.push_back(m.Head(h));
    pos += n;
  }
  EXPECT_EQ(cache[0].length, 9);
  const at::Tensor cached = at::cat(pieces, 1);
  EXPECT_TRUE(at::allclose(cached, full, 1e-5, 1e-5))
      << "max difference " << (cached - full).abs().max().item<float>();
}

// Greedy generation from a model of `c` gives the full pass's argmax at every step.
void ExpectCachedGreedyMatchesFullPass(const LlamaConfig& c, uint64_t seed) {
  const LlamaModel m = LlamaModel::RandomInit(c, seed);
  GenerationOptions options;
  options.max_new_tokens = 10;
  const std::vector<int32_t> prompt = {9, 8, 7, 6, 5, 4};
  auto g = Generate(m, prompt, options);
  ASSERT_TRUE(g.ok()) << g.status();
  ExpectFullPassArgmax(m, prompt, g->tokens);
}

// Gemma-3: sliding and full layers with their own rotary tables, each read right when the rows
// of a decoding step are cut from them.
TEST(GeneratorTest, CachedStepsMatchTheFullPassForGemma3) {
  LlamaConfig c = TinyGemmaConfig(/*hidden=*/32, /*vocab=*/64, /*window=*/4);
  c.max_position_embeddings = 64;
  ExpectCachedGreedyMatchesFullPass(c, 13);
}

// With a sliding window shorter than the text, cached steps still match the full pass.
TEST(GeneratorTest, CachedStepsHonourASlidingWindow) {
  LlamaConfig c = SmallConfig();
  c.model_type = "mistral";
  c.sliding_window = 4;
  ExpectCachedGreedyMatchesFullPass(c, 12);
}

TEST(GeneratorTest, GreedyTokensAreTheFullPassesArgmax) {
  const LlamaConfig c = SmallConfig();
  const LlamaModel m = LlamaModel::RandomInit(c, 11);
  GenerationOptions options;
  options.max_new_tokens = 12;
  const std::vector<int32_t> prompt = {3, 17, 5, 42, 8};
  auto g = Generate(m, prompt, options);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_EQ(g->tokens.size(), 12u);
  EXPECT_EQ(g->stop_reason, "max_new_tokens");
  ExpectFullPassArgmax(m, prompt, g->tokens);
}

TEST(GeneratorTest, StopsAtAStopTokenAndSamplingIsRepeatableBySeed) {
  const LlamaConfig c = SmallConfig();
  const LlamaModel m = LlamaModel::RandomInit(c, 5);
  GenerationOptions greedy;
  greedy.max_new_tokens = 10;
  auto first = Generate(m, {1, 2, 3}, greedy);
  ASSERT_TRUE(first.ok());
  greedy.stop_ids = {first->tokens[2]};
  auto stopped = Generate(m, {1, 2, 3}, greedy);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->stop_reason, "stop token");
  // It stops at the first occurrence, which may come before index 2.
  EXPECT_LE(stopped->tokens.size(), 3u);
  EXPECT_EQ(stopped->tokens.back(), first->tokens[2]);

  GenerationOptions sample;
  sample.max_new_tokens = 16;
  sample.temperature = 5.0;  // nearly uniform: different seeds differ
  sample.seed = 1;
  auto a = Generate(m, {1, 2, 3}, sample);
  auto b = Generate(m, {1, 2, 3}, sample);
  sample.seed = 2;
  auto other = Generate(m, {1, 2, 3}, sample);
  ASSERT_TRUE(a.ok() && b.ok() && other.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_NE(a->tokens, other->tokens);
}

TEST(GeneratorTest, PickTokenSamplesFromTheNucleus) {
  // Probabilities 0.1, 0.6, 0.3 (temperature 1).
  const at::Tensor logits = at::log(at::tensor({0.1f, 0.6f, 0.3f}));
  EXPECT_EQ(PickToken(logits, 0.0, 1.0, 0.99), 1);  // greedy ignores the draw
  EXPECT_EQ(PickToken(logits, 1.0, 0.5, 0.99), 1);  // the nucleus of 0.5 is token 1 alone
  // With the whole distribution, draws on an even grid land in proportion.
  std::map<int64_t, int> counts;
  for (int i = 0; i < 1000; ++i) counts[PickToken(logits, 1.0, 1.0, (i + 0.5) / 1000)]++;
  EXPECT_NEAR(counts[0], 100, 2);
  EXPECT_NEAR(counts[1], 600, 2);
  EXPECT_NEAR(counts[2], 300, 2);
  // top_p 0.8: tokens 1 and 2 (0.9 of the mass), renormalized to 2/3 and 1/3.
  counts.clear();
  for (int i = 0; i < 900; ++i) counts[PickToken(logits, 1.0, 0.8, (i + 0.5) / 900)]++;
  EXPECT_EQ(counts[0], 0);
  EXPECT_NEAR(counts[1], 600, 2);
  EXPECT_NEAR(counts[2], 300, 2);
}

TEST(GeneratorTest, BadInputIsRefusedNamingTheField) {
  const LlamaModel m = LlamaModel::RandomInit(SmallConfig(), 1);
  GenerationOptions o;
  EXPECT_NE(Generate(m, {}, o).status().message().find("prompt"), std::string::npos);
  EXPECT_NE(Generate(m, {64}, o).status().message().find("outside the vocabulary of 64"),
            std::string::npos);
  o.max_new_tokens = 0;
  EXPECT_NE(Generate(m, {1}, o).status().message().find("max_new_tokens"), std::string::npos);
  o.max_new_tokens = 100;  // 1 + 100 > 64 positions
  EXPECT_NE(Generate(m, {1}, o).status().message().find("max_position_embeddings"),
            std::string::npos);
  o.max_new_tokens = 4;
  o.top_p = 0.0;
  EXPECT_NE(Generate(m, {1}, o).status().message().find("top_p"), std::string::npos);
}

}  // namespace
}  // namespace squeeze
