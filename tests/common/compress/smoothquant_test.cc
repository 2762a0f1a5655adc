// SmoothQuant and activation quantization, each against a straightforward implementation in the
// test, and W8A8 end to end on a model with activation outlier channels (as the SmoothQuant paper
// describes them): naive W8A8 is clearly worse than W8A16 there, and SmoothQuant recovers it.
#include "common/compress/smoothquant.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "common/base/file_util.h"
#include "common/compress/quantized_checkpoint.h"
#include "common/compress/streaming_quantizer.h"
#include "common/tensor/torch_tensor.h"
#include "gtest/gtest.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

TEST(SmoothQuantTest, ScalesAreTheFormulaPerChannel) {
  at::manual_seed(1);
  const at::Tensor x = at::rand({16}) * 10;
  const at::Tensor w1 = at::randn({8, 16}), w2 = at::randn({4, 16});
  const at::Tensor s = SmoothQuantScales(x, {w1, w2}, 0.6);
  for (int64_t j = 0; j < 16; ++j) {
    double wmax = 0;
    for (const at::Tensor& w : {w1, w2}) {
      for (int64_t i = 0; i < w.size(0); ++i)
        wmax = std::max(wmax, std::abs(w[i][j].item<double>()));
    }
    const double expected = std::pow(x[j].item<double>(), 0.6) / std::pow(wmax, 0.4);
    EXPECT_NEAR(s[j].item<double>(), expected, 1e-4 * expected) << j;
  }
}

TEST(SmoothQuantTest, DynamicPerTokenAndStaticRoundingMatchALoop) {
  at::manual_seed(2);
  const at::Tensor x = at::randn({3, 5, 32});
  ActivationQuant dynamic{ActivationQuant::Kind::kDynamicPerToken, 8, {}};
  const at::Tensor q = QuantizeActivations(x, dynamic);
  for (int64_t b = 0; b < 3; ++b) {
    for (int64_t t = 0; t < 5; ++t) {
      double m = 0;
      for (int64_t j = 0; j < 32; ++j) m = std::max(m, std::abs(x[b][t][j].item<double>()));
      const double step = m / 127;
      for (int64_t j = 0; j < 32; ++j) {
        const double expected = std::nearbyint(x[b][t][j].item<double>() / step) * step;
        EXPECT_NEAR(q[b][t][j].item<double>(), expected, 1e-5) << b << " " << t << " " << j;
      }
    }
  }
  // Static: one scale; values beyond the calibrated range saturate at -128 and 127 steps.
  ActivationQuant fixed{ActivationQuant::Kind::kStaticPerTensor, 8, at::full({1}, 0.01)};
  const at::Tensor big = at::tensor({-5.0f, -1.2849f, 0.004f, 1.0f, 5.0f});
  const at::Tensor qs = QuantizeActivations(big, fixed);
  const double expected[] = {-1.28, -1.28, 0.0, 1.0, 1.27};
  for (int64_t i = 0; i < 5; ++i) EXPECT_NEAR(qs[i].item<double>(), expected[i], 1e-5) << i;
  EXPECT_TRUE(at::equal(QuantizeActivations(x, ActivationQuant()), x));
}

