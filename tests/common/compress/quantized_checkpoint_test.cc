#include "common/compress/quantized_checkpoint.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/base/file_util.h"
#include "common/compress/sequential_quantizer.h"
#include "gtest/gtest.h"

namespace squeeze {
namespace {

LlamaConfig SmallConfig() {
  LlamaConfig c;
  c.vocab_size = 96;
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  return c;
}

class QuantizedCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() /
            ("quantized_checkpoint_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }

  // Quantizes a random model layer by layer and returns the quantized linears by name, with
  // scales rounded to what a checkpoint holds.
  std::map<std::string, QuantizedWeight> Quantize(LlamaModel& model, SequentialOptions seq) {
    std::map<std::string, QuantizedWeight> quantized;
    seq.on_linear = [&](int64_t layer, const std::string& name, const QuantizedWeight& q) {
      QuantizedWeight copy = q;
      copy.scales = q.scales.to(at::kHalf).to(at::kFloat);
      quantized["model.layers." + std::to_string(layer) + "." + name] = copy;
    };
    at::Tensor calibration = at::randint(0, 96, {8, 24}, at::kLong);
    EXPECT_TRUE(QuantizeSequential(model, calibration, seq).ok());
    return quantized;
  }

  // Every quantized linear of `loaded` holds exactly the dequantized codes.
  void ExpectWeights(LlamaModel& loaded, const std::map<std::string, QuantizedWeight>& quantized) {
    for (const auto& [prefix, q] : quantized) {
      const int64_t layer = std::stoi(prefix.substr(13));
      const std::string name = prefix.substr(prefix.find('.', 13) + 1);
      bool found = false;
      for (auto& [n, linear] : loaded.layer(layer).Linears()) {
        if (n != name) continue;
        found = true;
        EXPECT_TRUE(at::equal(linear->weight, q.Dequantize())) << prefix;
      }
      EXPECT_TRUE(found) << prefix;
    }
  }

  nlohmann::json QuantizationConfig() {
    auto config = LoadLlamaConfig(dir_);
    EXPECT_TRUE(config.ok()) << config.status();
    return nlohmann::json::parse(config->extra_json)["quantization_config"];
  }

  // Rewrites one field of config.json's quantization_config.
  void EditQuantizationConfig(const std::string& field, const nlohmann::json& value) {
    const std::string path = dir_ + "/config.json";
    std::ifstream in(path);
    nlohmann::json config = nlohmann::json::parse(in);
    config["quantization_config"][field] = value;
    std::ofstream(path, std::ios::trunc) << config.dump();
  }

  std::string dir_;
};

TEST_F(QuantizedCheckpointTest, GptqExportLoadsBackToTheQuantizedWeights) {
  LlamaModel model = LlamaModel::RandomInit(SmallConfig(), 7);
  SequentialOptions seq;
  seq.method = SequentialOptions::Method::kGptq;
  seq.gptq.quant = {4, 32, true};
  seq.gptq.act_order = true;
  seq.batch_size = 4;
  const auto quantized = Quantize(model, seq);
  EXPECT_EQ(quantized.size(), 14u);

  QuantizedExportOptions options;
  options.gptq = seq.gptq;
  const absl::Status written = WriteQuantizedCheckpoint(dir_, model, quantized, options);
  ASSERT_TRUE(written.ok()) << written;
  const nlohmann::json qc = QuantizationConfig();
  EXPECT_EQ(qc["quant_method"], "gptq");
  EXPECT_EQ(qc["checkpoint_format"], "gptq");
  EXPECT_EQ(qc["desc_act"], true);
  EXPECT_EQ(qc["bits"], 4);
  EXPECT_EQ(qc["meta"]["method"], "gptq");
  EXPECT_EQ(qc["meta"]["quantizer"][0].get<std::string>().rfind("squeeze:", 0), 0u);
  EXPECT_EQ(qc["damp_percent"], seq.gptq.damp);
  auto reader = CheckpointReader::Open(dir_);
  ASSERT_TRUE(reader.ok());
  EXPECT_TRUE((*reader)->Contains("model.layers.1.mlp.down_proj.qweight"));
  EXPECT_TRUE((*reader)->Contains("model.layers.1.mlp.down_proj.g_idx"));
  EXPECT_FALSE((*reader)->Contains("model.layers.1.mlp.down_proj.weight"));

  auto loaded = LoadModel(dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectWeights(*loaded, quantized);
}

TEST_F(QuantizedCheckpointTest, AwqGemmExportLoadsBackWithTheConfigLoadersRead) {
  LlamaModel model = LlamaModel::RandomInit(SmallConfig(), 8);
  SequentialOptions seq;
  seq.method = SequentialOptions::Method::kRtn;
  seq.gptq.quant = {4, 32, false};
  const auto quantized = Quantize(model, seq);

  QuantizedExportOptions options;
  options.gptq = seq.gptq;
  options.format = QuantizedFormat::kAwqGemm;
  const absl::Status written = WriteQuantizedCheckpoint(dir_, model, quantized, options);
  ASSERT_TRUE(written.ok()) << written;
  const nlohmann::json qc = QuantizationConfig();
  EXPECT_EQ(qc["quant_method"], "awq");
  EXPECT_EQ(qc["version"], "gemm");
  EXPECT_EQ(qc["zero_point"], true);
  EXPECT_EQ(qc["bits"], 4);
  EXPECT_EQ(qc["group_size"], 32);
  auto reader = CheckpointReader::Open(dir_);
  ASSERT_TRUE(reader.ok());
  // AutoAWQ's shapes: qweight [in, out / 8], qzeros [in / group, out / 8], scales [in / group,
  // out]; no g_idx.
  auto qweight = (*reader)->Get("model.layers.0.mlp.down_proj.qweight");
  auto qzeros = (*reader)->Get("model.layers.0.mlp.down_proj.qzeros");
  auto scales = (*reader)->Get("model.layers.0.mlp.down_proj.scales");
  ASSERT_TRUE(qweight.ok() && qzeros.ok() && scales.ok());
  EXPECT_EQ(qweight->info->shape, (std::vector<int64_t>{128, 8}));
  EXPECT_EQ(qzeros->info->shape, (std::vector<int64_t>{4, 8}));
  EXPECT_EQ(scales->info->shape, (std::vector<int64_t>{4, 64}));
  EXPECT_FALSE((*reader)->Contains("model.layers.0.mlp.down_proj.g_idx"));

  auto loaded = LoadModel(dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectWeights(*loaded, quantized);

  // A different label on the same tensors is refused by name, never misread.
  EditQuantizationConfig("version", "gemv");
  auto gemv = LoadModel(dir_);
  ASSERT_FALSE(gemv.ok());
  EXPECT_NE(gemv.status().message().find("quantization_config.version"), std::string::npos)
      << gemv.status();
  EditQuantizationConfig("version", "GEMM");  // AutoAWQ's enum spelling reads the same
  EXPECT_TRUE(LoadModel(dir_).ok());
  EditQuantizationConfig("zero_point", false);
  auto no_zeros = LoadModel(dir_);
  ASSERT_FALSE(no_zeros.ok());
  EXPECT_NE(no_zeros.status().message().find("zero_point"), std::string::npos);
  EditQuantizationConfig("zero_point", true);
  EditQuantizationConfig("quant_method", "exl2");
  auto other = LoadModel(dir_);
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.status().message().find("quantization_config.quant_method"), std::string::npos);
}

TEST_F(QuantizedCheckpointTest, CompressedTensorsInt8LoadsBackWithItsInputQuantization) {
  LlamaModel model = LlamaModel::RandomInit(SmallConfig(), 9);
  SequentialOptions seq;
  seq.method = SequentialOptions::Method::kRtn;
  seq.gptq.quant = {8, -1, true};
  const auto quantized = Quantize(model, seq);
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (auto& [n, linear] : model.layer(i).Linears())
      linear->input_quant = {ActivationQuant::Kind::kStaticPerTensor, 8, at::full({1}, 0.05)};
  }
  QuantizedExportOptions options;
  options.gptq = seq.gptq;
  options.format = QuantizedFormat::kCompressedTensorsInt8;
  options.activations = ActivationQuant::Kind::kStaticPerTensor;
  const absl::Status written = WriteQuantizedCheckpoint(dir_, model, quantized, options);
  ASSERT_TRUE(written.ok()) << written;
  const nlohmann::json qc = QuantizationConfig();
  EXPECT_EQ(qc["quant_method"], "compressed-tensors");
  EXPECT_EQ(qc["format"], "int-quantized");
  EXPECT_EQ(qc["ignore"], nlohmann::json({"lm_head"}));
  const nlohmann::json& group = qc["config_groups"]["group_0"];
  EXPECT_EQ(group["targets"], nlohmann::json({"Linear"}));
  EXPECT_EQ(group["weights"]["strategy"], "channel");
  EXPECT_EQ(group["weights"]["num_bits"], 8);
  EXPECT_EQ(group["input_activations"]["strategy"], "tensor");
  EXPECT_EQ(group["input_activations"]["dynamic"], false);
  auto reader = CheckpointReader::Open(dir_);
  ASSERT_TRUE(reader.ok());
  auto weight = (*reader)->Get("model.layers.0.mlp.up_proj.weight");
  ASSERT_TRUE(weight.ok());
  EXPECT_EQ(weight->info->dtype, DType::kI8);

  auto loaded = LoadModel(dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectWeights(*loaded, quantized);
  const ActivationQuant& q = loaded->layer(1).o_proj.input_quant;
  ASSERT_EQ(q.kind, ActivationQuant::Kind::kStaticPerTensor);
  EXPECT_FLOAT_EQ(q.scale.item<float>(), 0.05f);

  // Input quantization the layer cannot run as labelled is refused by field, never guessed.
  nlohmann::json mixed = group["input_activations"];
  mixed["strategy"] = "token";
  mixed["dynamic"] = false;
  std::ifstream in(dir_ + "/config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  config["quantization_config"]["config_groups"]["group_0"]["input_activations"] = mixed;
  std::ofstream(dir_ + "/config.json", std::ios::trunc) << config.dump();
  auto refused = LoadModel(dir_);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("config_groups.group_0.input_activations"),
            std::string::npos)
      << refused.status();
  EditQuantizationConfig("format", "pack-quantized");
  EXPECT_NE(LoadModel(dir_).status().message().find("quantization_config.format"),
            std::string::npos);
}

// Mixed precision: GPTQModel's `dynamic` overrides name each module's width; the loader unpacks
// each module at its own width.
TEST_F(QuantizedCheckpointTest, PerModuleWidthsAreWrittenAsDynamicOverridesAndReadBack) {
  LlamaModel model = LlamaModel::RandomInit(SmallConfig(), 10);
  std::map<std::string, QuantizedWeight> quantized;
  std::map<std::string, int> widths;
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (auto& [n, linear] : model.layer(i).Linears()) {
      const std::string module = "model.layers." + std::to_string(i) + "." + n;
      int bits = 4;
      if (i == 0 && n == "mlp.down_proj") bits = 8;
      if (i == 1 && n.rfind("self_attn.", 0) == 0 && n != "self_attn.o_proj") bits = 3;
      if (bits != 4) widths[module] = bits;
      auto q = QuantizeRtn(linear->weight, QuantSpec{bits, 32, false});
      ASSERT_TRUE(q.ok());
      q->scales = q->scales.to(at::kHalf).to(at::kFloat);
      quantized[module] = *q;
    }
  }
  QuantizedExportOptions options;
  options.gptq.quant = {4, 32, false};
  options.bits_by_module = widths;
  const absl::Status written = WriteQuantizedCheckpoint(dir_, model, quantized, options);
  ASSERT_TRUE(written.ok()) << written;
  const nlohmann::json qc = QuantizationConfig();
  ASSERT_TRUE(qc.contains("dynamic")) << qc.dump();
  EXPECT_EQ(qc["dynamic"].size(), 2u) << qc["dynamic"].dump();
  auto overrides = ParseDynamicOverrides(qc["dynamic"].dump(), "dynamic");
  ASSERT_TRUE(overrides.ok()) << overrides.status();
  auto width = [&](const std::string& module) {
    const DynamicOverride* o = FindOverride(*overrides, module);
    return o ? o->bits.value_or(4) : 4;
  };
  EXPECT_EQ(width("model.layers.0.mlp.down_proj"), 8);
  EXPECT_EQ(width("model.layers.1.self_attn.k_proj"), 3);
  EXPECT_EQ(width("model.layers.1.self_attn.qkv_proj"), 3) << "vLLM's fused name matches too";
  EXPECT_EQ(width("model.layers.1.self_attn.o_proj"), 4);
  EXPECT_EQ(width("model.layers.10.mlp.down_proj"), 4) << "anchored: layer 1 is not layer 10";
  auto loaded = LoadModel(dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectWeights(*loaded, quantized);

  // A skip pattern leaves a module unquantized; bad patterns and widths are refused by key.
  auto skip = ParseDynamicOverrides(R"({"-:.*lm_head": {}, "+:.*down_proj$": {"bits": 8}})", "d");
  ASSERT_TRUE(skip.ok()) << skip.status();
  ASSERT_NE(FindOverride(*skip, "lm_head"), nullptr);
  EXPECT_TRUE(FindOverride(*skip, "lm_head")->skip);
  EXPECT_EQ(FindOverride(*skip, "model.layers.0.mlp.up_proj"), nullptr);
  EXPECT_NE(ParseDynamicOverrides(R"({"+:(": {"bits": 8}})", "d")
                .status()
                .message()
                .find("not a regular expression"),
            std::string::npos);
  EXPECT_NE(ParseDynamicOverrides(R"({"+:x": {"bits": 5}})", "d")
                .status()
                .message()
                .find("d[\"+:x\"].bits"),
            std::string::npos);
}

TEST_F(QuantizedCheckpointTest, AwqGemmRefusesWhatItCannotHold) {
  GptqOptions options;
  options.quant = {3, 128, false};
  EXPECT_NE(CheckPackable(QuantizedFormat::kAwqGemm, options, 256, 256).message().find("4-bit"),
            std::string::npos);
  options.quant.bits = 4;
  EXPECT_TRUE(CheckPackable(QuantizedFormat::kAwqGemm, options, 256, 256).ok());
  EXPECT_NE(
      CheckPackable(QuantizedFormat::kAwqGemm, options, 256, 252).message().find("multiple of 8"),
      std::string::npos);
  EXPECT_NE(
      CheckPackable(QuantizedFormat::kAwqGemm, options, 200, 256).message().find("group_size"),
      std::string::npos);
  options.act_order = true;
  EXPECT_FALSE(CheckPackable(QuantizedFormat::kAwqGemm, options, 256, 256).ok());
  // The GPTQ layout holds 3-bit codes where 32-bit words fill.
  options = GptqOptions();
  options.quant = {3, 128, false};
  EXPECT_TRUE(CheckPackable(QuantizedFormat::kGptq, options, 256, 256).ok());
  EXPECT_FALSE(CheckPackable(QuantizedFormat::kGptq, options, 256, 30).ok());
}

}  // namespace
}  // namespace squeeze
