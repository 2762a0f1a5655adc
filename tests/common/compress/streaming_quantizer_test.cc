// The streaming quantizer on the host: layer shards that load as the model QuantizeSequential
// makes, an index naming every tensor, exact resume from finished shards, and the dense fallback
// for shapes that do not pack.
#include "common/compress/streaming_quantizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "absl/strings/str_format.h"
#include "common/base/file_util.h"
#include "common/tensor/torch_tensor.h"
#include "common/train/data_parallel.h"
#include "gtest/gtest.h"
#include "tests/common/free_port.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

// Three layers, 128 wide (a whole number of 64-column groups), an untied head.
LlamaConfig TinyConfig() {
  LlamaConfig c = TinyLlamaConfig(/*layers=*/3, /*hidden=*/128, /*vocab=*/128);
  c.tie_word_embeddings = false;
  return c;
}

class StreamingQuantizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("streaming_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    RemoveTree(dir_).IgnoreError();
    at::manual_seed(3);
    calibration_ = at::randint(0, 128, {8, 32}, at::kLong);
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }

  std::string Save(const LlamaConfig& c) {
    const std::string in = (dir_ / "in").string();
    EXPECT_TRUE(LlamaModel::RandomInit(c, 7).Save(in, at::kFloat).ok());
    return in;
  }

  // Runs `fn(rank, options with the rank's collectives)` on two Gloo ranks (threads of this
  // process, a real TCP rendezvous on loopback).
  template <typename T>
  std::vector<absl::StatusOr<T>> OnTwoRanks(
      const StreamingQuantizeOptions& o,
      const std::function<absl::StatusOr<T>(int rank, StreamingQuantizeOptions&)>& fn) {
    const std::string rendezvous = "127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
    std::vector<absl::StatusOr<T>> results(2, absl::UnknownError("not run"));
    std::vector<std::thread> ranks;
    for (int rank = 0; rank < 2; ++rank) {
      ranks.emplace_back([&, rank] {
        auto group = DataParallel::Connect(rendezvous, rank, 2, at::kCPU, std::chrono::seconds(30));
        if (!group.ok()) {
          results[rank] = group.status();
          return;
        }
        StreamingQuantizeOptions ro = o;
        ro.sequential.ranks = group->get();
        results[rank] = fn(rank, ro);
      });
    }
    for (std::thread& t : ranks) t.join();
    return results;
  }

  // The streaming quantizer with `o` on two ranks, rank r writing under dir_/rank<r>; `per_rank`
  // adjusts each rank's options.
  std::vector<absl::StatusOr<StreamingQuantizeResult>> RunOnTwoRanks(
      const std::string& in, const StreamingQuantizeOptions& o,
      const std::function<void(int rank, StreamingQuantizeOptions&)>& per_rank = nullptr) {
    return OnTwoRanks<StreamingQuantizeResult>(o, [&](int rank, StreamingQuantizeOptions& ro) {
      if (per_rank) per_rank(rank, ro);
      return QuantizeCheckpointStreaming(in, calibration_,
                                         (dir_ / ("rank" + std::to_string(rank))).string(), ro);
    });
  }

  fs::path dir_;
  at::Tensor calibration_;
};

