#include "common/model/llama_config.h"

#include <nlohmann/json.hpp>

#include <sys/stat.h>
#include <unistd.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include "gtest/gtest.h"

namespace squeeze {
namespace {

constexpr char kLlama3[] = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
  "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
  "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0, "max_position_embeddings": 131072, "tie_word_embeddings": true,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16",
  "attention_bias": false, "mlp_bias": false,
  "quantization_config": {"quant_method": "gptq", "bits": 4}})";

TEST(LlamaConfigTest, ConfigFilesAreBoundedAndRegular) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("config_limits_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  ASSERT_EQ(::mkfifo((dir / "config.json").c_str(), 0600), 0);
  auto fifo = LoadLlamaConfig(dir.string());
  EXPECT_NE(fifo.status().message().find("found a FIFO"), absl::string_view::npos) << fifo.status();
  fs::remove(dir / "config.json");
  std::ofstream(dir / "config.json") << std::string(kMaxConfigBytes + 1, ' ');
  auto big = LoadLlamaConfig(dir.string());
  EXPECT_NE(big.status().message().find("more than the limit"), absl::string_view::npos)
      << big.status();
  fs::remove_all(dir);
}

TEST(LlamaConfigTest, ParsesALlama3Config) {
  auto c = ParseLlamaConfig(kLlama3, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 2048);
  EXPECT_EQ(c->num_kv_groups(), 4);
  EXPECT_EQ(c->head_dim, 64);
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_scaling->factor, 32.0);
  EXPECT_EQ(c->rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_EQ(c->eos_token_id, 128001);  // first of the list
  EXPECT_TRUE(c->tie_word_embeddings);
}

TEST(LlamaConfigTest, DefaultsFollowTheReference) {
  auto c = ParseLlamaConfig(R"({"vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
                                "num_hidden_layers": 2, "num_attention_heads": 4})",
                            "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_FALSE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_theta, 10000.0);
}

TEST(LlamaConfigTest, RoundTripKeepsUnknownFields) {
  auto c = ParseLlamaConfig(kLlama3, "config.json");
  ASSERT_TRUE(c.ok());
  const std::string text = LlamaConfigToJson(*c);
  auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j["quantization_config"]["bits"], 4);
  EXPECT_EQ(j["rope_scaling"]["rope_type"], "llama3");
  auto again = ParseLlamaConfig(text, "round trip");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->num_key_value_heads, 8);
  EXPECT_EQ(again->rope_scaling->factor, 32.0);
}

TEST(LlamaConfigTest, ErrorsNameTheField) {
  struct Case {
    std::string json, field;
  };
  const std::string base = R"("vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
                              "num_hidden_layers": 2)";
  const Case cases[] = {
      {"{" + base + "}", "num_attention_heads"},
      {"{" + base + R"(, "num_attention_heads": 4, "num_key_value_heads": 3})",
       "num_key_value_heads"},
      {"{" + base + R"(, "num_attention_heads": "4"})", "num_attention_heads"},
      {"{" + base +
           R"(, "num_attention_heads": 4, "rope_scaling": {"rope_type": "yarn", "factor": 2}})",
       "rope_scaling.rope_type"},
      {"{" + base + R"(, "num_attention_heads": 4, "rope_scaling": {"rope_type": "llama3"}})",
       "factor"},
      {"{" + base + R"(, "num_attention_heads": 4, "model_type": "gpt2"})", "model_type"},
      {"{" + base + R"(, "num_attention_heads": 4, "model_type": "qwen3",
                        "use_sliding_window": true})",
       "use_sliding_window: true is not supported"},
      {"{" + base + R"(, "num_attention_heads": 0})", "num_attention_heads"},
      {"{" + base + R"(, "num_attention_heads": 4, "head_dim": 7})", "head_dim"},
      // Bounded: shapes that cannot exist are refused before anything allocates them.
      {"{" + base + R"(, "num_attention_heads": 4, "head_dim": 1099511627776})",
       "head_dim: must be positive, even and at most 4096"},
      {R"({"vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 1000000000, "num_attention_heads": 4})",
       "num_hidden_layers: must be at most 4096"},
      {"not json", "not a valid JSON"},
      {"{" + base + R"(, "num_attention_heads": 4, "hidden_act": "gelu"})",
       "hidden_act: \"gelu\" is not supported"},
      {"{" + base + R"(, "num_attention_heads": 4, "model_type": "gemma3"})",
       "the text model (gemma3_text"},
      {"{" + base + R"(, "num_attention_heads": 4, "model_type": "gemma3_text",
                        "attn_logit_softcapping": 50.0})",
       "attn_logit_softcapping"},
      {"{" + base + R"(, "num_attention_heads": 4, "model_type": "gemma3_text",
                        "layer_types": ["sliding_attention"]})",
       "layer_types: 1 entries for 2 layers"},
      {"{" + base + R"(, "num_attention_heads": 4, "model_type": "gemma3_text",
                        "layer_types": ["sliding_attention", "chunked_attention"]})",
       "layer_types[1]"},
      {"{" + base + R"(, "num_attention_heads": 4, "model_type": "gemma3_text",
                        "rope_parameters": {"full_attention": {"rope_theta": 1e6},
                          "sliding_attention": {"rope_type": "linear", "factor": 2.0}}})",
       "rope_parameters.sliding_attention.rope_type: only default"},
  };
  for (const Case& c : cases) {
    auto parsed = ParseLlamaConfig(c.json, "dir/config.json");
    ASSERT_FALSE(parsed.ok()) << c.json;
    EXPECT_NE(parsed.status().message().find(c.field), absl::string_view::npos)
        << parsed.status().message();
    EXPECT_NE(parsed.status().message().find("dir/config.json"), absl::string_view::npos);
  }
}

