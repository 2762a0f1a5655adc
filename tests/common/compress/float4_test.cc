// NF4 and FP4: the codebooks, blockwise absmax with and without double quantization, NF4's lower
// error than 4-bit integers on normally distributed weights, bitsandbytes' stored layout read back
// by our loader and by an independent reader (tests/formats/bnb4bit_reader.py, numpy only).
#include "common/compress/float4.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/base/file_util.h"
#include "common/compress/rtn.h"
#include "common/compress/streaming_quantizer.h"
#include "gtest/gtest.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

double Mse(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).pow(2).mean().item<double>();
}

TEST(Float4Test, CodebooksAreQLorasAndTheDynamicMapIsSortedIn256Values) {
  const at::Tensor nf4 = Float4Codebook(Float4Type::kNf4);
  ASSERT_EQ(nf4.numel(), 16);
  EXPECT_FLOAT_EQ(nf4[0].item<float>(), -1.0f);
  EXPECT_FLOAT_EQ(nf4[7].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(nf4[15].item<float>(), 1.0f);
  EXPECT_TRUE((nf4.slice(0, 1) > nf4.slice(0, 0, -1)).all().item<bool>()) << "sorted";
  const at::Tensor fp4 = Float4Codebook(Float4Type::kFp4);
  EXPECT_FLOAT_EQ(fp4[3].item<float>(), 1.0f);             // 0b011 = 12 / 12
  EXPECT_FLOAT_EQ(fp4[1].item<float>(), 0.0625f / 12.0f);  // the subnormal
  EXPECT_FLOAT_EQ(fp4[11].item<float>(), -1.0f);
  const at::Tensor map = DynamicMap8Bit();
  ASSERT_EQ(map.numel(), 256);
  EXPECT_FLOAT_EQ(map[255].item<float>(), 1.0f);
  EXPECT_TRUE((map.slice(0, 1) >= map.slice(0, 0, -1)).all().item<bool>());
  EXPECT_EQ((map == 0).sum().item<int64_t>(), 1);
}

// On normally distributed weights NF4 (its grid is N(0,1)'s quantiles) beats absmax-scaled 4-bit
// integers with the same block of 64, and FP4, as in the QLoRA paper. (Min/max-scaled integers with
// a zero point per block come within 2% of it, for a second float per block.)
TEST(Float4Test, Nf4HasLowerErrorThanInt4OnNormalWeights) {
  at::manual_seed(0);
  const at::Tensor w = at::randn({256, 512});
  auto nf4 = QuantizeFloat4(w, {Float4Type::kNf4, 64, false});
  ASSERT_TRUE(nf4.ok()) << nf4.status();
  const double nf4_mse = Mse(nf4->Dequantize(), w);
  auto sym = QuantizeRtn(w, {4, 64, true});
  ASSERT_TRUE(sym.ok());
  const double sym_mse = Mse(sym->Dequantize(), w);
  EXPECT_LT(nf4_mse, 0.9 * sym_mse) << "nf4 " << nf4_mse << ", int4 symmetric " << sym_mse;
  auto fp4 = QuantizeFloat4(w, {Float4Type::kFp4, 64, false});
  ASSERT_TRUE(fp4.ok());
  EXPECT_LT(nf4_mse, Mse(fp4->Dequantize(), w)) << "and NF4 beats FP4, as in the QLoRA paper";
  // Code values themselves (times a block's absmax) come back exactly.
  const at::Tensor exact = Float4Codebook(Float4Type::kNf4).repeat({4}).view({1, 64}) * 3.0;
  EXPECT_TRUE(at::equal(QuantizeFloat4(exact, {Float4Type::kNf4, 64, false})->Dequantize(), exact));
}

TEST(Float4Test, DoubleQuantizationKeepsTheScalesCloseInAQuarterOfTheBits) {
  at::manual_seed(1);
  const at::Tensor w =
      at::randn({300, 128}) * 0.02;  // 600 blocks: 3 nested blocks, the last partial
  auto plain = QuantizeFloat4(w, {Float4Type::kNf4, 64, false});
  auto nested = QuantizeFloat4(w, {Float4Type::kNf4, 64, true});
  ASSERT_TRUE(plain.ok() && nested.ok());
  EXPECT_EQ(nested->absmax.scalar_type(), at::kByte);
  EXPECT_EQ(nested->nested_absmax.numel(), 3);
  const at::Tensor exact = plain->BlockScales(), approx = nested->BlockScales();
  EXPECT_LT(((approx - exact).abs() / exact).max().item<double>(), 0.02);
  EXPECT_LT(Mse(nested->Dequantize(), w), 1.05 * Mse(plain->Dequantize(), w));
  EXPECT_NEAR(Float4BitsPerWeight({Float4Type::kNf4, 64, true}), 4.127, 1e-3);
  EXPECT_NEAR(Float4BitsPerWeight({Float4Type::kNf4, 64, false}), 4.5, 1e-9);
}

TEST(Float4Test, TheBitsandbytesLayoutRoundTripsAndNamesWhatIsWrong) {
  at::manual_seed(2);
  const at::Tensor w = at::randn({5, 13});  // 65 values: an odd count and a partial block
  for (const Float4Type type : {Float4Type::kNf4, Float4Type::kFp4}) {
    for (const bool double_quant : {false, true}) {
      auto q = QuantizeFloat4(w, {type, 32, double_quant});
      ASSERT_TRUE(q.ok()) << q.status();
      auto tensors = PackBnb4bit("m.weight", *q, at::kBFloat16);
      ASSERT_TRUE(tensors.ok());
      std::map<std::string, at::Tensor> stored(tensors->begin(), tensors->end());
      const std::string state_name = "m.weight.quant_state.bitsandbytes__" + Float4TypeName(type);
      ASSERT_TRUE(stored.count(state_name));
      EXPECT_EQ(stored.at("m.weight").sizes(), (std::vector<int64_t>{33, 1}));
      EXPECT_EQ(stored.count("m.weight.nested_absmax"), double_quant ? 1u : 0u);
      const at::Tensor bytes = stored.at(state_name);
      const auto state = nlohmann::json::parse(
          std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), bytes.numel()));
      EXPECT_EQ(state["quant_type"], Float4TypeName(type));
      EXPECT_EQ(state["blocksize"], 32);
      EXPECT_EQ(state["dtype"], "bfloat16");
      EXPECT_EQ(state["shape"], nlohmann::json({5, 13}));
      EXPECT_EQ(state.contains("nested_offset"), double_quant);
      const TensorGetter get = [&](const std::string& n) -> absl::StatusOr<at::Tensor> {
        auto it = stored.find(n);
        if (it == stored.end()) return absl::NotFoundError(n);
        return it->second;
      };
      auto back = UnpackBnb4bit("m.weight", get);
      ASSERT_TRUE(back.ok()) << back.status();
      EXPECT_TRUE(at::equal(back->Dequantize(), q->Dequantize()));
      // A truncated absmax is named.
      stored["m.weight.absmax"] = stored["m.weight.absmax"].slice(0, 0, 1);
      EXPECT_EQ(UnpackBnb4bit("m.weight", get).status().message(),
                "m.weight.absmax: expected 3 values, got 1");
    }
  }
  // A quant state from a file claiming an absurd shape is refused before anything is read.
  {
    const std::string text =
        R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [4398046511104, 2]})";
    at::Tensor bytes = at::empty({static_cast<int64_t>(text.size())}, at::kByte);
    std::copy(text.begin(), text.end(), bytes.data_ptr<uint8_t>());
    const TensorGetter get = [&](const std::string& n) -> absl::StatusOr<at::Tensor> {
      if (n == "m.weight.quant_state.bitsandbytes__nf4") return bytes;
      return absl::NotFoundError(n);
    };
    EXPECT_EQ(UnpackBnb4bit("m.weight", get).status().message(),
              "m.weight.quant_state: shape: expected positive sizes");
  }
  EXPECT_EQ(QuantizeFloat4(w, {Float4Type::kNf4, 48, true}).status().message(),
            "block_size: expected a power of two from 32 to 4096, got 48");
  EXPECT_FALSE(QuantizeFloat4(at::full({64}, NAN), {}).ok());
}