TEST_F(StreamingQuantizerTest, ShardsLoadAsTheModelQuantizeSequentialMakes) {
  const LlamaConfig c = TinyConfig();
  const std::string in = Save(c);
  StreamingQuantizeOptions o;
  o.sequential.gptq.quant = {4, 64, false};
  std::mutex files_mu;  // on_file runs on the writer thread
  std::vector<std::pair<int64_t, std::string>> files;
  std::vector<int64_t> progress;
  o.on_file = [&](int64_t layer, const std::string& path, const std::string& name) {
    EXPECT_TRUE(fs::exists(path)) << path;
    std::lock_guard<std::mutex> lock(files_mu);
    files.emplace_back(layer, name);
    return absl::OkStatus();
  };
  o.on_progress = [&](int64_t done, int64_t total, const std::string&) {
    EXPECT_EQ(total, 4);
    progress.push_back(done);
    if (done < total) {
      // A layer counts once its shard is handed over: a task killed now resumes past it.
      std::lock_guard<std::mutex> lock(files_mu);
      int64_t layer_files = 0;
      for (const auto& f : files) layer_files += f.first >= 0 ? 1 : 0;
      EXPECT_GE(layer_files, done) << "progress ran ahead of the stored shards";
    }
    return absl::OkStatus();
  };
  auto result = QuantizeCheckpointStreaming(in, calibration_, (dir_ / "out").string(), o);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->format, "gptq");
  {
    // The config says which algorithm chose the codes: the layout is gptq's either way, and RTN
    // claims none of GPTQ's solver settings.
    auto quantization_config = [&](const char* out) {
      std::ifstream config_file(dir_ / out / "config.json");
      return nlohmann::json::parse(config_file)["quantization_config"];
    };
    auto qc = quantization_config("out");
    EXPECT_EQ(qc["meta"]["method"], "gptq");
    EXPECT_TRUE(qc.contains("damp_percent"));
    StreamingQuantizeOptions rtn = o;
    rtn.sequential.method = SequentialOptions::Method::kRtn;
    rtn.on_file = nullptr;
    rtn.on_progress = nullptr;
    ASSERT_TRUE(QuantizeCheckpointStreaming(in, at::Tensor(), (dir_ / "rtn").string(), rtn).ok());
    qc = quantization_config("rtn");
    EXPECT_EQ(qc["quant_method"], "gptq");
    EXPECT_EQ(qc["meta"]["method"], "rtn");
    EXPECT_FALSE(qc.contains("damp_percent"));
    EXPECT_FALSE(qc.contains("true_sequential"));
  }
  EXPECT_EQ(result->reports.size(), 21u);
  // One report per layer (its count may lag the compute by the shard being written), one once
  // every shard is stored, one at the end.
  ASSERT_EQ(progress.size(), 5u);
  EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end()));
  EXPECT_EQ(progress[3], 3);
  EXPECT_EQ(progress[4], 4);
  ASSERT_EQ(files.size(), 6u) << "3 layer shards, the last shard, the index and config.json";
  // The last shard (embeddings and head) needs no quantization and is written first.
  EXPECT_EQ(files[0], (std::pair<int64_t, std::string>{-1, "model-00004-of-00004.safetensors"}));
  EXPECT_EQ(files[1], (std::pair<int64_t, std::string>{0, "model-00001-of-00004.safetensors"}));
  EXPECT_EQ(files[5].second, "config.json");
  EXPECT_GT(result->bytes_written, 0);

  // The same as the in-memory pipeline and its export.
  LlamaModel expected = *LlamaModel::Load(in);
  SequentialOptions seq;
  seq.gptq.quant = {4, 64, false};
  ASSERT_TRUE(QuantizeSequential(expected, calibration_, seq).ok());
  auto loaded = LoadModel((dir_ / "out").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const at::Tensor ids = calibration_.slice(0, 0, 2);
  EXPECT_TRUE(at::allclose(loaded->Forward(ids), expected.Forward(ids), 1e-2, 1e-2));
  // Every tensor is in the index.
  std::ifstream index(dir_ / "out" / "model.safetensors.index.json");
  const auto map = nlohmann::json::parse(index)["weight_map"];
  EXPECT_EQ(map["model.layers.2.mlp.down_proj.qweight"], "model-00003-of-00004.safetensors");
  EXPECT_EQ(map["lm_head.weight"], "model-00004-of-00004.safetensors");
}