TEST(SmoothQuantTest, SmoothingLeavesTheLayersFunctionUnchanged) {
  for (const LlamaConfig& c : {TinyLlamaConfig(1, 64), TinyGemmaConfig(64)}) {
    LlamaModel model = LlamaModel::RandomInit(c, 3);
    DecoderLayer& layer = model.layer(0);
    at::manual_seed(4);
    const at::Tensor hidden = at::randn({2, 12, c.hidden_size});
    const RotaryTables rope = MakeRotaryTables(c, 12, at::kCPU, at::kFloat);
    InputAbsMaxObserver observer;
    const at::Tensor before = layer.Forward(c, hidden, rope, 0, &observer);
    ASSERT_EQ(observer.absmax().size(), 7u);
    EXPECT_EQ(observer.absmax().at("self_attn.q_proj").size(0), c.hidden_size);
    const at::Tensor q_before = layer.q_proj.weight.clone();
    ASSERT_TRUE(SmoothDecoderLayer(c, layer, observer.absmax(), 0.5).ok());
    EXPECT_FALSE(at::allclose(layer.q_proj.weight, q_before)) << "the weights took the scales";
    EXPECT_TRUE(at::allclose(layer.Forward(c, hidden, rope, 0), before, 1e-4, 1e-4))
        << c.model_type;
  }
  LlamaModel model = LlamaModel::RandomInit(TinyLlamaConfig(1, 64), 3);
  EXPECT_FALSE(SmoothDecoderLayer(model.config(), model.layer(0), {}, 0.5).ok());
}

class W8A8Test : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("w8a8_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    RemoveTree(dir_).IgnoreError();
    // A model whose linears' inputs have outlier channels: the norms before q/k/v and gate/up
    // are 40x larger on a few channels, as the SmoothQuant paper finds in LLMs past 6.7B.
    c_ = TinyLlamaConfig(/*layers=*/2, /*hidden=*/128, /*vocab=*/128);
    LlamaModel model = LlamaModel::RandomInit(c_, 11);
    for (int64_t i = 0; i < model.num_layers(); ++i) {
      for (int64_t j : {5, 40, 77, 100}) {
        model.layer(i).input_layernorm[j] = 40.0;
        model.layer(i).post_attention_layernorm[j] = 40.0;
      }
    }
    EXPECT_TRUE(model.Save((dir_ / "in").string(), at::kFloat).ok());
    at::manual_seed(5);
    calibration_ = at::randint(0, 128, {16, 32}, at::kLong);
    ids_ = at::randint(0, 128, {4, 32}, at::kLong);
    reference_ = model.Forward(ids_);
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }

  // Quantizes with RTN 8-bit per channel and the given activations; the loaded model's relative
  // logit error against the float model.
  double Error(const std::string& name, ActivationQuant::Kind activations, double alpha,
               ActivationQuant::Kind* loaded_kind = nullptr) {
    StreamingQuantizeOptions o;
    o.sequential.method = SequentialOptions::Method::kRtn;
    o.sequential.gptq.quant = {8, -1, true};
    o.format = QuantizedFormat::kCompressedTensorsInt8;
    o.activations = activations;
    o.smoothquant_alpha = alpha;
    const std::string out = (dir_ / name).string();
    auto result = QuantizeCheckpointStreaming((dir_ / "in").string(), calibration_, out, o);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return NAN;
    EXPECT_EQ(result->format, "compressed_tensors");
    auto loaded = LoadModel(out);
    EXPECT_TRUE(loaded.ok()) << loaded.status();
    if (!loaded.ok()) return NAN;
    if (loaded_kind) *loaded_kind = loaded->layer(1).down_proj.input_quant.kind;
    return ((loaded->Forward(ids_) - reference_).norm() / reference_.norm()).item<double>();
  }

  fs::path dir_;
  LlamaConfig c_;
  at::Tensor calibration_, ids_, reference_;
};

