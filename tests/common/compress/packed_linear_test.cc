// Frozen quantized bases held packed: NF4 and integer weights expand to exactly their dequantized
// values; an NF4 checkpoint loads packed to the function it loads dense; adapters written beside
// it merge when the directory is loaded again, and an independent PEFT reader
// (tests/formats/peft_reader.py, numpy only) merges them to the same weights.
#include "common/compress/packed_linear.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/base/file_util.h"
#include "common/compress/quantized_checkpoint.h"
#include "common/compress/streaming_quantizer.h"
#include "common/model/lora.h"
#include "gtest/gtest.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

TEST(PackedLinearTest, PackedWeightsExpandToTheirDequantizedValues) {
  at::manual_seed(0);
  // 48 x 64 fills whole blocks; 3 x 40 ends in a partial one.
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{48, 64}, {3, 40}}) {
    const at::Tensor w = at::randn(shape);
    for (const bool nested : {true, false}) {
      auto q = QuantizeFloat4(w, {Float4Type::kNf4, 64, nested});
      ASSERT_TRUE(q.ok());
      const auto packed = MakePackedLinear(*q);
      EXPECT_EQ(packed->out_features(), shape[0]);
      EXPECT_EQ(packed->in_features(), shape[1]);
      EXPECT_TRUE(at::allclose(packed->Dequantize(at::kFloat), q->Dequantize(), 1e-6, 1e-7));
      EXPECT_EQ(packed->Dequantize(at::kBFloat16).scalar_type(), at::kBFloat16);
    }
  }
  // Codes, absmax and the maps: about 4.1 to 4.5 bits a weight once the maps are amortised.
  auto big = QuantizeFloat4(at::randn({256, 256}), {Float4Type::kNf4, 64, true});
  ASSERT_TRUE(big.ok());
  EXPECT_LT(MakePackedLinear(*big)->StorageBytes(), 256 * 256 * 45 / 80);
  QuantSpec spec;
  spec.bits = 4;
  spec.group_size = 32;
  auto q = QuantizeRtn(at::randn({16, 64}), spec);
  ASSERT_TRUE(q.ok());
  const auto packed = MakePackedLinear(*q);
  EXPECT_TRUE(at::equal(packed->Dequantize(at::kFloat), q->Dequantize()));
  EXPECT_EQ(packed->To(at::kCPU)->StorageBytes(), packed->StorageBytes());
}

std::string RunCommand(const std::string& command, int* status) {
  FILE* pipe = ::popen(command.c_str(), "r");
  std::string output;
  char buf[4096];
  for (size_t n; pipe && (n = std::fread(buf, 1, sizeof(buf), pipe)) > 0;) output.append(buf, n);
  *status = pipe ? ::pclose(pipe) : -1;
  return output;
}