// Resume rebuilds finished layers from their shards, in each layout: GPTQ with act_order (g_idx
// in the shard) and AWQ's gemm layout (whose layer is searched on the float layer's inputs).
void ResumeWritesTheSameShards(const std::string& in, const fs::path& dir,
                               const at::Tensor& calibration, StreamingQuantizeOptions o) {
  ASSERT_TRUE(QuantizeCheckpointStreaming(in, calibration, (dir / "first").string(), o).ok());
  o.start_layer = 2;
  o.finished_shard = [&](int64_t layer) -> absl::StatusOr<std::string> {
    return (dir / "first" / absl::StrFormat("model-%05d-of-00004.safetensors", layer + 1)).string();
  };
  std::vector<int64_t> layers;
  o.on_file = [&](int64_t layer, const std::string&, const std::string&) {
    layers.push_back(layer);
    return absl::OkStatus();
  };
  auto resumed = QuantizeCheckpointStreaming(in, calibration, (dir / "second").string(), o);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(layers, (std::vector<int64_t>{-1, 2, -1, -1})) << "only layer 2 is quantized again";
  auto read = [](const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(f)), {});
  };
  const std::string shard = "model-00003-of-00004.safetensors";
  EXPECT_EQ(read(dir / "first" / shard), read(dir / "second" / shard))
      << "layers rebuilt from their shards are exactly the quantized layers";
  EXPECT_EQ(read(dir / "first" / "model.safetensors.index.json"),
            read(dir / "second" / "model.safetensors.index.json"));
}

TEST_F(StreamingQuantizerTest, ResumeFromFinishedShardsWritesTheSameShards) {
  StreamingQuantizeOptions o;
  o.sequential.gptq.quant = {4, 64, false};
  o.sequential.gptq.act_order = true;
  ResumeWritesTheSameShards(Save(TinyConfig()), dir_, calibration_, o);
}

TEST_F(StreamingQuantizerTest, AwqGemmResumesFromItsShardsAndLoads) {
  StreamingQuantizeOptions o;
  o.sequential.method = SequentialOptions::Method::kAwq;
  o.sequential.gptq.quant = {4, 64, false};
  o.sequential.awq.grid = 4;
  o.sequential.awq.clip_grid = 4;
  o.format = QuantizedFormat::kAwqGemm;
  const std::string in = Save(TinyConfig());
  ResumeWritesTheSameShards(in, dir_, calibration_, o);
  // The first run wrote every shard (the second only the layer it resumed at).
  std::ifstream config(dir_ / "first" / "config.json");
  EXPECT_EQ(nlohmann::json::parse(config)["quantization_config"]["quant_method"], "awq");
  auto loaded = LoadModel((dir_ / "first").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto original = LlamaModel::Load(in);
  ASSERT_TRUE(original.ok());
  const at::Tensor ids = calibration_.slice(0, 0, 2);
  const at::Tensor reference = original->Forward(ids);
  const double error =
      ((loaded->Forward(ids) - reference).norm() / reference.norm()).item<double>();
  EXPECT_LT(error, 0.2) << "4-bit codes of a random model read back near the original";
}

TEST_F(StreamingQuantizerTest, AwqGemmRefusesShapesItCannotHoldBeforeAnyWork) {
  LlamaConfig c = TinyConfig();
  c.intermediate_size = 100;  // neither a multiple of 8 outputs nor of the 64-column group
  StreamingQuantizeOptions o;
  o.sequential.method = SequentialOptions::Method::kAwq;
  o.sequential.gptq.quant = {4, 64, false};
  o.format = QuantizedFormat::kAwqGemm;
  auto result = QuantizeCheckpointStreaming(Save(c), calibration_, (dir_ / "out").string(), o);
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("awq gemm"), std::string::npos) << result.status();
}

TEST_F(StreamingQuantizerTest, ShapesThatDoNotPackAreRefusedUnlessDenseIsAskedFor) {
  LlamaConfig c = TinyConfig();
  c.intermediate_size = 80;  // 80 x 3 bits is not a whole number of 32-bit words
  const std::string in = Save(c);
  StreamingQuantizeOptions o;
  o.sequential.method = SequentialOptions::Method::kRtn;
  o.sequential.gptq.quant = {3, 16, false};
  auto refused = QuantizeCheckpointStreaming(in, at::Tensor(), (dir_ / "refused").string(), o);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("dense_fallback"), std::string::npos)
      << refused.status();
  EXPECT_FALSE(fs::exists(dir_ / "refused" / "config.json")) << "nothing written";
  o.dense_fallback = true;
  auto result = QuantizeCheckpointStreaming(in, at::Tensor(), (dir_ / "out").string(), o);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->format, "dense");
  auto loaded = LoadModel((dir_ / "out").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->layer(0).down_proj.weight.size(1), 80);
}