TEST_F(W8A8Test, SmoothQuantRecoversWhatOutlierChannelsCostNaiveW8A8) {
  ActivationQuant::Kind kind;
  const double w8a16 = Error("w8a16", ActivationQuant::Kind::kNone, -1, &kind);
  EXPECT_EQ(kind, ActivationQuant::Kind::kNone);
  const double naive = Error("naive", ActivationQuant::Kind::kDynamicPerToken, -1, &kind);
  EXPECT_EQ(kind, ActivationQuant::Kind::kDynamicPerToken);
  const double smooth = Error("smooth", ActivationQuant::Kind::kDynamicPerToken, 0.5);
  // Static per-tensor scales are coarser than per-token ones (one range for every token).
  const double naive_static = Error("naive_static", ActivationQuant::Kind::kStaticPerTensor, -1);
  const double smooth_static = Error("static", ActivationQuant::Kind::kStaticPerTensor, 0.5, &kind);
  EXPECT_EQ(kind, ActivationQuant::Kind::kStaticPerTensor);
  std::cout << "relative logit error: W8A16 " << w8a16 << "; W8A8 per token: naive " << naive
            << ", SmoothQuant " << smooth << "; W8A8 static: naive " << naive_static
            << ", SmoothQuant " << smooth_static << "\n";
  EXPECT_GT(naive, 3 * w8a16) << "outlier channels make per-token int8 inputs coarse";
  EXPECT_LT(smooth, 0.5 * naive) << "smoothing moves the range into the weights";
  EXPECT_LT(smooth_static, 0.7 * naive_static);
}

TEST_F(W8A8Test, StaticScalesAreStoredReadBackAndResumed) {
  StreamingQuantizeOptions o;
  o.sequential.method = SequentialOptions::Method::kGptq;
  o.sequential.gptq.quant = {8, -1, true};
  o.format = QuantizedFormat::kCompressedTensorsInt8;
  o.activations = ActivationQuant::Kind::kStaticPerTensor;
  o.smoothquant_alpha = 0.5;
  const std::string first = (dir_ / "first").string();
  ASSERT_TRUE(QuantizeCheckpointStreaming((dir_ / "in").string(), calibration_, first, o).ok());
  auto reader = CheckpointReader::Open(first);
  ASSERT_TRUE(reader.ok());
  auto weight = (*reader)->Get("model.layers.1.mlp.down_proj.weight");
  auto scale = (*reader)->Get("model.layers.1.mlp.down_proj.weight_scale");
  auto input_scale = (*reader)->Get("model.layers.1.mlp.down_proj.input_scale");
  ASSERT_TRUE(weight.ok() && scale.ok() && input_scale.ok());
  EXPECT_EQ(weight->info->dtype, DType::kI8);
  EXPECT_EQ(scale->info->shape, (std::vector<int64_t>{c_.hidden_size, 1}));
  EXPECT_EQ(input_scale->info->shape, (std::vector<int64_t>{1}));
  auto loaded = LoadModel(first);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const ActivationQuant& q = loaded->layer(1).down_proj.input_quant;
  ASSERT_EQ(q.kind, ActivationQuant::Kind::kStaticPerTensor);
  EXPECT_GT(q.scale.item<float>(), 0.0f);

  // Resumed after layer 0: layer 1 is quantized from the restored (smoothed, scaled) layer 0 and
  // comes out the same.
  o.start_layer = 1;
  o.finished_shard = [&](int64_t layer) -> absl::StatusOr<std::string> {
    return first + "/model-0000" + std::to_string(layer + 1) + "-of-00003.safetensors";
  };
  const std::string second = (dir_ / "second").string();
  ASSERT_TRUE(QuantizeCheckpointStreaming((dir_ / "in").string(), calibration_, second, o).ok());
  auto a = CheckpointReader::Open(first);
  auto b = SafetensorsFile::Open(second + "/model-00002-of-00003.safetensors");
  ASSERT_TRUE(a.ok() && b.ok()) << b.status();
  for (const char* name :
       {"model.layers.1.mlp.down_proj.input_scale", "model.layers.1.self_attn.q_proj.weight_scale",
        "model.layers.1.input_layernorm.weight"}) {
    auto x = (*a)->Get(name);
    auto y = (*b)->Get(name);
    ASSERT_TRUE(x.ok() && y.ok()) << name;
    EXPECT_TRUE(at::allclose(*ToTorch(*x), *ToTorch(*y), 1e-5, 1e-6))
        << name << ": " << (*ToTorch(*x) - *ToTorch(*y)).abs().max().item<float>() << " of "
        << ToTorch(*x)->abs().max().item<float>();
  }
}

}  // namespace
}  // namespace squeeze
