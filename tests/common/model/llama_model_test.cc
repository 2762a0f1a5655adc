#include "common/model/llama_model.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "common/base/file_util.h"
#include "common/tensor/safetensors.h"
#include "common/tensor/torch_tensor.h"
#include "gtest/gtest.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

LlamaConfig SmallConfig(int64_t kv_heads = 2, bool tied = false) {
  LlamaConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = kv_heads;
  c.head_dim = 8;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = tied;
  return c;
}

at::Tensor Ids(int64_t batch, int64_t seq, int64_t vocab, uint64_t seed) {
  at::manual_seed(seed);
  return at::randint(0, vocab, {batch, seq}, at::kLong);
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
}

class TempDir {
 public:
  TempDir()
      : path_(fs::temp_directory_path() / ("llama_model_test_" + std::to_string(::getpid()) + "_" +
                                           std::to_string(counter_++))) {
    RemoveTree(path_).IgnoreError();
  }
  ~TempDir() { RemoveTree(path_).IgnoreError(); }
  std::string str() const { return path_.string(); }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

// A straightforward, loop-per-head version of one decoder layer, written independently of the
// model code (no shared helpers), to check the batched implementation against.
// Gemma-3 (model_type gemma3_text) differs in: norms scaling by (1 + w), every sliding layer's own
// rotary base, linear rope scaling of full layers, the score scale, the norms around attention
// and MLP outputs, and GELU (tanh) gating.
at::Tensor NaiveLayer(const LlamaConfig& c, const DecoderLayer& l, const at::Tensor& x,
                      int64_t layer = 0) {
  const bool gemma = c.model_type == "gemma3_text";
  auto norm = [&](const at::Tensor& h, const at::Tensor& w) {
    return (gemma ? w + 1 : w) * (h / at::sqrt(h.pow(2).mean(-1, true) + c.rms_norm_eps));
  };
  const int64_t s = x.size(1), d = c.head_dim;
  const bool sliding = c.sliding_window > 0 &&
                       (c.layer_types.empty() || c.layer_types[layer] == "sliding_attention");
  const int64_t window = sliding ? c.sliding_window : 0;
  const bool local = gemma && sliding;
  double theta = local ? c.rope_local_theta : c.rope_theta, stretch = 1.0;
  if (!local && c.rope_scaling && c.rope_scaling->rope_type == "linear")
    stretch = c.rope_scaling->factor;
  const double scale = 1.0 / std::sqrt(gemma ? c.query_pre_attn_scalar : static_cast<double>(d));
  std::vector<double> inv_freq;
  for (int64_t i = 0; i < d / 2; ++i)
    inv_freq.push_back(1.0 / std::pow(theta, 2.0 * i / d) / stretch);
  auto rope = [&](const at::Tensor& v, int64_t pos) {  // v: [d], half-split pairs (i, i + d/2)
    at::Tensor out = v.clone();
    for (int64_t i = 0; i < d / 2; ++i) {
      const double a = pos * inv_freq[i];
      const double x1 = v[i].item<double>(), x2 = v[i + d / 2].item<double>();
      out[i] = x1 * std::cos(a) - x2 * std::sin(a);
      out[i + d / 2] = x2 * std::cos(a) + x1 * std::sin(a);
    }
    return out;
  };
  at::Tensor h = norm(x[0], l.input_layernorm);  // [s, hidden]
  at::Tensor q = at::matmul(h, l.q_proj.weight.t());
  at::Tensor k = at::matmul(h, l.k_proj.weight.t());
  at::Tensor v = at::matmul(h, l.v_proj.weight.t());
  at::Tensor attn = at::zeros({s, c.num_attention_heads * d});
  for (int64_t head = 0; head < c.num_attention_heads; ++head) {
    const int64_t kv = head / (c.num_attention_heads / c.num_key_value_heads);
    for (int64_t t = 0; t < s; ++t) {
      // Qwen3: each query and key head is RMS-normalized before the rotation.
      auto head_norm = [&](const at::Tensor& v, const at::Tensor& w) {
        return w.defined() ? norm(v, w) : v;
      };
      at::Tensor qt = rope(head_norm(q[t].slice(0, head * d, (head + 1) * d), l.q_norm), t);
      // Mistral's sliding window: the last `sliding_window` positions, t itself included.
      const int64_t first = window > 0 ? std::max<int64_t>(0, t - window + 1) : 0;
      std::vector<double> scores;
      for (int64_t u = first; u <= t; ++u) {
        at::Tensor ku = rope(head_norm(k[u].slice(0, kv * d, (kv + 1) * d), l.k_norm), u);
        scores.push_back(at::dot(qt, ku).item<double>() * scale);
      }
      double mx = *std::max_element(scores.begin(), scores.end()), z = 0;
      for (double& sc : scores) z += (sc = std::exp(sc - mx));
      at::Tensor out = at::zeros({d});
      for (int64_t u = first; u <= t; ++u)
        out += scores[u - first] / z * v[u].slice(0, kv * d, (kv + 1) * d);
      attn[t].slice(0, head * d, (head + 1) * d) = out;
    }
  }
  at::Tensor o = at::matmul(attn, l.o_proj.weight.t());
  at::Tensor h2 = x[0] + (gemma ? norm(o, l.post_attention_layernorm) : o);
  at::Tensor m = norm(h2, gemma ? l.pre_feedforward_layernorm : l.post_attention_layernorm);
  at::Tensor gate = at::matmul(m, l.gate_proj.weight.t());
  at::Tensor g =
      gemma ? 0.5 * gate * (1 + at::tanh(std::sqrt(2.0 / M_PI) * (gate + 0.044715 * gate.pow(3))))
            : gate * at::sigmoid(gate);
  at::Tensor act = g * at::matmul(m, l.up_proj.weight.t());
  at::Tensor down = at::matmul(act, l.down_proj.weight.t());
  return (h2 + (gemma ? norm(down, l.post_feedforward_layernorm) : down)).unsqueeze(0);
}

TEST(LlamaModelTest, LayerMatchesANaivePerHeadImplementation) {
  LlamaConfig c = SmallConfig(/*kv_heads=*/2);
  LlamaModel m = LlamaModel::RandomInit(c, 1);
  at::manual_seed(2);
  // Non-trivial norms so that their scaling is exercised.
  m.layer(0).input_layernorm.uniform_(0.5, 1.5);
  m.layer(0).post_attention_layernorm.uniform_(0.5, 1.5);
  at::Tensor x = at::randn({1, 7, c.hidden_size});
  at::Tensor got = m.layer(0).Forward(c, x, m.Rotary(7, at::kCPU, at::kFloat), 0);
  at::Tensor want = NaiveLayer(c, m.layer(0), x);
  EXPECT_LT(MaxAbsDiff(got, want), 1e-5);
}

// Qwen3: per-head query/key norms over an explicit head_dim unequal to hidden / heads, loaded and
// saved under the names transformers uses.
TEST(LlamaModelTest, Qwen3LayerNormsEveryQueryAndKeyHead) {
  LlamaConfig c = SmallConfig(/*kv_heads=*/2);
  c.model_type = "qwen3";
  c.head_dim = 16;  // 4 heads x 16 = 64, not hidden_size 32
  LlamaModel m = LlamaModel::RandomInit(c, 4);
  at::manual_seed(3);
  ASSERT_TRUE(m.layer(0).q_norm.defined());
  m.layer(0).q_norm.uniform_(0.5, 1.5);
  m.layer(0).k_norm.uniform_(0.5, 1.5);
  at::Tensor x = at::randn({1, 6, c.hidden_size});
  at::Tensor got = m.layer(0).Forward(c, x, m.Rotary(6, at::kCPU, at::kFloat), 0);
  EXPECT_LT(MaxAbsDiff(got, NaiveLayer(c, m.layer(0), x)), 1e-5);
  // The norms change the output (the test would not notice them otherwise).
  DecoderLayer plain = m.layer(0);
  plain.q_norm = at::Tensor();
  plain.k_norm = at::Tensor();
  EXPECT_GT(MaxAbsDiff(plain.Forward(c, x, m.Rotary(6, at::kCPU, at::kFloat), 0), got), 1e-3);

  const std::string dir = ::testing::TempDir() + "/qwen3_" + std::to_string(::getpid());
  ASSERT_TRUE(m.Save(dir, at::kFloat).ok());
  auto config = LoadLlamaConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->model_type, "qwen3");
  auto loaded = LlamaModel::Load(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_LT(MaxAbsDiff(loaded->layer(0).q_norm, m.layer(0).q_norm), 1e-7);
  at::Tensor ids = at::randint(0, c.vocab_size, {1, 5}, at::kLong);
  EXPECT_LT(MaxAbsDiff(loaded->Forward(ids), m.Forward(ids)), 1e-5);
  bool named = false;
  for (const auto& [name, shape] : CheckpointTensorShapes(c))
    named = named ||
            (name == "model.layers.1.self_attn.k_norm.weight" && shape == std::vector<int64_t>{16});
  EXPECT_TRUE(named);
  RemoveTree(dir).IgnoreError();
}

// Mistral's sliding window: a sequence longer than the window sees only the window's keys.
TEST(LlamaModelTest, SlidingWindowLayerMatchesTheNaiveWindowedLayer) {
  LlamaConfig c = SmallConfig(/*kv_heads=*/2);
  c.model_type = "mistral";
  c.sliding_window = 3;
  LlamaModel m = LlamaModel::RandomInit(c, 8);
  at::manual_seed(4);
  at::Tensor x = at::randn({1, 7, c.hidden_size});
  at::Tensor got = m.layer(0).Forward(c, x, m.Rotary(7, at::kCPU, at::kFloat), 0);
  EXPECT_LT(MaxAbsDiff(got, NaiveLayer(c, m.layer(0), x)), 1e-5);
  // Positions inside the first window are unaffected; later ones differ from full attention.
  LlamaConfig full = c;
  full.sliding_window = 0;
  at::Tensor unwindowed = m.layer(0).Forward(full, x, m.Rotary(7, at::kCPU, at::kFloat), 0);
  EXPECT_LT(MaxAbsDiff(got.narrow(1, 0, 3), unwindowed.narrow(1, 0, 3)), 1e-6);
  EXPECT_GT(MaxAbsDiff(got.narrow(1, 3, 4), unwindowed.narrow(1, 3, 4)), 1e-4);
  // The window survives a save and load.
  const std::string dir = ::testing::TempDir() + "/mistral_" + std::to_string(::getpid());
  ASSERT_TRUE(m.Save(dir, at::kFloat).ok());
  auto config = LoadLlamaConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->sliding_window, 3);
  RemoveTree(dir).IgnoreError();
}