// A gang of two Gloo ranks (threads of this process, a real TCP rendezvous on loopback) splits the
// calibration windows, sums the Hessians and divides the linears; rank 0 writes what one rank
// alone writes. Exactly so for the first layer, whose inputs are the same embeddings: its codes
// differ only where float32 rounding of the summed Hessians tips a rounding decision. Later layers
// read the outputs of slightly different quantized layers, and GPTQ's error feedback carries such
// differences along a row, so there the codes are not compared; their losses must agree within a
// few percent in all and within 10% for each linear (measured on one CPU: within 1% in all, 8% for
// the smallest loss; equal codes on another).
TEST_F(StreamingQuantizerTest, TwoGlooRanksWriteWhatOneRankWrites) {
  if (!DataParallel::HasGloo()) GTEST_SKIP() << "this libtorch build has no Gloo headers";
  const std::string in = Save(TinyConfig());
  StreamingQuantizeOptions o;
  o.sequential.gptq.quant = {4, 64, false};
  auto single = QuantizeCheckpointStreaming(in, calibration_, (dir_ / "single").string(), o);
  ASSERT_TRUE(single.ok()) << single.status();

  std::vector<int> files(2, 0);
  auto results = RunOnTwoRanks(in, o, [&files](int rank, StreamingQuantizeOptions& ro) {
    ro.on_file = [&files, rank](int64_t, const std::string&, const std::string&) {
      ++files[rank];
      return absl::OkStatus();
    };
  });
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  ASSERT_TRUE(results[1].ok()) << results[1].status();
  EXPECT_EQ(files[0], 6) << "rank 0 writes every file";
  EXPECT_EQ(files[1], 0) << "rank 1 writes none";
  ASSERT_EQ(results[0]->reports.size(), single->reports.size());
  double total_single = 0, total_gang = 0;
  for (size_t i = 0; i < single->reports.size(); ++i) {
    const double tolerance = single->reports[i].layer == 0 ? 1e-3 : 0.1;
    EXPECT_NEAR(results[0]->reports[i].loss, single->reports[i].loss,
                tolerance * single->reports[i].loss + 1e-9)
        << single->reports[i].layer << " " << single->reports[i].name;
    EXPECT_EQ(results[1]->reports[i].loss, results[0]->reports[i].loss) << "broadcast losses";
    total_single += single->reports[i].loss;
    total_gang += results[0]->reports[i].loss;
  }
  EXPECT_NEAR(total_gang, total_single, 0.02 * total_single);
  for (int layer = 0; layer < 1; ++layer) {
    const std::string shard = absl::StrFormat("model-%05d-of-00004.safetensors", layer + 1);
    auto a = SafetensorsFile::Open((dir_ / "single" / shard).string());
    auto b = SafetensorsFile::Open((dir_ / "rank0" / shard).string());
    ASSERT_TRUE(a.ok() && b.ok());
    for (const char* linear : {"self_attn.q_proj", "mlp.down_proj"}) {
      const std::string name = "model.layers." + std::to_string(layer) + "." + linear + ".qweight";
      auto ta = ToTorch(*(*a)->Get(name)), tb = ToTorch(*(*b)->Get(name));
      EXPECT_GT(ta->eq(*tb).to(at::kFloat).mean().item<double>(), 0.98) << name;
    }
  }
}

TEST_F(StreamingQuantizerTest, BadInputsAreClearErrors) {
  const std::string in = Save(TinyConfig());
  StreamingQuantizeOptions o;
  o.sequential.gptq.quant = {4, 48, false};
  auto bad_group = QuantizeCheckpointStreaming(in, calibration_, (dir_ / "o1").string(), o);
  ASSERT_FALSE(bad_group.ok());
  EXPECT_NE(bad_group.status().message().find("group_size"), absl::string_view::npos)
      << bad_group.status();
  o.sequential.gptq.quant = {4, 64, false};
  auto out_of_vocab =
      QuantizeCheckpointStreaming(in, calibration_ + 500, (dir_ / "o2").string(), o);
  EXPECT_EQ(out_of_vocab.status().code(), absl::StatusCode::kInvalidArgument);
  auto missing = QuantizeCheckpointStreaming((dir_ / "nope").string(), calibration_,
                                             (dir_ / "o3").string(), o);
  EXPECT_FALSE(missing.ok());
}

}  // namespace
}  // namespace squeeze