TEST(LlamaConfigTest, ReadsTransformers5RopeParameters) {
  auto c = ParseLlamaConfig(R"({"vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
      "num_hidden_layers": 2, "num_attention_heads": 4,
      "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 64}})",
                            "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 500000.0);
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_scaling->original_max_position_embeddings, 64);
  auto plain = ParseLlamaConfig(R"({"vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
      "num_hidden_layers": 2, "num_attention_heads": 4,
      "rope_parameters": {"rope_type": "default", "rope_theta": 1234.0}})",
                                "config.json");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->rope_theta, 1234.0);
  EXPECT_FALSE(plain->rope_scaling.has_value());
}

TEST(LlamaConfigTest, MissingFileIsNotFound) {
  auto c = LoadLlamaConfig("/nonexistent/model");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace squeeze

namespace squeeze {
namespace {

// Gemma-3 text as published on the hub (transformers 4.x fields): Gemma's defaults fill what is
// absent (tied embeddings, GELU), the attention pattern comes from sliding_window_pattern.
TEST(LlamaConfigTest, ReadsGemma3TextConfigs) {
  auto c = ParseLlamaConfig(R"({"architectures": ["Gemma3ForCausalLM"],
      "model_type": "gemma3_text", "vocab_size": 262144, "hidden_size": 1152,
      "intermediate_size": 6912, "num_hidden_layers": 26, "num_attention_heads": 4,
      "num_key_value_heads": 1, "head_dim": 256, "query_pre_attn_scalar": 256,
      "rope_local_base_freq": 10000, "rope_theta": 1000000, "rope_scaling": null,
      "sliding_window": 512, "sliding_window_pattern": 6, "hidden_activation": "gelu_pytorch_tanh",
      "final_logit_softcapping": null, "attn_logit_softcapping": null, "rms_norm_eps": 1e-06,
      "eos_token_id": [1, 106], "bos_token_id": 2})",
                            "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->gemma());
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_TRUE(c->qk_norm());
  EXPECT_EQ(c->hidden_activation, "gelu_pytorch_tanh");
  EXPECT_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->rope_local_theta, 1e4);
  EXPECT_EQ(c->final_logit_softcapping, 0.0);
  EXPECT_DOUBLE_EQ(c->attention_scale(), 1.0 / 16);
  EXPECT_DOUBLE_EQ(c->embed_scale(), std::sqrt(1152.0));
  ASSERT_EQ(c->layer_types.size(), 26u);
  EXPECT_EQ(c->LayerWindow(0), 512);
  EXPECT_EQ(c->LayerWindow(5), 0);  // every sixth layer attends to everything
  EXPECT_TRUE(c->LayerLocalRope(4));
  EXPECT_FALSE(c->LayerLocalRope(11));
  EXPECT_EQ(c->eos_token_id, 1);
  // Written back with the parsed pattern, and read the same.
  auto again = ParseLlamaConfig(LlamaConfigToJson(*c), "round trip");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->layer_types, c->layer_types);
  EXPECT_EQ(again->rope_local_theta, 1e4);
  EXPECT_EQ(nlohmann::json::parse(LlamaConfigToJson(*c))["architectures"][0], "Gemma3ForCausalLM");
}

// transformers 5 writes one rotary object per attention kind.
TEST(LlamaConfigTest, ReadsGemma3RopeParametersPerAttentionKind) {
  auto c = ParseLlamaConfig(R"({"model_type": "gemma3_text", "vocab_size": 100,
      "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
      "num_attention_heads": 4, "head_dim": 16, "sliding_window": 8,
      "layer_types": ["sliding_attention", "full_attention"],
      "rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}})",
                            "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 1e6);
  EXPECT_EQ(c->rope_local_theta, 1e4);
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_scaling->rope_type, "linear");
  EXPECT_EQ(c->rope_scaling->factor, 8.0);
  EXPECT_EQ(c->LayerWindow(0), 8);
  EXPECT_EQ(c->LayerWindow(1), 0);
  // Gemma's own default for the score scale.
  EXPECT_DOUBLE_EQ(c->attention_scale(), 1.0 / 16);
}

}  // namespace
}  // namespace squeeze