LlamaConfig SmallGemmaConfig() {
  LlamaConfig c = SmallConfig(/*kv_heads=*/2, /*tied=*/true);
  c.model_type = "gemma3_text";
  c.head_dim = 16;
  c.hidden_activation = "gelu_pytorch_tanh";
  c.query_pre_attn_scalar = 12;  // not head_dim: the scale must come from it
  c.sliding_window = 3;
  c.layer_types = {"sliding_attention", "full_attention"};
  c.rope_theta = 1e6;
  c.rope_local_theta = 1e4;
  c.rope_scaling = RopeScaling{"linear", 4.0};
  c.final_logit_softcapping = 2.0;
  return c;
}

// Gemma-3: both layer kinds against the naive layer, then the whole model (scaled embeddings,
// (1 + w) final norm, tied head, soft-capped logits) against the naive layers in sequence.
TEST(LlamaModelTest, Gemma3LayersAndModelMatchTheNaiveImplementation) {
  const LlamaConfig c = SmallGemmaConfig();
  LlamaModel m = LlamaModel::RandomInit(c, 12);
  at::manual_seed(5);
  // Norm offsets away from 0 (a unit norm), so that every norm is exercised.
  for (auto& [name, t] : m.NamedParameters()) {
    if (name.find("norm") != std::string::npos) t->uniform_(-0.5, 0.5);
  }
  at::Tensor x = at::randn({1, 7, c.hidden_size});
  const RotaryTables rope = m.Rotary(7, at::kCPU, at::kFloat);
  ASSERT_TRUE(rope.local_cos.defined());
  for (int64_t layer : {0, 1}) {
    at::Tensor got = m.layer(layer).Forward(c, x, rope, layer);
    EXPECT_LT(MaxAbsDiff(got, NaiveLayer(c, m.layer(layer), x, layer)), 1e-5) << layer;
  }
  // The layers differ in kind: the same weights in the other position give another output.
  EXPECT_GT(MaxAbsDiff(m.layer(0).Forward(c, x, rope, 0), m.layer(0).Forward(c, x, rope, 1)), 1e-4);

  at::Tensor ids = Ids(1, 6, c.vocab_size, 6);
  const at::Tensor embed = *m.NamedParameters()[0].second;
  at::Tensor h = at::embedding(embed, ids) * std::sqrt(static_cast<double>(c.hidden_size));
  for (int64_t layer = 0; layer < c.num_hidden_layers; ++layer)
    h = NaiveLayer(c, m.layer(layer), h, layer);
  at::Tensor final_norm;
  for (auto& [name, t] : m.NamedParameters())
    if (name == "model.norm.weight") final_norm = *t;
  h = (final_norm + 1) * (h / at::sqrt(h.pow(2).mean(-1, true) + c.rms_norm_eps));
  at::Tensor want = at::tanh(at::matmul(h, embed.t()) / 2.0) * 2.0;
  const at::Tensor got = m.Forward(ids);
  EXPECT_LT(MaxAbsDiff(got, want), 1e-5);
  EXPECT_LE(got.abs().max().item<double>(), 2.0);  // capped

  // Saved under transformers' names with its fields, and loaded back the same.
  const std::string dir = ::testing::TempDir() + "/gemma3_" + std::to_string(::getpid());
  ASSERT_TRUE(m.Save(dir, at::kFloat).ok());
  auto reader = CheckpointReader::Open(dir);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->Contains("model.layers.1.pre_feedforward_layernorm.weight"));
  EXPECT_TRUE((*reader)->Contains("model.layers.1.post_feedforward_layernorm.weight"));
  EXPECT_TRUE((*reader)->Contains("model.layers.0.self_attn.q_norm.weight"));
  EXPECT_FALSE((*reader)->Contains("lm_head.weight"));  // tied
  auto config = LoadLlamaConfig(dir);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->layer_types, c.layer_types);
  EXPECT_EQ(config->rope_local_theta, 1e4);
  EXPECT_EQ(config->query_pre_attn_scalar, 12);
  EXPECT_EQ(config->final_logit_softcapping, 2.0);
  ASSERT_TRUE(config->rope_scaling.has_value());
  EXPECT_EQ(config->rope_scaling->rope_type, "linear");
  EXPECT_TRUE(config->tie_word_embeddings);
  auto loaded = LlamaModel::Load(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_LT(MaxAbsDiff(loaded->Forward(ids), got), 1e-6);
  size_t names = 0;
  for (const auto& [name, shape] : CheckpointTensorShapes(c))
    names += (*reader)->Contains(name) ? 1 : 0;
  EXPECT_EQ(names, CheckpointTensorShapes(c).size());
  EXPECT_EQ(names, (*reader)->names().size());
  RemoveTree(dir).IgnoreError();
}