TEST(PackedLinearTest, AdaptersOnAPackedNf4BaseMergeOnLoadAndAnIndependentReaderAgrees) {
  const fs::path dir =
      fs::temp_directory_path() / ("packed_linear_test_" + std::to_string(::getpid()));
  RemoveTree(dir.string()).IgnoreError();
  const LlamaConfig c = TinyLlamaConfig(/*layers=*/2, /*hidden=*/64, /*vocab=*/96);
  ASSERT_TRUE(LlamaModel::RandomInit(c, 5).Save((dir / "in").string(), at::kFloat).ok());
  StreamingQuantizeOptions o;
  o.sequential.method = SequentialOptions::Method::kRtn;
  o.float4 = Float4Options{Float4Type::kNf4, 64, true};
  o.float_dtype = at::kFloat;
  const fs::path out = dir / "out";
  ASSERT_TRUE(
      QuantizeCheckpointStreaming((dir / "in").string(), at::Tensor(), out.string(), o).ok());

  auto dense = LoadModel(out.string());
  ASSERT_TRUE(dense.ok()) << dense.status();
  PackedBaseInfo info;
  auto packed = LoadModelWithPackedLinears(out.string(), at::kFloat, at::kCPU, &info);
  ASSERT_TRUE(packed.ok()) << packed.status();
  EXPECT_EQ(info.format, "nf4");
  EXPECT_EQ(info.linears, 2 * 7);
  EXPECT_GT(info.bytes, 0);
  EXPECT_FALSE(packed->layer(0).q_proj.weight.defined());
  const at::Tensor ids = at::randint(96, {2, 10}, at::TensorOptions().dtype(at::kLong));
  c10::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(packed->Forward(ids), dense->Forward(ids), 1e-5, 1e-6));

  LoraOptions lora;
  lora.targets = {"q_proj", "o_proj", "up_proj"};
  lora.rank = 8;
  lora.alpha = 16;
  ASSERT_TRUE(AttachLoraAdapters(*packed, lora).ok());
  at::manual_seed(2);
  for (auto& [name, t] : packed->TrainableParameters()) t->normal_(0.0, 0.05);
  const at::Tensor adapted = packed->Forward(ids);
  ASSERT_TRUE(SaveLoraAdapters(*packed, lora, "file:///base", out.string()).ok());
  auto merged = LoadModel(out.string());
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_TRUE(at::allclose(merged->Forward(ids), adapted, 1e-4, 1e-5));

  const char* src = std::getenv("SQUEEZE_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  const std::string python = fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  int status = 0;
  const std::string output =
      RunCommand(python + " '" + src + "/tests/formats/peft_reader.py' '" + out.string() + "' '" +
                     (dir / "decoded").string() + "' 2>&1",
                 &status);
  ASSERT_EQ(status, 0) << output;
  EXPECT_NE(output.find("model.layers.1.mlp.up_proj 8 128x64"), std::string::npos) << output;
  int modules = 0;
  for (int64_t i = 0; i < 2; ++i) {
    for (const auto& [name, linear] : merged->layer(i).Linears()) {
      const fs::path file =
          dir / "decoded" / ("model.layers." + std::to_string(i) + "." + name + ".weight.f32");
      if (!fs::exists(file)) continue;
      ++modules;
      std::vector<float> values(linear->weight.numel());
      std::ifstream raw(file, std::ios::binary);
      raw.read(reinterpret_cast<char*>(values.data()), values.size() * sizeof(float));
      const at::Tensor theirs = at::from_blob(values.data(), linear->weight.sizes(), at::kFloat);
      EXPECT_TRUE(at::allclose(theirs, linear->weight, 1e-5, 1e-6)) << name;
    }
  }
  EXPECT_EQ(modules, 2 * 3);

  // A later quantize stage reads the NF4 base dequantized with the adapters merged, layer by
  // layer, and writes the merged model re-quantized (8-bit round to nearest, GPTQ layout).
  StreamingQuantizeOptions requantize;
  requantize.sequential.method = SequentialOptions::Method::kRtn;
  requantize.sequential.gptq.quant.bits = 8;
  requantize.sequential.gptq.quant.group_size = 32;
  auto again =
      QuantizeCheckpointStreaming(out.string(), at::Tensor(), (dir / "again").string(), requantize);
  ASSERT_TRUE(again.ok()) << again.status();
  auto requantized = LoadModel((dir / "again").string());
  ASSERT_TRUE(requantized.ok()) << requantized.status();
  const at::Tensor merged_logits = merged->Forward(ids);
  const double rel =
      ((requantized->Forward(ids) - merged_logits).norm() / merged_logits.norm()).item<double>();
  EXPECT_LT(rel, 2e-2) << "the merged model, re-quantized to 8 bits";
  std::ifstream again_config(dir / "again" / "config.json");
  std::stringstream again_text;
  again_text << again_config.rdbuf();
  EXPECT_EQ(again_text.str().find("bitsandbytes"), std::string::npos)
      << "the output's quantization_config is its own";
  RemoveTree(dir.string()).IgnoreError();
}

// A GPTQ-layout base holds its codes packed too, and computes what the dense load computes.
TEST(PackedLinearTest, GptqBaseLoadsPackedToTheDenseFunction) {
  const fs::path dir =
      fs::temp_directory_path() / ("packed_linear_gptq_" + std::to_string(::getpid()));
  RemoveTree(dir.string()).IgnoreError();
  const LlamaConfig c = TinyLlamaConfig(/*layers=*/2, /*hidden=*/64, /*vocab=*/96);
  ASSERT_TRUE(LlamaModel::RandomInit(c, 6).Save((dir / "in").string(), at::kFloat).ok());
  StreamingQuantizeOptions o;
  o.sequential.method = SequentialOptions::Method::kRtn;
  o.sequential.gptq.quant.bits = 4;
  o.sequential.gptq.quant.group_size = 32;
  const fs::path out = dir / "out";
  ASSERT_TRUE(
      QuantizeCheckpointStreaming((dir / "in").string(), at::Tensor(), out.string(), o).ok());
  auto dense = LoadModel(out.string());
  ASSERT_TRUE(dense.ok()) << dense.status();
  PackedBaseInfo info;
  auto packed = LoadModelWithPackedLinears(out.string(), at::kFloat, at::kCPU, &info);
  ASSERT_TRUE(packed.ok()) << packed.status();
  EXPECT_EQ(info.format, "gptq");
  EXPECT_EQ(info.linears, 2 * 7);
  const at::Tensor ids = at::randint(96, {2, 10}, at::TensorOptions().dtype(at::kLong));
  c10::NoGradGuard no_grad;
  EXPECT_TRUE(at::allclose(packed->Forward(ids), dense->Forward(ids), 1e-5, 1e-6));
  RemoveTree(dir.string()).IgnoreError();
}

}  // namespace
}  // namespace squeeze