namespace squeeze {
namespace {

// W8A8 in a gang: SmoothQuant's channel maxima and the static input scales are maxima over every
// rank's share of the windows, so two ranks write what one writes (RTN, so exactly).
TEST_F(StreamingQuantizerTest, TwoGlooRanksCalibrateW8A8AsOneRankDoes) {
  if (!DataParallel::HasGloo()) GTEST_SKIP() << "this libtorch build has no Gloo headers";
  const std::string in = Save(TinyConfig());
  StreamingQuantizeOptions o;
  o.sequential.method = SequentialOptions::Method::kRtn;
  o.sequential.gptq.quant = {8, -1, true};
  o.format = QuantizedFormat::kCompressedTensorsInt8;
  o.activations = ActivationQuant::Kind::kStaticPerTensor;
  o.smoothquant_alpha = 0.5;
  ASSERT_TRUE(QuantizeCheckpointStreaming(in, calibration_, (dir_ / "single").string(), o).ok());
  auto results = RunOnTwoRanks(in, o);
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  ASSERT_TRUE(results[1].ok()) << results[1].status();
  for (int layer = 0; layer < 3; ++layer) {
    const std::string shard = absl::StrFormat("model-%05d-of-00004.safetensors", layer + 1);
    auto a = SafetensorsFile::Open((dir_ / "single" / shard).string());
    auto b = SafetensorsFile::Open((dir_ / "rank0" / shard).string());
    ASSERT_TRUE(a.ok() && b.ok());
    const std::string prefix = "model.layers." + std::to_string(layer) + ".";
    for (const std::string& name :
         {prefix + "input_layernorm.weight", prefix + "self_attn.q_proj.input_scale",
          prefix + "mlp.down_proj.input_scale", prefix + "mlp.gate_proj.weight"}) {
      auto ta = ToTorch(*(*a)->Get(name)), tb = ToTorch(*(*b)->Get(name));
      EXPECT_TRUE(at::allclose(*ta, *tb, 1e-5, 1e-7)) << name;
    }
  }
}

// Mixed precision: linears at the widths asked for, read back through GPTQModel's `dynamic`
// overrides as the in-memory pipeline quantizes them, and resumed at those widths.
std::map<std::string, int> SomeWidths() {
  return {{"model.layers.0.self_attn.q_proj", 8}, {"model.layers.0.self_attn.k_proj", 8},
          {"model.layers.0.self_attn.v_proj", 8}, {"model.layers.1.mlp.down_proj", 2},
          {"model.layers.2.mlp.gate_proj", 3},    {"model.layers.2.mlp.up_proj", 3}};
}

TEST_F(StreamingQuantizerTest, MixedWidthsLoadAsTheModelQuantizedAtThoseWidths) {
  const std::string in = Save(TinyConfig());
  StreamingQuantizeOptions o;
  o.sequential.gptq.quant = {4, 64, false};
  o.sequential.bits_by_module = SomeWidths();
  auto result = QuantizeCheckpointStreaming(in, calibration_, (dir_ / "out").string(), o);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->format, "gptq");
  for (const LinearReport& r : result->reports) {
    auto it = SomeWidths().find("model.layers." + std::to_string(r.layer) + "." + r.name);
    EXPECT_EQ(r.bits, it == SomeWidths().end() ? 4 : it->second) << r.layer << " " << r.name;
  }
  // Packed at each width: qweight holds in * bits / 32 rows.
  auto shard0 = SafetensorsFile::Open((dir_ / "out" / "model-00001-of-00004.safetensors").string());
  auto shard1 = SafetensorsFile::Open((dir_ / "out" / "model-00002-of-00004.safetensors").string());
  ASSERT_TRUE(shard0.ok() && shard1.ok());
  EXPECT_EQ((*shard0)->Get("model.layers.0.self_attn.q_proj.qweight")->info->shape[0],
            128 * 8 / 32);
  EXPECT_EQ((*shard0)->Get("model.layers.0.mlp.down_proj.qweight")->info->shape[0], 256 * 4 / 32);
  EXPECT_EQ((*shard1)->Get("model.layers.1.mlp.down_proj.qweight")->info->shape[0], 256 * 2 / 32);
  std::ifstream config(dir_ / "out" / "config.json");
  const auto qc = nlohmann::json::parse(config)["quantization_config"];
  EXPECT_EQ(qc["bits"], 4);
  ASSERT_TRUE(qc.contains("dynamic"));
  EXPECT_EQ(qc["dynamic"].size(), 3u) << "q/k/v and gate/up each under one fused key";