// A student cut from a Gemma-3 teacher keeps each kept layer's attention kind.
TEST(LlamaModelTest, KeptLayersKeepTheirAttentionKinds) {
  LlamaConfig c = SmallGemmaConfig();
  c.num_hidden_layers = 6;
  c.layer_types = {"sliding_attention", "sliding_attention", "full_attention",
                   "sliding_attention", "sliding_attention", "full_attention"};
  const LlamaConfig kept = KeepLayers(c, {0, 2, 5});
  EXPECT_EQ(kept.num_hidden_layers, 3);
  EXPECT_EQ(kept.layer_types,
            (std::vector<std::string>{"sliding_attention", "full_attention", "full_attention"}));
  EXPECT_EQ(kept.LayerWindow(0), 3);
  EXPECT_EQ(kept.LayerWindow(1), 0);
  EXPECT_EQ(WithLayerCount(c, 7).layer_types.size(), 7u);
  EXPECT_EQ(WithLayerCount(c, 7).layer_types[5], "full_attention");
  // Models without per-layer kinds have none to keep.
  EXPECT_TRUE(KeepLayers(SmallConfig(), {0}).layer_types.empty());
}

// Phi-3 stores q/k/v as one qkv_proj and gate/up as one gate_up_proj: saved fused, under the
// names transformers uses, and split again on load.
TEST(LlamaModelTest, Phi3FusedProjectionsRoundTrip) {
  LlamaConfig c = SmallConfig(/*kv_heads=*/2);
  c.model_type = "phi3";
  LlamaModel m = LlamaModel::RandomInit(c, 10);
  const std::string dir = ::testing::TempDir() + "/phi3_" + std::to_string(::getpid());
  ASSERT_TRUE(m.Save(dir, at::kFloat).ok());
  auto reader = CheckpointReader::Open(dir);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->Contains("model.layers.0.self_attn.qkv_proj.weight"));
  EXPECT_TRUE((*reader)->Contains("model.layers.1.mlp.gate_up_proj.weight"));
  EXPECT_FALSE((*reader)->Contains("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_FALSE((*reader)->Contains("model.layers.0.mlp.up_proj.weight"));
  // The fused rows are q, k, v in that order.
  auto qkv = (*reader)->Get("model.layers.0.self_attn.qkv_proj.weight");
  ASSERT_TRUE(qkv.ok());
  auto fused = ToTorch(*qkv);
  ASSERT_TRUE(fused.ok());
  const int64_t q_rows = c.num_attention_heads * c.head_dim;
  const int64_t kv_rows = c.num_key_value_heads * c.head_dim;
  EXPECT_EQ(fused->size(0), q_rows + 2 * kv_rows);
  EXPECT_LT(MaxAbsDiff(fused->narrow(0, q_rows, kv_rows), m.layer(0).k_proj.weight), 1e-7);
  auto loaded = LlamaModel::Load(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_LT(MaxAbsDiff(loaded->layer(1).up_proj.weight, m.layer(1).up_proj.weight), 1e-7);
  at::Tensor ids = at::randint(0, c.vocab_size, {1, 6}, at::kLong);
  EXPECT_LT(MaxAbsDiff(loaded->Forward(ids), m.Forward(ids)), 1e-6);
  // The config's shapes name the fused tensors, so a submitted checkpoint is checked as stored.
  bool named = false;
  for (const auto& [name, shape] : CheckpointTensorShapes(c))
    named = named || (name == "model.layers.0.self_attn.qkv_proj.weight" &&
                      shape == std::vector<int64_t>{q_rows + 2 * kv_rows, c.hidden_size});
  EXPECT_TRUE(named);
  RemoveTree(dir).IgnoreError();
}

TEST(LlamaModelTest, PerLayerPathEqualsWholeModelAndObserverSeesEveryLinear) {
  LlamaConfig c = SmallConfig();
  LlamaModel m = LlamaModel::RandomInit(c, 3);
  at::Tensor ids = Ids(2, 9, c.vocab_size, 4);

  struct Recorder : LinearObserver {
    std::vector<std::tuple<int64_t, std::string, std::vector<int64_t>>> seen;
    void OnLinearInput(int64_t layer, absl::string_view name, const at::Tensor& input) override {
      seen.emplace_back(layer, std::string(name), input.sizes().vec());
    }
  } recorder;
  at::Tensor h = m.Embed(ids);
  const RotaryTables rope = m.Rotary(9, at::kCPU, at::kFloat);
  for (int64_t i = 0; i < m.num_layers(); ++i) h = m.layer(i).Forward(c, h, rope, i, &recorder);
  at::Tensor per_layer = m.Head(h);
  EXPECT_TRUE(at::equal(per_layer, m.Forward(ids)));

  ASSERT_EQ(recorder.seen.size(), 14u);  // 7 linears x 2 layers
  EXPECT_EQ(std::get<1>(recorder.seen[3]), "self_attn.o_proj");
  EXPECT_EQ(std::get<2>(recorder.seen[3]), (std::vector<int64_t>{2, 9, 32}));
  EXPECT_EQ(std::get<1>(recorder.seen[6]), "mlp.down_proj");
  EXPECT_EQ(std::get<2>(recorder.seen[6]), (std::vector<int64_t>{2, 9, 48}));
  EXPECT_EQ(std::get<0>(recorder.seen[13]), 1);
}

TEST(LlamaModelTest, IsCausal) {
  LlamaConfig c = SmallConfig();
  LlamaModel m = LlamaModel::RandomInit(c, 5);
  at::Tensor ids = Ids(1, 10, c.vocab_size, 6);
  at::Tensor changed = ids.clone();
  changed[0][7] = (ids[0][7].item<int64_t>() + 1) % c.vocab_size;
  at::Tensor a = m.Forward(ids), b = m.Forward(changed);
  EXPECT_TRUE(at::allclose(a.slice(1, 0, 7), b.slice(1, 0, 7)));
  EXPECT_FALSE(at::allclose(a.slice(1, 7), b.slice(1, 7)));
}

TEST(LlamaModelTest, GroupedQueryAttentionEqualsMultiHeadWithRepeatedKeyValues) {
  LlamaConfig gqa = SmallConfig(/*kv_heads=*/1);
  LlamaModel g = LlamaModel::RandomInit(gqa, 7);
  LlamaConfig mha_config = SmallConfig(/*kv_heads=*/4);
  LlamaModel mha = LlamaModel::RandomInit(mha_config, 8);
  // Copy everything, repeating the single key/value head four times.
  auto gp = g.NamedParameters();
  auto mp = mha.NamedParameters();
  for (size_t i = 0; i < gp.size(); ++i) {
    at::Tensor src = *gp[i].second;
    if (gp[i].first.find("k_proj") != std::string::npos ||
        gp[i].first.find("v_proj") != std::string::npos) {
      src = src.repeat({4, 1});
    }
    *mp[i].second = src.clone();
  }
  at::Tensor ids = Ids(2, 6, gqa.vocab_size, 9);
  EXPECT_LT(MaxAbsDiff(g.Forward(ids), mha.Forward(ids)), 1e-5);
}

TEST(LlamaModelTest, SaveLoadRoundTripIsBitExact) {
  for (bool tied : {false, true}) {
    LlamaConfig c = SmallConfig(2, tied);
    c.attention_bias = true;
    c.mlp_bias = true;
    LlamaModel m = LlamaModel::RandomInit(c, 10);
    for (auto& [name, t] : m.NamedParameters()) {
      if (name.find("bias") != std::string::npos) t->normal_();
    }
    TempDir dir;
    ASSERT_TRUE(m.Save(dir.str(), at::kFloat).ok());
    auto loaded = LlamaModel::Load(dir.str());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    auto a = m.NamedParameters();
    auto b = loaded->NamedParameters();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].first, b[i].first);
      EXPECT_TRUE(at::equal(*a[i].second, *b[i].second)) << a[i].first;
    }
    at::Tensor ids = Ids(1, 5, c.vocab_size, 11);
    EXPECT_TRUE(at::equal(m.Forward(ids), loaded->Forward(ids)));
    auto reader = CheckpointReader::Open(dir.str());
    EXPECT_EQ((*reader)->Contains("lm_head.weight"), !tied);
  }
}

