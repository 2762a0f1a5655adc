// LoRA adapters: fresh ones leave the model's function unchanged; written in PEFT's layout they
// merge into the weights to the function the adapted model computes; gradient checkpointing
// (with dropout) gives the gradients of the plain backward pass; bad targets, ranks, configs and
// files are refused by name.
#include "common/model/lora.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/base/file_util.h"
#include "gtest/gtest.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

LoraOptions Options() {
  LoraOptions o;
  o.targets = {"q_proj", "v_proj", "down_proj"};
  o.rank = 4;
  o.alpha = 8;
  o.seed = 1;
  return o;
}

at::Tensor Ids(const LlamaConfig& c) {
  return at::randint(c.vocab_size, {2, 12}, at::TensorOptions().dtype(at::kLong));
}

void RandomizeAdapters(LlamaModel& m) {
  c10::NoGradGuard no_grad;
  at::manual_seed(3);
  for (auto& [name, t] : m.TrainableParameters()) t->normal_(0.0, 0.2);
}

class LoraTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lora_test_" + std::to_string(::getpid()));
    RemoveTree(dir_.string()).IgnoreError();
    fs::create_directories(dir_);
  }
  void TearDown() override { RemoveTree(dir_.string()).IgnoreError(); }
  fs::path dir_;
};