  LlamaModel expected = *LlamaModel::Load(in);
  ASSERT_TRUE(QuantizeSequential(expected, calibration_, o.sequential).ok());
  auto loaded = LoadModel((dir_ / "out").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const at::Tensor ids = calibration_.slice(0, 0, 2);
  EXPECT_TRUE(at::allclose(loaded->Forward(ids), expected.Forward(ids), 1e-2, 1e-2));
  // The 2-bit down_proj really is coarser: at most 4 distinct values per row and group.
  const at::Tensor down = loaded->layer(1).down_proj.weight.slice(1, 0, 64)[0];
  EXPECT_LE(std::get<0>(at::_unique(down)).numel(), 4);
}

TEST_F(StreamingQuantizerTest, MixedWidthsResumeFromTheirShards) {
  StreamingQuantizeOptions o;
  o.sequential.gptq.quant = {4, 64, false};
  o.sequential.bits_by_module = SomeWidths();
  ResumeWritesTheSameShards(Save(TinyConfig()), dir_, calibration_, o);
}

TEST_F(StreamingQuantizerTest, MixedWidthsAreRefusedWhereTheLayoutHoldsOne) {
  const std::string in = Save(TinyConfig());
  StreamingQuantizeOptions o;
  o.sequential.method = SequentialOptions::Method::kAwq;
  o.sequential.gptq.quant = {4, 64, false};
  o.sequential.bits_by_module = SomeWidths();
  o.format = QuantizedFormat::kAwqGemm;
  auto awq = QuantizeCheckpointStreaming(in, calibration_, (dir_ / "o1").string(), o);
  ASSERT_FALSE(awq.ok());
  EXPECT_NE(awq.status().message().find("mixed precision"), std::string::npos) << awq.status();
}

// Each linear's measured error is tr(dW H dW^T) with H from its inputs in the float model: for
// layer 0's q_proj (inputs: the normalized embeddings) and RTN, computed here directly.
TEST_F(StreamingQuantizerTest, SensitivityIsTheOutputErrorOfEachLinearAtEachWidth) {
  const LlamaConfig c = TinyConfig();
  const std::string in = Save(c);
  StreamingQuantizeOptions o;
  o.sequential.method = SequentialOptions::Method::kRtn;
  o.sequential.gptq.quant = {4, 64, false};
  std::vector<std::string> phases;
  o.on_progress = [&](int64_t, int64_t total, const std::string& phase) {
    EXPECT_EQ(total, 3);
    phases.push_back(phase);
    return absl::OkStatus();
  };
  auto rtn = MeasureLinearSensitivity(in, calibration_, o, {2, 3, 4, 8});
  ASSERT_TRUE(rtn.ok()) << rtn.status();
  ASSERT_EQ(rtn->size(), 21u);
  EXPECT_EQ(phases, (std::vector<std::string>{"sensitivity", "sensitivity", "sensitivity"}));
  for (const LinearSensitivity& l : *rtn) {
    EXPECT_GT(l.error_by_bits.at(2), l.error_by_bits.at(3)) << l.module;
    EXPECT_GT(l.error_by_bits.at(3), l.error_by_bits.at(4)) << l.module;
    EXPECT_GT(l.error_by_bits.at(4), l.error_by_bits.at(8)) << l.module;
  }
  EXPECT_EQ((*rtn)[0].module, "model.layers.0.self_attn.q_proj");
  LlamaModel model = *LlamaModel::Load(in);
  const at::Tensor x =
      model.layer(0).AttentionInput(c, model.Embed(calibration_)).reshape({-1, c.hidden_size});
  const at::Tensor h = 2.0 * x.t().matmul(x) / static_cast<double>(x.size(0));
  const at::Tensor w = model.layer(0).q_proj.weight;
  for (int b : {2, 4}) {
    const at::Tensor dw = w - QuantizeRtn(w, {b, 64, false})->Dequantize();
    const double direct = (dw.matmul(h) * dw).sum().item<double>();
    EXPECT_NEAR((*rtn)[0].error_by_bits.at(b), direct, 1e-4 * direct) << b << " bits";
  }
  // GPTQ's error at each width is what it leaves, less than RTN's in all.
  o.sequential.method = SequentialOptions::Method::kGptq;
  auto gptq = MeasureLinearSensitivity(in, calibration_, o, {2, 4});
  ASSERT_TRUE(gptq.ok()) << gptq.status();
  for (int b : {2, 4}) {
    double total_gptq = 0, total_rtn = 0;
    for (size_t k = 0; k < gptq->size(); ++k) {
      total_gptq += (*gptq)[k].error_by_bits.at(b);
      total_rtn += (*rtn)[k].error_by_bits.at(b);
    }
    EXPECT_LT(total_gptq, total_rtn) << b << " bits";
  }
  EXPECT_FALSE(MeasureLinearSensitivity(in, at::Tensor(), o, {2, 4}).ok())
      << "no calibration windows";
}

// In a gang the Hessians are summed over the ranks' windows: the figures one rank measures.
TEST_F(StreamingQuantizerTest, TwoGlooRanksMeasureWhatOneRankMeasures) {
  if (!DataParallel::HasGloo()) GTEST_SKIP() << "this libtorch build has no Gloo headers";
  const std::string in = Save(TinyConfig());
  StreamingQuantizeOptions o;
  o.sequential.method = SequentialOptions::Method::kRtn;
  o.sequential.gptq.quant = {4, 64, false};
  auto single = MeasureLinearSensitivity(in, calibration_, o, {2, 4});
  ASSERT_TRUE(single.ok()) << single.status();
  auto results =
      OnTwoRanks<std::vector<LinearSensitivity>>(o, [&](int, StreamingQuantizeOptions& ro) {
        return MeasureLinearSensitivity(in, calibration_, ro, {2, 4});
      });
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  ASSERT_TRUE(results[1].ok()) << results[1].status();
  for (size_t k = 0; k < single->size(); ++k) {
    for (int b : {2, 4}) {
      const double want = (*single)[k].error_by_bits.at(b);
      EXPECT_NEAR((*results[0])[k].error_by_bits.at(b), want, 1e-4 * want) << (*single)[k].module;
      EXPECT_EQ((*results[1])[k].error_by_bits.at(b), (*results[0])[k].error_by_bits.at(b));
    }
  }
}

}  // namespace
}  // namespace squeeze