TEST(LlamaModelTest, NonFiniteWeightsAreAnErrorNamingTheTensor) {
  LlamaConfig c = SmallConfig();
  LlamaModel m = LlamaModel::RandomInit(c, 12);
  m.layer(1).up_proj.weight[3][5] = std::numeric_limits<float>::quiet_NaN();
  TempDir dir;
  ASSERT_TRUE(m.Save(dir.str(), at::kFloat).ok());
  auto loaded = LlamaModel::Load(dir.str());
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(loaded.status().message().find(
                "tensor \"model.layers.1.mlp.up_proj.weight\" holds NaN or Inf"),
            absl::string_view::npos)
      << loaded.status();
}

TEST(LlamaModelTest, ShardedSaveLoadsTheSame) {
  LlamaConfig c = SmallConfig();
  LlamaModel m = LlamaModel::RandomInit(c, 12);
  TempDir dir;
  ASSERT_TRUE(m.Save(dir.str(), at::kBFloat16, /*max_shard_bytes=*/8192).ok());
  EXPECT_TRUE(fs::exists(fs::path(dir.str()) / "model.safetensors.index.json"));
  auto loaded = LlamaModel::Load(dir.str(), at::kBFloat16);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  at::Tensor ids = Ids(1, 5, c.vocab_size, 13);
  EXPECT_TRUE(at::equal(m.To(at::kCPU, at::kBFloat16).Forward(ids), loaded->Forward(ids)));
}

