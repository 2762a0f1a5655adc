// The quantize runner on a real file store, driven by a lease as a worker receives it: typed
// options in, a packed model artifact and a report out; a lease whose options it cannot honour is
// refused, never run with a default method.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "common/base/file_util.h"
#include "common/compress/quantized_checkpoint.h"
#include "common/model/llama_model.h"
#include "common/store/artifact_store.h"
#include "gtest/gtest.h"
#include "services/worker/runners/runners.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze::worker {
namespace {

namespace fs = std::filesystem;

class QuantizeRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("quantize_runner_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    RemoveTree(dir_).IgnoreError();
    LlamaConfig c = TinyLlamaConfig(/*layers=*/2, /*hidden=*/128);
    ASSERT_TRUE(LlamaModel::RandomInit(c, 5).Save((dir_ / "model").string(), at::kFloat).ok());
    // Calibration text in the byte tokenizer's reach.
    std::ofstream data(dir_ / "calibration.jsonl");
    for (int i = 0; i < 40; ++i)
      data << "{\"text\": \"calibration line " << i << " with some words to fill a window\"}\n";
    auto store = OpenArtifactStore(store_root());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }

  std::string store_root() const { return "file://" + (dir_ / "store").string(); }

  v1::TaskLease Lease(const v1::StageOptions& stage) const {
    v1::TaskLease lease;
    lease.set_job_id("job-1");
    lease.set_task_id("job-1-t0");
    lease.set_attempt(1);
    lease.set_kind("quantize");
    *lease.mutable_stage() = stage;
    lease.mutable_data()->set_store_root(store_root());
    lease.mutable_data()->set_calibration((dir_ / "calibration.jsonl").string());
    (*lease.mutable_inputs())["model"] = (dir_ / "model").string();
    lease.set_output_uri(store_root() + "/jobs/job-1/0-quantize");
    lease.set_checkpoint_uri(store_root() + "/jobs/job-1/0-quantize.checkpoint");
    lease.set_world_size(1);
    return lease;
  }

  absl::StatusOr<TaskOutput> Run(const v1::TaskLease& lease) {
    fs::create_directories(dir_ / "scratch");
    TaskContext ctx(lease, store_.get(), (dir_ / "scratch").string(), at::kCPU, 0);
    return QuantizeRunner().Run(ctx);
  }

  fs::path dir_;
  std::unique_ptr<ArtifactStore> store_;
};

v1::StageOptions Quantize(v1::QuantizeStage::Method method, int bits) {
  v1::StageOptions o;
  v1::QuantizeStage* q = o.mutable_quantize();
  q->set_method(method);
  q->set_bits(bits);
  q->set_group_size(64);
  q->set_sym(true);
  q->set_damp(0.01);
  q->set_block_size(128);
  q->mutable_calibration()->set_samples(4);
  q->mutable_calibration()->set_seq_len(32);
  return o;
}

TEST_F(QuantizeRunnerTest, RtnWritesAPackedModelArtifactAndReportsItsOptions) {
  auto out = Run(Lease(Quantize(v1::QuantizeStage::RTN, 4)));
  ASSERT_TRUE(out.ok()) << out.status();
  const std::string uri = store_root() + "/jobs/job-1/0-quantize";
  EXPECT_EQ(out->outputs.at("model"), uri);
  ASSERT_TRUE(out->result.has_quantize());
  const v1::QuantizeResult& result = out->result.quantize();
  EXPECT_EQ(result.method(), "rtn");
  EXPECT_EQ(result.bits(), 4);
  EXPECT_EQ(result.group_size(), 64);
  EXPECT_TRUE(result.sym());
  EXPECT_EQ(result.layers(), 2);
  EXPECT_GT(result.output_bytes(), 0);
  ASSERT_TRUE(*store_->Exists(uri));
  // The artifact's config says how it was quantized, and its layers hold packed codes.
  auto config =
      nlohmann::json::parse(*store_->ReadArtifactRange(uri, "config.json", 0, -1, nullptr));
  EXPECT_EQ(config["quantization_config"]["bits"], 4);
  EXPECT_EQ(config["quantization_config"]["group_size"], 64);
  auto index = nlohmann::json::parse(
      *store_->ReadArtifactRange(uri, "model.safetensors.index.json", 0, -1, nullptr));
  EXPECT_TRUE(index["weight_map"].contains("model.layers.1.mlp.down_proj.qweight"));
  // The manifest records the typed options the task ran with.
  auto manifest = nlohmann::json::parse(
      std::ifstream(dir_ / "store/jobs/job-1/0-quantize/manifest.json"), nullptr, false);
  ASSERT_TRUE(manifest.is_object());
  EXPECT_EQ(manifest["provenance"]["stage_spec"]["quantize"]["bits"], 4);
}