namespace squeeze {
namespace {

StreamingQuantizeOptions SparseGptOptions(int n, int m, double sparsity) {
  StreamingQuantizeOptions o;
  o.sequential.method = SequentialOptions::Method::kSparseGpt;
  o.sequential.gptq.quant.group_size = -1;
  o.sequential.sparsity.n = n;
  o.sequential.sparsity.m = m;
  o.sequential.sparsity.sparsity = sparsity;
  return o;
}

// SparseGPT alone on the streaming pass: the pruned model in floating point, weight for weight
// the one the in-memory pass makes, and resumable from its shards.
TEST_F(StreamingQuantizerTest, SparseGptWritesThePrunedModelTheInMemoryPassMakes) {
  const std::string in = Save(TinyConfig());
  const StreamingQuantizeOptions o = SparseGptOptions(0, 0, 0.5);
  auto result = QuantizeCheckpointStreaming(in, calibration_, (dir_ / "out").string(), o);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->format, "dense");
  EXPECT_EQ(result->reports.size(), 21u);
  EXPECT_NEAR(static_cast<double>(result->zero_weights) / result->linear_weights, 0.5, 1e-3);

  LlamaModel expected = *LlamaModel::Load(in);
  SequentialOptions seq = o.sequential;
  ASSERT_TRUE(QuantizeSequential(expected, calibration_, seq).ok());
  auto loaded = LoadModel((dir_ / "out").string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (int64_t i = 0; i < 3; ++i) {
    auto want = expected.layer(i).Linears();
    auto got = loaded->layer(i).Linears();
    for (size_t k = 0; k < want.size(); ++k) {
      SCOPED_TRACE(want[k].first);
      EXPECT_TRUE(at::equal(got[k].second->weight == 0, want[k].second->weight == 0));
      EXPECT_TRUE(at::allclose(got[k].second->weight, want[k].second->weight, 1e-5, 1e-6));
    }
  }
  std::ifstream config(dir_ / "out" / "config.json");
  EXPECT_EQ(nlohmann::json::parse(config)["torch_dtype"], "float32");

  ResumeWritesTheSameShards(in, dir_, calibration_, o);
}

TEST_F(StreamingQuantizerTest, SparseGptTwoFourStreamsIntoTheBitmaskLayoutAndResumes) {
  const std::string in = Save(TinyConfig());
  StreamingQuantizeOptions o = SparseGptOptions(2, 4, 0.0);
  o.float_dtype = at::kHalf;
  auto dense = QuantizeCheckpointStreaming(in, calibration_, (dir_ / "dense").string(), o);
  ASSERT_TRUE(dense.ok()) << dense.status();
  o.pruned_layout = StreamingQuantizeOptions::PrunedLayout::kSparse24Bitmask;
  auto sparse = QuantizeCheckpointStreaming(in, calibration_, (dir_ / "sparse").string(), o);
  ASSERT_TRUE(sparse.ok()) << sparse.status();
  EXPECT_EQ(sparse->format, "sparse_24_bitmask");
  EXPECT_EQ(sparse->zero_weights * 2, sparse->linear_weights);
  std::ifstream index(dir_ / "sparse" / "model.safetensors.index.json");
  const auto map = nlohmann::json::parse(index)["weight_map"];
  EXPECT_EQ(map["model.layers.1.mlp.up_proj.bitmask"], "model-00002-of-00004.safetensors");
  std::ifstream config(dir_ / "sparse" / "config.json");
  const auto sparsity = nlohmann::json::parse(config)["quantization_config"]["sparsity_config"];
  EXPECT_EQ(sparsity["format"], "sparse-24-bitmask");
  EXPECT_DOUBLE_EQ(sparsity["global_sparsity"].get<double>(), 0.5);
  // Both layouts load to the same model.
  auto a = LoadModel((dir_ / "dense").string());
  auto b = LoadModel((dir_ / "sparse").string());
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  const at::Tensor ids = calibration_.slice(0, 0, 2);
  EXPECT_TRUE(at::equal(a->Forward(ids), b->Forward(ids)));

  ResumeWritesTheSameShards(in, dir_, calibration_, o);
}

TEST_F(StreamingQuantizerTest, SparseGptBadOptionsAreRefusedBeforeAnyWork) {
  const std::string in = Save(TinyConfig());
  auto message = [&](const StreamingQuantizeOptions& o) {
    auto r = QuantizeCheckpointStreaming(in, calibration_, (dir_ / "bad").string(), o);
    EXPECT_FALSE(r.ok());
    EXPECT_FALSE(fs::exists(dir_ / "bad" / "model-00004-of-00004.safetensors"));
    return std::string(r.status().message());
  };
  EXPECT_EQ(message(SparseGptOptions(0, 0, 0.0)), "SparseGPT needs a sparsity or an n:m pattern");
  StreamingQuantizeOptions o = SparseGptOptions(0, 0, 0.5);
  o.pruned_layout = StreamingQuantizeOptions::PrunedLayout::kSparse24Bitmask;
  EXPECT_EQ(message(o), "the sparse-24-bitmask layout holds 2:4 sparsity only");
  o = SparseGptOptions(2, 4, 0.0);
  o.pruned_layout = StreamingQuantizeOptions::PrunedLayout::kSparse24Bitmask;
  EXPECT_EQ(message(o), "the sparse-24-bitmask layout is stored in bfloat16 or float16");
}

}  // namespace
}  // namespace squeeze