TEST(LlamaModelTest, Bfloat16StaysCloseToFloat32) {
  LlamaConfig c = SmallConfig();
  LlamaModel m = LlamaModel::RandomInit(c, 14);
  at::Tensor ids = Ids(2, 8, c.vocab_size, 15);
  at::Tensor f32 = m.Forward(ids);
  at::Tensor bf16 = m.To(at::kCPU, at::kBFloat16).Forward(ids);
  EXPECT_EQ(bf16.scalar_type(), at::kBFloat16);
  EXPECT_LT(MaxAbsDiff(f32, bf16) / f32.abs().max().item<double>(), 2e-2);
}

TEST(LlamaModelTest, Llama3RopeScalingKeepsHighAndStretchesLowFrequencies) {
  LlamaConfig c = SmallConfig();
  c.head_dim = 64;
  c.num_attention_heads = 1;
  c.hidden_size = 64;
  c.rope_theta = 500000.0;
  at::Tensor plain = RotaryInverseFrequencies(c);
  c.rope_scaling = RopeScaling{"llama3", 8.0, 1.0, 4.0, 8192};
  at::Tensor scaled = RotaryInverseFrequencies(c);
  const int64_t n = plain.size(0);
  // Wavelength 2*pi/f: below 8192/4 kept, above 8192/1 divided by the factor, smooth between.
  for (int64_t i = 0; i < n; ++i) {
    const double f = plain[i].item<double>(), g = scaled[i].item<double>();
    const double wavelen = 2 * M_PI / f;
    if (wavelen < 2048) {
      EXPECT_NEAR(g, f, 1e-12 + f * 1e-6) << i;
    } else if (wavelen > 8192) {
      EXPECT_NEAR(g, f / 8.0, f * 1e-6) << i;
    } else {
      EXPECT_LE(g, f * (1 + 1e-6));
      EXPECT_GE(g, f / 8.0 * (1 - 1e-6));
    }
  }
  // The scaled model runs and differs from the unscaled one at long positions.
  LlamaConfig small = SmallConfig();
  small.rope_scaling = RopeScaling{"llama3", 8.0, 1.0, 4.0, 16};
  LlamaModel m = LlamaModel::RandomInit(small, 16);
  EXPECT_TRUE(at::isfinite(m.Forward(Ids(1, 40, small.vocab_size, 17))).all().item<bool>());
}