TEST_F(QuantizeRunnerTest, GptqSamplesTheJobsCalibrationFile) {
  auto out = Run(Lease(Quantize(v1::QuantizeStage::GPTQ, 4)));
  ASSERT_TRUE(out.ok()) << out.status();
  const v1::QuantizeResult& result = out->result.quantize();
  EXPECT_EQ(result.method(), "gptq");
  // A loss for each of the 7 linears of both layers, every one finite and non-negative.
  ASSERT_EQ(result.linears_size(), 14) << result.DebugString();
  for (const v1::LinearQuantization& l : result.linears()) {
    EXPECT_GE(l.loss(), 0.0);
    EXPECT_TRUE(std::isfinite(l.loss()));
  }
}

// AWQ as a job stage: every linear searched and rounded, the folded norms in the checkpoint, and
// the model read back close to the original.
TEST_F(QuantizeRunnerTest, AwqWritesAPackedModelWithFoldedNorms) {
  v1::StageOptions awq = Quantize(v1::QuantizeStage::AWQ, 4);
  awq.mutable_quantize()->set_sym(false);
  awq.mutable_quantize()->mutable_awq()->set_grid(10);
  awq.mutable_quantize()->mutable_awq()->set_clip(true);
  awq.mutable_quantize()->mutable_awq()->set_max_shrink(0.5);
  awq.mutable_quantize()->set_format(v1::QuantizeStage::FORMAT_AWQ_GEMM);
  auto out = Run(Lease(awq));
  ASSERT_TRUE(out.ok()) << out.status();
  const v1::QuantizeResult& result = out->result.quantize();
  EXPECT_EQ(result.method(), "awq");
  EXPECT_EQ(result.format(), "awq_gemm");
  auto config = nlohmann::json::parse(
      *store_->ReadArtifactRange(out->outputs.at("model"), "config.json", 0, -1, nullptr));
  EXPECT_EQ(config["quantization_config"]["quant_method"], "awq");
  EXPECT_EQ(config["quantization_config"]["version"], "gemm");
  ASSERT_EQ(result.linears_size(), 14);
  for (const v1::LinearQuantization& l : result.linears())
    EXPECT_TRUE(std::isfinite(l.loss()) && l.loss() >= 0.0) << l.ShortDebugString();
  auto dir = store_->LocalDirectory(out->outputs.at("model"), (dir_ / "read").string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto loaded = LoadModel(*dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto original = LlamaModel::Load((dir_ / "model").string());
  ASSERT_TRUE(original.ok());
  // Scales were folded into the input norm (it is not all ones any more).
  EXPECT_GT((loaded->layer(0).input_layernorm - 1.0).abs().max().item<float>(), 1e-3);
  // As close to the original as round-to-nearest of the same grid gets (a wrongly folded scale
  // would be far off); random weights have no outlier channels for AWQ to win on.
  v1::TaskLease rtn_lease = Lease(Quantize(v1::QuantizeStage::RTN, 4));
  rtn_lease.mutable_stage()->mutable_quantize()->set_sym(false);
  rtn_lease.set_output_uri(store_root() + "/jobs/job-1/rtn");
  rtn_lease.set_checkpoint_uri(rtn_lease.output_uri() + ".checkpoint");
  auto rtn_out = Run(rtn_lease);
  ASSERT_TRUE(rtn_out.ok()) << rtn_out.status();
  auto rtn_dir = store_->LocalDirectory(rtn_out->outputs.at("model"), (dir_ / "rtn").string());
  ASSERT_TRUE(rtn_dir.ok());
  auto rtn = LoadModel(*rtn_dir);
  ASSERT_TRUE(rtn.ok()) << rtn.status();
  at::manual_seed(3);
  at::Tensor ids = at::randint(0, loaded->config().vocab_size, {4, 32}, at::kLong);
  const at::Tensor a = original->Forward(ids);
  const double awq_error = (loaded->Forward(ids) - a).norm().item<double>();
  const double rtn_error = (rtn->Forward(ids) - a).norm().item<double>();
  EXPECT_LT(awq_error, 1.1 * rtn_error) << "AWQ " << awq_error << ", RTN " << rtn_error;
}

// W8A8 as a job stage: static input scales calibrated on the job's calibration file, written in
// the compressed-tensors layout, and read back into linears that quantize their inputs.
TEST_F(QuantizeRunnerTest, W8A8WritesCompressedTensorsWithStaticInputScales) {
  v1::StageOptions w8a8 = Quantize(v1::QuantizeStage::RTN, 8);
  v1::QuantizeStage& q = *w8a8.mutable_quantize();
  q.set_group_size(-1);
  q.set_format(v1::QuantizeStage::FORMAT_COMPRESSED_TENSORS);
  q.mutable_activations()->set_mode(v1::ActivationQuantization::STATIC_PER_TENSOR);
  q.mutable_activations()->set_smoothquant_alpha(0.5);
  auto out = Run(Lease(w8a8));
  ASSERT_TRUE(out.ok()) << out.status();
  const v1::QuantizeResult& result = out->result.quantize();
  EXPECT_EQ(result.format(), "compressed_tensors");
  EXPECT_EQ(result.activations(), "static");
  EXPECT_DOUBLE_EQ(result.smoothquant_alpha(), 0.5);
  auto config = nlohmann::json::parse(
      *store_->ReadArtifactRange(out->outputs.at("model"), "config.json", 0, -1, nullptr));
  EXPECT_EQ(config["quantization_config"]["quant_method"], "compressed-tensors");
  auto dir = store_->LocalDirectory(out->outputs.at("model"), (dir_ / "read").string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto loaded = LoadModel(*dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (auto& [name, linear] : loaded->layer(1).Linears()) {
    EXPECT_EQ(linear->input_quant.kind, ActivationQuant::Kind::kStaticPerTensor) << name;
    EXPECT_GT(linear->input_quant.scale.item<float>(), 0.0f) << name;
  }
  // Without calibration data the stage fails by name instead of guessing scales.
  v1::TaskLease no_data = Lease(w8a8);
  no_data.mutable_data()->clear_calibration();
  no_data.set_output_uri(store_root() + "/jobs/job-1/nodata");
  no_data.set_checkpoint_uri(no_data.output_uri() + ".checkpoint");
  auto refused = Run(no_data);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("calibration"), std::string::npos) << refused.status();
}

// Mixed precision as a job stage: widths measured and chosen within the budget, each linear
// quantized at its width, the plan in the artifact; a retried task takes the widths its checkpoint
// recorded instead of measuring again.
// NF4 with double quantization: bitsandbytes' layout, its quantization_config, the tokenizer
// beside it, and a model our loader reads.
TEST_F(QuantizeRunnerTest, Nf4WritesTheBitsandbytesLayout) {
  v1::StageOptions o;
  v1::QuantizeStage* q = o.mutable_quantize();
  q->set_method(v1::QuantizeStage::NF4);
  q->set_bits(4);
  q->set_group_size(64);
  q->set_double_quant(true);
  q->set_format(v1::QuantizeStage::FORMAT_BITSANDBYTES);
  std::ofstream(dir_ / "model" / "tokenizer.json") << "{}";
  auto out = Run(Lease(o));
  ASSERT_TRUE(out.ok()) << out.status();
  const v1::QuantizeResult& result = out->result.quantize();
  EXPECT_EQ(result.method(), "nf4");
  EXPECT_EQ(result.format(), "bitsandbytes_nf4");
  EXPECT_NEAR(result.bits_per_quantized_weight(), 4.127, 1e-3);
  const std::string uri = out->outputs.at("model");
  auto config =
      nlohmann::json::parse(*store_->ReadArtifactRange(uri, "config.json", 0, -1, nullptr));
  EXPECT_EQ(config["quantization_config"]["quant_method"], "bitsandbytes");
  EXPECT_EQ(config["quantization_config"]["bnb_4bit_compute_dtype"], "float16");
  auto index = nlohmann::json::parse(
      *store_->ReadArtifactRange(uri, "model.safetensors.index.json", 0, -1, nullptr));
  EXPECT_TRUE(index["weight_map"].contains(
      "model.layers.1.mlp.down_proj.weight.quant_state.bitsandbytes__nf4"));
  EXPECT_TRUE(index["weight_map"].contains("model.layers.1.mlp.down_proj.weight.nested_absmax"));
  EXPECT_EQ(*store_->ReadArtifactRange(uri, "tokenizer.json", 0, -1, nullptr), "{}");
  auto dir = store_->LocalDirectory(uri, (dir_ / "read").string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto loaded = LoadModel(*dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto original = LlamaModel::Load((dir_ / "model").string());
  ASSERT_TRUE(original.ok());
  const at::Tensor w = original->layer(0).q_proj.weight, got = loaded->layer(0).q_proj.weight;
  EXPECT_LT(((got - w).norm() / w.norm()).item<double>(), 0.15) << "4 bits, close";
}

TEST_F(QuantizeRunnerTest, MixedPrecisionChoosesWidthsAndResumesWithTheRecordedOnes) {
  v1::StageOptions mixed = Quantize(v1::QuantizeStage::GPTQ, 4);
  mixed.mutable_quantize()->mutable_mixed_precision()->add_bits(2);
  mixed.mutable_quantize()->mutable_mixed_precision()->add_bits(4);
  mixed.mutable_quantize()->mutable_mixed_precision()->set_average_bits(3.0);
  auto out = Run(Lease(mixed));
  ASSERT_TRUE(out.ok()) << out.status();
  const v1::QuantizeResult& result = out->result.quantize();
  ASSERT_EQ(result.bits_by_module_size(), 14);
  EXPECT_LE(result.average_bits(), 3.0);
  EXPECT_GT(result.average_bits(), 2.0) << "the budget is spent";
  std::set<int> widths;
  for (const v1::LinearQuantization& l : result.linears()) {
    const std::string module = "model.layers." + std::to_string(l.layer()) + "." + l.linear();
    EXPECT_EQ(l.bits(), result.bits_by_module().at(module)) << module;
    widths.insert(l.bits());
  }
  EXPECT_EQ(widths, (std::set<int>{2, 4}));
  const std::string model = out->outputs.at("model");
  auto plan = nlohmann::json::parse(
      *store_->ReadArtifactRange(model, "mixed_precision.json", 0, -1, nullptr));
  EXPECT_EQ(plan["modules"].size(), 14u);
  EXPECT_EQ(plan["budget"]["average_bits"], 3.0);
  auto config =
      nlohmann::json::parse(*store_->ReadArtifactRange(model, "config.json", 0, -1, nullptr));
  EXPECT_TRUE(config["quantization_config"].contains("dynamic"));
  auto dir = store_->LocalDirectory(model, (dir_ / "read").string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  ASSERT_TRUE(LoadModel(*dir).ok());

  // A retry whose checkpoint holds a plan (here: every linear at 4 bits) quantizes at its widths.
  for (auto& [module, entry] : plan["modules"].items()) entry["bits"] = 4;
  plan["base_bits"] = 4;
  const std::string plan_path = (dir_ / "plan.json").string();
  std::ofstream(plan_path) << plan.dump();
  v1::TaskLease retry = Lease(mixed);
  retry.set_output_uri(store_root() + "/jobs/job-1/retry");
  retry.set_checkpoint_uri(store_root() + "/jobs/job-1/retry.checkpoint");
  const std::string ckpt = retry.checkpoint_uri() + "/shards";
  auto stored = store_->PutFileBlob(ckpt, "mixed_precision.json", plan_path, false);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_TRUE(store_->PutManifest(ckpt, {*stored}, {}).ok());
  auto resumed = Run(retry);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  for (const auto& [module, bits] : resumed->result.quantize().bits_by_module())
    EXPECT_EQ(bits, 4) << module;
  EXPECT_DOUBLE_EQ(resumed->result.quantize().average_bits(), 4.0);
}

// Joint sparsity and quantization: SparseGPT prunes half of every linear in GPTQ's pass and the
// packed model holds those weights as exact zeros. A GPTQ stage on an already pruned model keeps
// its zeros (mask-aware GPTQ).
TEST_F(QuantizeRunnerTest, GptqPrunesInItsPassAndKeepsAPrunedModelsZeros) {
  v1::StageOptions joint = Quantize(v1::QuantizeStage::GPTQ, 4);
  joint.mutable_quantize()->mutable_prune()->set_method(v1::PruneTarget::SPARSEGPT);
  joint.mutable_quantize()->mutable_prune()->set_pattern(v1::PruneTarget::TWO_FOUR);
  joint.mutable_quantize()->mutable_prune()->set_sparsity(0.5);
  auto out = Run(Lease(joint));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->result.quantize().prune_pattern(), "2:4");
  EXPECT_DOUBLE_EQ(out->result.quantize().prune_sparsity(), 0.5);
  auto dir = store_->LocalDirectory(out->outputs.at("model"), (dir_ / "read").string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto loaded = LoadModel(*dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (int64_t l = 0; l < 2; ++l) {
    for (auto& [name, linear] : loaded->layer(l).Linears()) {
      const at::Tensor zeros = (linear->weight == 0).reshape({linear->weight.size(0), -1, 4});
      EXPECT_TRUE(zeros.sum(-1).ge(2).all().item<bool>()) << l << " " << name;
    }
  }

  // A model with half its weights at zero, quantized by plain GPTQ: the zeros stay zeros.
  auto model = LlamaModel::Load((dir_ / "model").string());
  ASSERT_TRUE(model.ok());
  at::manual_seed(11);
  for (int64_t l = 0; l < 2; ++l) {
    for (auto& [name, linear] : model->layer(l).Linears())
      linear->weight.mul_(at::rand(linear->weight.sizes()) > 0.5);
  }
  ASSERT_TRUE(model->Save((dir_ / "sparse").string(), at::kFloat).ok());
  v1::TaskLease lease = Lease(Quantize(v1::QuantizeStage::GPTQ, 4));
  (*lease.mutable_inputs())["model"] = (dir_ / "sparse").string();
  lease.set_output_uri(store_root() + "/jobs/job-1/sparse");
  lease.set_checkpoint_uri(lease.output_uri() + ".checkpoint");
  auto kept = Run(lease);
  ASSERT_TRUE(kept.ok()) << kept.status();
  auto kept_dir = store_->LocalDirectory(lease.output_uri(), (dir_ / "read-sparse").string());
  ASSERT_TRUE(kept_dir.ok());
  auto quantized = LoadModel(*kept_dir);
  ASSERT_TRUE(quantized.ok()) << quantized.status();
  for (int64_t l = 0; l < 2; ++l) {
    auto before = model->layer(l).Linears();
    auto after = quantized->layer(l).Linears();
    for (size_t k = 0; k < before.size(); ++k) {
      const at::Tensor pruned = before[k].second->weight == 0;
      EXPECT_TRUE((after[k].second->weight.masked_select(pruned) == 0).all().item<bool>())
          << l << " " << before[k].first;
    }
  }
}

// A Qwen3 model (per-head q/k norms, head_dim unequal to hidden / heads) through GPTQ: the packed
// artifact keeps the norms and loads back close to the original.
TEST_F(QuantizeRunnerTest, Qwen3ModelsKeepTheirHeadNormsThroughGptq) {
  LlamaConfig c = TinyLlamaConfig(/*layers=*/2, /*hidden=*/128);
  c.model_type = "qwen3";
  c.head_dim = 64;  // 4 heads x 64 = 256
  LlamaModel original = LlamaModel::RandomInit(c, 6);
  at::manual_seed(1);
  for (int64_t i = 0; i < original.num_layers(); ++i) original.layer(i).k_norm.uniform_(0.5, 1.5);
  RemoveTree((dir_ / "model").string()).IgnoreError();
  ASSERT_TRUE(original.Save((dir_ / "model").string(), at::kFloat).ok());
  v1::StageOptions gptq = Quantize(v1::QuantizeStage::GPTQ, 8);
  auto out = Run(Lease(gptq));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->result.quantize().format(), "gptq");
  auto dir = store_->LocalDirectory(out->outputs.at("model"), (dir_ / "read").string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto loaded = LoadModel(*dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config().model_type, "qwen3");
  // fp16 storage of the norms, 8-bit weights: close, not exact.
  EXPECT_LT((loaded->layer(1).k_norm - original.layer(1).k_norm).abs().max().item<float>(), 1e-3);
  at::Tensor ids = at::randint(0, c.vocab_size, {1, 12}, at::kLong);
  const at::Tensor a = original.Forward(ids), b = loaded->Forward(ids);
  EXPECT_LT((a - b).abs().max().item<float>() / a.abs().max().item<float>(), 0.05);
}

// Gemma-3 through GPTQ: the sequential order runs its sandwich norms and GELU gating, and the
// packed artifact keeps all four norms of each layer and the tied embeddings.
TEST_F(QuantizeRunnerTest, Gemma3KeepsItsNormsAndAttentionPatternThroughGptq) {
  const LlamaConfig c = TinyGemmaConfig(/*hidden=*/128, ByteTokenizer::kMinVocab, /*window=*/8);
  LlamaModel original = LlamaModel::RandomInit(c, 9);
  at::manual_seed(2);
  for (int64_t i = 0; i < original.num_layers(); ++i)
    original.layer(i).post_feedforward_layernorm.uniform_(-0.5, 0.5);
  RemoveTree((dir_ / "model").string()).IgnoreError();
  ASSERT_TRUE(original.Save((dir_ / "model").string(), at::kFloat).ok());
  auto out = Run(Lease(Quantize(v1::QuantizeStage::GPTQ, 8)));
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->result.quantize().linears_size(), 14);
  for (const v1::LinearQuantization& l : out->result.quantize().linears())
    EXPECT_TRUE(std::isfinite(l.loss()) && l.loss() >= 0.0) << l.ShortDebugString();
  auto dir = store_->LocalDirectory(out->outputs.at("model"), (dir_ / "read").string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  auto loaded = LoadModel(*dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->config().layer_types, c.layer_types);
  EXPECT_LT(
      (loaded->layer(1).post_feedforward_layernorm - original.layer(1).post_feedforward_layernorm)
          .abs()
          .max()
          .item<float>(),
      1e-3);
  at::Tensor ids = at::randint(0, c.vocab_size, {1, 20}, at::kLong);  // past the window
  const at::Tensor a = original.Forward(ids), b = loaded->Forward(ids);
  EXPECT_LT((a - b).abs().max().item<float>() / a.abs().max().item<float>(), 0.05);
}

// Phi-3 through GPTQ: the packed checkpoint holds qkv_proj and gate_up_proj as single GPTQ linears
// (the layout vLLM and transformers load), and reads back close to the original.
TEST_F(QuantizeRunnerTest, Phi3IsWrittenWithFusedPackedProjections) {
  LlamaConfig c = TinyLlamaConfig(/*layers=*/2, /*hidden=*/128);
  c.model_type = "phi3";
  c.tie_word_embeddings = false;
  LlamaModel original = LlamaModel::RandomInit(c, 8);
  RemoveTree((dir_ / "model").string()).IgnoreError();
  ASSERT_TRUE(original.Save((dir_ / "model").string(), at::kFloat).ok());
  for (auto act_order : {false, true}) {
    v1::StageOptions gptq = Quantize(v1::QuantizeStage::GPTQ, 8);
    gptq.mutable_quantize()->set_act_order(act_order);
    v1::TaskLease lease = Lease(gptq);
    lease.set_output_uri(store_root() + "/jobs/job-1/phi3-" + std::to_string(act_order));
    lease.set_checkpoint_uri(lease.output_uri() + ".checkpoint");
    auto out = Run(lease);
    ASSERT_TRUE(out.ok()) << out.status();
    const std::string uri = out->outputs.at("model");
    auto index = nlohmann::json::parse(
        *store_->ReadArtifactRange(uri, "model.safetensors.index.json", 0, -1, nullptr));
    const auto& map = index["weight_map"];
    EXPECT_TRUE(map.contains("model.layers.0.self_attn.qkv_proj.qweight")) << map.dump();
    EXPECT_TRUE(map.contains("model.layers.1.mlp.gate_up_proj.g_idx"));
    EXPECT_FALSE(map.contains("model.layers.0.self_attn.q_proj.qweight"));
    auto dir = store_->LocalDirectory(uri, (dir_ / ("read" + std::to_string(act_order))).string());
    ASSERT_TRUE(dir.ok()) << dir.status();
    auto loaded = LoadModel(*dir);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    at::Tensor ids = at::randint(0, c.vocab_size, {1, 12}, at::kLong);
    const at::Tensor a = original.Forward(ids), b = loaded->Forward(ids);
    EXPECT_LT((a - b).abs().max().item<float>() / a.abs().max().item<float>(), 0.05)
        << "act_order " << act_order;
  }
}

TEST_F(QuantizeRunnerTest, OptionsItCannotHonourAreRefusedNotDefaulted) {
  // A method this worker does not know (a newer coordinator's): an error, not RTN.
  auto unknown = Run(Lease(Quantize(static_cast<v1::QuantizeStage::Method>(7), 4)));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("quantize method 7"), std::string::npos)
      << unknown.status();
  // Options of another stage kind, or none at all.
  v1::StageOptions prune;
  prune.mutable_prune()->mutable_target()->set_sparsity(0.5);
  auto mismatched = Run(Lease(prune));
  ASSERT_FALSE(mismatched.ok());
  EXPECT_NE(mismatched.status().message().find("carries prune options"), std::string::npos)
      << mismatched.status();
  auto none = Run(Lease(v1::StageOptions()));
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("carries no stage options"), std::string::npos)
      << none.status();
  EXPECT_FALSE(*store_->Exists(store_root() + "/jobs/job-1/0-quantize"));
}

}  // namespace
}  // namespace squeeze::worker