TEST_F(LoraTest, FreshAdaptersChangeNothingAndSavedAdaptersMergeToTheSameFunction) {
  const LlamaConfig c = TinyLlamaConfig();
  LlamaModel m = LlamaModel::RandomInit(c, 1);
  const at::Tensor ids = Ids(c);
  c10::NoGradGuard no_grad;
  const at::Tensor before = m.Forward(ids);
  ASSERT_TRUE(AttachLoraAdapters(m, Options()).ok());
  EXPECT_TRUE(at::allclose(m.Forward(ids), before, 1e-6, 1e-7)) << "B starts at zero";
  const auto trainable = m.TrainableParameters();
  ASSERT_EQ(trainable.size(), 2u * 3 * 2);
  EXPECT_EQ(trainable[0].first, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(trainable[0].second->sizes(), (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(trainable[1].second->sizes(), (std::vector<int64_t>{32, 4}));
  EXPECT_EQ(LoraParameterCount(m), 2 * (4 * (32 + 32) + 4 * (32 + 16) + 4 * (64 + 32)));
  const double bound = 1.0 / std::sqrt(32.0);
  EXPECT_LE(trainable[0].second->abs().max().item<double>(), bound);

  RandomizeAdapters(m);
  const at::Tensor adapted = m.Forward(ids);
  EXPECT_FALSE(at::allclose(adapted, before, 1e-3, 1e-3));
  ASSERT_TRUE(SaveLoraAdapters(m, Options(), "base-model", dir_.string()).ok());
  std::ifstream config_file(dir_ / kLoraConfigFile);
  std::stringstream text;
  text << config_file.rdbuf();
  auto parsed = ParseLoraAdapterConfig(text.str(), "adapter_config.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->rank, 4);
  EXPECT_DOUBLE_EQ(parsed->alpha, 8.0);
  EXPECT_EQ(parsed->targets, Options().targets);

  LlamaModel merged = LlamaModel::RandomInit(c, 1);
  ASSERT_TRUE(MergeLoraAdapters(dir_.string(), merged).ok());
  EXPECT_FALSE(merged.has_adapters());
  EXPECT_TRUE(at::allclose(merged.Forward(ids), adapted, 1e-4, 1e-5));
}

// The recomputed backward pass (same dropout masks) gives the plain backward pass's gradients,
// for adapters on a frozen base and for a whole model.
TEST_F(LoraTest, GradientCheckpointingGivesTheSameGradients) {
  const LlamaConfig c = TinyLlamaConfig(/*layers=*/3);
  const at::Tensor ids = Ids(c);
  for (const bool adapters : {true, false}) {
    SCOPED_TRACE(adapters ? "adapters" : "whole model");
    std::vector<std::vector<at::Tensor>> grads;
    for (const bool checkpointed : {false, true}) {
      LlamaModel m = LlamaModel::RandomInit(c, 2);
      if (adapters) {
        LoraOptions o = Options();
        o.dropout = 0.3;
        ASSERT_TRUE(AttachLoraAdapters(m, o).ok());
        RandomizeAdapters(m);
      }
      m.set_gradient_checkpointing(checkpointed);
      m.SetTrainable(true);
      at::manual_seed(11);
      m.Forward(ids).pow(2).mean().backward();
      std::vector<at::Tensor> g;
      for (auto& [name, t] : m.TrainableParameters()) {
        EXPECT_TRUE(t->grad().defined()) << name;
        g.push_back(t->grad().clone());
      }
      if (adapters) {
        for (auto& [name, t] : m.NamedParameters())
          EXPECT_FALSE(t->grad().defined()) << name << " is frozen";
      }
      grads.push_back(std::move(g));
    }
    ASSERT_EQ(grads[0].size(), grads[1].size());
    for (size_t i = 0; i < grads[0].size(); ++i)
      EXPECT_TRUE(at::allclose(grads[0][i], grads[1][i], 1e-5, 1e-6)) << i;
  }
}

TEST_F(LoraTest, BadTargetsRanksConfigsAndFilesAreRefusedByName) {
  const LlamaConfig c = TinyLlamaConfig();  // hidden 32, k/v 16 wide
  LoraOptions o = Options();
  o.targets = {"q_proj", "qkv"};
  EXPECT_EQ(ValidateLoraOptions(o, c, "stages[1].distill.lora").message(),
            "stages[1].distill.lora.targets[1]: \"qkv\" names no linear of a decoder layer of "
            "this llama model (self_attn.q_proj, self_attn.k_proj, self_attn.v_proj, "
            "self_attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)");
  o = Options();
  o.rank = 0;
  EXPECT_EQ(ValidateLoraOptions(o, c, "lora").message(), "lora.rank: must be positive, got 0");
  o.rank = 17;
  EXPECT_EQ(ValidateLoraOptions(o, c, "lora").message(),
            "lora.rank: 17 exceeds self_attn.v_proj's smaller dimension (16); a rank above it "
            "adds nothing");
  o.rank = 16;
  EXPECT_TRUE(ValidateLoraOptions(o, c, "lora").ok());
  o.targets = {"self_attn.q_proj"};
  EXPECT_EQ(LoraTargetLinears(c, "self_attn.q_proj"), std::vector<std::string>{"self_attn.q_proj"});
  EXPECT_TRUE(ValidateLoraOptions(o, c, "lora").ok());

  EXPECT_EQ(ParseLoraAdapterConfig(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
      "target_modules": ["q_proj"], "use_dora": true})",
                                   "a.json")
                .status()
                .message(),
            "a.json: use_dora: DoRA adapters are not supported");
  EXPECT_EQ(ParseLoraAdapterConfig(R"({"peft_type": "IA3"})", "a.json").status().message(),
            "a.json: peft_type: expected \"LORA\"");
  EXPECT_EQ(ParseLoraAdapterConfig(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
      "target_modules": ["q_proj"], "rank_pattern": {"q_proj": 8}})",
                                   "a.json")
                .status()
                .message(),
            "a.json: rank_pattern: per-module ranks are not supported");

  // Files that do not fit the model: a missing adapter, a wrong shape, a stray tensor.
  LlamaModel m = LlamaModel::RandomInit(c, 1);
  ASSERT_TRUE(AttachLoraAdapters(m, Options()).ok());
  ASSERT_TRUE(SaveLoraAdapters(m, Options(), "base", dir_.string()).ok());
  const std::string weights = (dir_ / kLoraWeightsFile).string();
  const LlamaConfig wider = TinyLlamaConfig(/*layers=*/2, /*hidden=*/64);
  EXPECT_EQ(StoredLoraAdapters::Open(dir_.string(), wider).status().message(),
            weights +
                ": tensor \"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\": "
                "shape [4, 32], expected [4, 64]");
  EXPECT_EQ(
      StoredLoraAdapters::Open(dir_.string(), TinyLlamaConfig(/*layers=*/3)).status().message(),
      weights +
          ": tensor \"base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight\" "
          "is missing");
  EXPECT_EQ(std::string(StoredLoraAdapters::Open(dir_.string(), TinyLlamaConfig(/*layers=*/1))
                            .status()
                            .message()),
            weights +
                ": tensor \"base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight\" is "
                "not an adapter of a targeted linear of this model (target_modules in "
                "adapter_config.json)");
}

}  // namespace
}  // namespace squeeze