TEST(LlamaModelTest, LoadErrorsNameTheTensor) {
  LlamaConfig c = SmallConfig();
  LlamaModel m = LlamaModel::RandomInit(c, 18);
  TempDir dir;
  ASSERT_TRUE(m.Save(dir.str(), at::kFloat).ok());
  // A config that disagrees with the stored shapes.
  LlamaConfig wider = c;
  wider.intermediate_size = 64;
  auto reader = CheckpointReader::Open(dir.str());
  ASSERT_TRUE(reader.ok());
  auto loaded = LlamaModel::FromCheckpoint(wider, **reader, at::kFloat, at::kCPU);
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("model.layers.0.mlp.gate_proj.weight"),
            absl::string_view::npos)
      << loaded.status().message();
  EXPECT_NE(loaded.status().message().find("[48, 32]"), absl::string_view::npos);
  // A checkpoint missing a tensor.
  LlamaConfig deeper = c;
  deeper.num_hidden_layers = 3;
  loaded = LlamaModel::FromCheckpoint(deeper, **reader, at::kFloat, at::kCPU);
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find("model.layers.2."), absl::string_view::npos);
}

TEST(LlamaModelTest, CopyWeightsFromKeepsTensorIdentity) {
  LlamaConfig c = SmallConfig();
  LlamaModel a = LlamaModel::RandomInit(c, 19);
  LlamaModel b = LlamaModel::RandomInit(c, 20);
  TempDir dir;
  ASSERT_TRUE(a.Save(dir.str(), at::kFloat).ok());
  const void* before = b.NamedParameters()[0].second->data_ptr();
  auto reader = CheckpointReader::Open(dir.str());
  ASSERT_TRUE(b.CopyWeightsFrom(**reader).ok());
  EXPECT_EQ(b.NamedParameters()[0].second->data_ptr(), before);
  at::Tensor ids = Ids(1, 4, c.vocab_size, 21);
  EXPECT_TRUE(at::equal(a.Forward(ids), b.Forward(ids)));
}

}  // namespace
}  // namespace squeeze