// A whole model through the streaming quantizer: our loader and the independent numpy reader
// decode every linear to what QuantizeFloat4 made.
TEST(Float4Test, StreamedModelLoadsAndAnIndependentReaderDecodesIt) {
  const fs::path dir = fs::temp_directory_path() / ("float4_test_" + std::to_string(::getpid()));
  RemoveTree(dir.string()).IgnoreError();
  const LlamaConfig c = TinyLlamaConfig(/*layers=*/2, /*hidden=*/64, /*vocab=*/96);
  LlamaModel model = LlamaModel::RandomInit(c, 3);
  ASSERT_TRUE(model.Save((dir / "in").string(), at::kFloat).ok());
  StreamingQuantizeOptions o;
  o.sequential.method = SequentialOptions::Method::kRtn;
  o.float4 = Float4Options{Float4Type::kNf4, 64, true};
  o.float_dtype = at::kBFloat16;
  auto result =
      QuantizeCheckpointStreaming((dir / "in").string(), at::Tensor(), (dir / "out").string(), o);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->format, "bitsandbytes_nf4");
  std::ifstream config_file(dir / "out" / "config.json");
  const auto config = nlohmann::json::parse(config_file);
  EXPECT_EQ(config["quantization_config"]["quant_method"], "bitsandbytes");
  EXPECT_EQ(config["quantization_config"]["bnb_4bit_quant_type"], "nf4");
  EXPECT_EQ(config["quantization_config"]["bnb_4bit_use_double_quant"], true);
  EXPECT_EQ(config["quantization_config"]["bnb_4bit_compute_dtype"], "bfloat16");
  auto loaded = LoadModel((dir / "out").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();

  const char* src = std::getenv("SQUEEZE_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  // Debian's interpreter, where python3-numpy installs (another python3 may come first in PATH).
  const std::string python = fs::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
  const std::string command = python + " '" + std::string(src) +
                              "/tests/formats/bnb4bit_reader.py' '" + (dir / "out").string() +
                              "' '" + (dir / "decoded").string() + "' 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  std::string output;
  char buf[4096];
  for (size_t n; pipe && (n = std::fread(buf, 1, sizeof(buf), pipe)) > 0;) output.append(buf, n);
  ASSERT_EQ(pipe ? ::pclose(pipe) : -1, 0) << output;
  EXPECT_NE(output.find("model.layers.1.mlp.down_proj.weight 64x"), std::string::npos) << output;
  for (int64_t i = 0; i < 2; ++i) {
    auto original = model.layer(i).Linears();
    auto decoded = loaded->layer(i).Linears();
    for (size_t k = 0; k < decoded.size(); ++k) {
      const auto& [name, linear] = decoded[k];
      const std::string full = "model.layers." + std::to_string(i) + "." + name + ".weight";
      SCOPED_TRACE(full);
      auto expected = QuantizeFloat4(original[k].second->weight, *o.float4);
      ASSERT_TRUE(expected.ok());
      const at::Tensor want = expected->Dequantize();
      EXPECT_TRUE(at::allclose(linear->weight, want, 1e-6, 1e-7)) << "our loader";
      std::ifstream raw(dir / "decoded" / (full + ".f32"), std::ios::binary);
      std::vector<float> values(want.numel());
      raw.read(reinterpret_cast<char*>(values.data()), values.size() * sizeof(float));
      ASSERT_TRUE(raw.good()) << "the reader wrote " << full;
      const at::Tensor theirs = at::from_blob(values.data(), want.sizes(), at::kFloat).clone();
      EXPECT_TRUE(at::allclose(theirs, want, 1e-6, 1e-7)) << "the independent reader";
    }
  }

  // Resume: the finished layer 0 is read back from its shard, and layer 1 is written as before.
  StreamingQuantizeOptions resume = o;
  resume.start_layer = 1;
  resume.finished_shard = [&](int64_t) -> absl::StatusOr<std::string> {
    return (dir / "out" / "model-00001-of-00003.safetensors").string();
  };
  ASSERT_TRUE(QuantizeCheckpointStreaming((dir / "in").string(), at::Tensor(),
                                          (dir / "again").string(), resume)
                  .ok());
  for (const char* name : {"model-00002-of-00003.safetensors", "model.safetensors.index.json"}) {
    EXPECT_EQ(ReadFileToString((dir / "out" / name).string()).value_or("a"),
              ReadFileToString((dir / "again" / name).string()).value_or("b"))
        << name;
  }
  RemoveTree(dir.string()).IgnoreError();
}

}  // namespace
}  // namespace squeeze
