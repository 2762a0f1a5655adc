// GPU correctness of the compression algorithms (run on the GPU machine; see README.md): the CUDA
// path computes what the CPU path computes, and the whole sequential pipeline runs on a device.
#include <ATen/ATen.h>

#include "common/compress/gptq.h"
#include "common/compress/perplexity.h"
#include "common/compress/rtn.h"
#include "common/compress/sequential_quantizer.h"
#include "common/compress/streaming_quantizer.h"
#include "common/tensor/torch_tensor.h"
#include "gtest/gtest.h"

#ifdef SQUEEZE_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace squeeze {
namespace {

class CompressCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  }
};

// 256 wide, grouped-query attention (8 query heads over 4 key/value heads), the MLP twice as wide.
LlamaConfig SmallLlama(int64_t layers) {
  LlamaConfig c;
  c.vocab_size = 256;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.head_dim = 32;
  return c;
}

at::Tensor CorrelatedInputs(int64_t n, int64_t d) {
  at::manual_seed(0);
  return at::randn({n, d}).matmul(at::randn({d, d}) / std::sqrt(static_cast<double>(d)) +
                                  at::eye(d));
}

double OutputError(const at::Tensor& x, const at::Tensor& w, const at::Tensor& q) {
  return (x.matmul(w.t()) - x.matmul(q.t())).pow(2).sum().item<double>();
}

TEST_F(CompressCudaTest, RtnOnTheDeviceEqualsTheHost) {
  at::manual_seed(1);
  at::Tensor w = at::randn({256, 512});
  auto cpu = QuantizeRtn(w, {4, 128, false});
  auto gpu = QuantizeRtn(w.cuda(), {4, 128, false});
  ASSERT_TRUE(cpu.ok() && gpu.ok());
  // Scales are float16 values: a range computed in another order can land one float16 step
  // away, and move a code at a rounding tie. Nearly all must agree exactly.
  EXPECT_GT(cpu->codes.eq(gpu->codes.cpu()).to(at::kFloat).mean().item<double>(), 0.999);
  EXPECT_GT(cpu->scales.eq(gpu->scales.cpu()).to(at::kFloat).mean().item<double>(), 0.99);
  EXPECT_LT((cpu->Dequantize() - gpu->Dequantize().cpu()).abs().mean().item<double>(), 1e-4);
}

TEST_F(CompressCudaTest, GptqOnTheDeviceMatchesTheHost) {
  const int64_t d = 512;
  at::Tensor x = CorrelatedInputs(4096, d);
  at::Tensor w = at::randn({256, d}) * 0.05;
  HessianAccumulator host(d, at::kCPU), device(d, at::Device(at::kCUDA));
  host.Add(x);
  device.Add(x.cuda());
  EXPECT_TRUE(at::allclose(host.hessian(), device.hessian().cpu(), 1e-3, 1e-3));
  for (bool act_order : {false, true}) {
    GptqOptions o;
    o.quant = {4, 128, false};
    o.act_order = act_order;
    auto cpu = QuantizeGptq(w, host.hessian(), o);
    auto gpu = QuantizeGptq(w.cuda(), device.hessian(), o);
    ASSERT_TRUE(cpu.ok() && gpu.ok()) << cpu.status() << gpu.status();
    const double e_cpu = OutputError(x, w, cpu->weight.Dequantize());
    const double e_gpu = OutputError(x, w, gpu->weight.Dequantize().cpu());
    EXPECT_NEAR(e_gpu / e_cpu, 1.0, 0.02) << "act_order=" << act_order;
    const double e_rtn = OutputError(x, w, QuantizeRtn(w, o.quant)->Dequantize());
    EXPECT_LT(e_gpu, 0.8 * e_rtn);
  }
}

TEST_F(CompressCudaTest, SequentialGptqRunsLayerByLayerOnTheDevice) {
  const LlamaConfig c = SmallLlama(3);
  const LlamaModel original = LlamaModel::RandomInit(c, 1);
  LlamaModel cpu_model = LlamaModel::RandomInit(c, 1);
  LlamaModel gpu_model = LlamaModel::RandomInit(c, 1);
  at::manual_seed(2);
  at::Tensor calibration = at::randint(0, 256, {32, 128}, at::kLong);
  SequentialOptions o;
  o.gptq.quant = {4, 128, false};
  auto cpu = QuantizeSequential(cpu_model, calibration, o);
  o.device = at::Device(at::kCUDA);
  auto gpu =
      QuantizeSequential(gpu_model, calibration, o);  // model on the host, layers on the device
  ASSERT_TRUE(cpu.ok() && gpu.ok()) << cpu.status() << gpu.status();
  ASSERT_EQ(cpu->size(), gpu->size());
  for (size_t i = 0; i < cpu->size(); ++i) {
    EXPECT_NEAR((*gpu)[i].loss / (*cpu)[i].loss, 1.0, 0.05)
        << (*cpu)[i].layer << " " << (*cpu)[i].name;
  }
  EXPECT_EQ(gpu_model.device(), at::Device(at::kCPU));
  // Rounding decisions may differ in places between the two, but the damage to the model's
  // outputs must be the same size.
  at::Tensor ids = calibration.slice(0, 0, 8);
  const at::Tensor reference = original.Forward(ids);
  const double cpu_error = (cpu_model.Forward(ids) - reference).pow(2).sum().item<double>();
  const double gpu_error = (gpu_model.Forward(ids) - reference).pow(2).sum().item<double>();
  EXPECT_NEAR(gpu_error / cpu_error, 1.0, 0.2) << cpu_error << " vs " << gpu_error;
}

// The fused block kernel (CUDA, block_size 128) against ATen's column loop on the host, on the
// same weight and Hessian, across the options that change how columns are grouped and ordered,
// including a last block shorter than 128 columns.
TEST_F(CompressCudaTest, FusedBlockSolveMatchesTheColumnLoop) {
  struct Variant {
    int bits;
    int64_t group, cols;
    bool sym, act_order, static_groups;
  };
  const Variant variants[] = {{4, 128, 512, false, false, false}, {4, 128, 512, false, true, false},
                              {4, 128, 512, false, true, true},   {3, 32, 320, true, false, false},
                              {8, -1, 256, false, false, false},  {2, 64, 448, false, true, false}};
  for (const Variant& v : variants) {
    at::Tensor x = CorrelatedInputs(2048, v.cols);
    at::Tensor w = at::randn({200, v.cols}) * 0.05;  // rows not a multiple of the 32 per CTA
    HessianAccumulator acc(v.cols, at::kCPU);
    acc.Add(x);
    GptqOptions o;
    o.quant = {v.bits, v.group, v.sym};
    o.act_order = v.act_order;
    o.static_groups = v.static_groups;
    auto host = QuantizeGptq(w, acc.hessian(), o);
    auto fused = QuantizeGptq(w.cuda(), acc.hessian().cuda(), o);
    ASSERT_TRUE(host.ok() && fused.ok()) << host.status() << fused.status();
    const double same =
        host->weight.codes.eq(fused->weight.codes.cpu()).to(at::kFloat).mean().item<double>();
    const std::string what = "bits " + std::to_string(v.bits) + " group " +
                             std::to_string(v.group) + " act_order " + std::to_string(v.act_order);
    EXPECT_GT(same, 0.995) << what;
    EXPECT_NEAR(fused->loss / host->loss, 1.0, 0.01) << what;
    EXPECT_TRUE(at::equal(host->weight.g_idx, fused->weight.g_idx.cpu())) << what;
    // Scales are float16 values: float32 reassociation may move one by an ulp here and there.
    const at::Tensor relative =
        (host->weight.scales - fused->weight.scales.cpu()).abs() / host->weight.scales.abs();
    EXPECT_LT(relative.mean().item<double>(), 1e-3) << what;
  }
}

// SparseGPT through GPTQ's fused block kernel (masks chosen in the kernel for n:m) against the
// column loop on the host: the same masks almost everywhere, the same losses, exact zeros.
TEST_F(CompressCudaTest, FusedSparseGptMatchesTheColumnLoop) {
  struct Variant {
    double sparsity;
    int n, m;
    bool quantize, fixed;
  };
  const Variant variants[] = {{0.5, 0, 0, false, false}, {0.0, 2, 4, false, false},
                              {0.0, 4, 8, false, false}, {0.5, 0, 0, true, false},
                              {0.0, 2, 4, true, false},  {0.0, 0, 0, true, true}};
  for (const Variant& v : variants) {
    at::Tensor x = CorrelatedInputs(2048, 384);
    at::Tensor w = at::randn({200, 384}) * 0.05;
    HessianAccumulator acc(384, at::kCPU);
    acc.Add(x);
    GptqOptions o;
    o.quant = {4, 128, false};
    SparsityRule rule;
    rule.sparsity = v.sparsity;
    rule.n = v.n;
    rule.m = v.m;
    if (v.fixed) rule.keep = at::rand({200, 384}) > 0.5;
    auto host_solver = GptqSolver::Prepare(acc.hessian(), o);
    auto cuda_solver = GptqSolver::Prepare(acc.hessian().cuda(), o);
    ASSERT_TRUE(host_solver.ok() && cuda_solver.ok());
    auto host = host_solver->SolveSparse(w, rule, v.quantize, 4);
    SparsityRule cuda_rule = rule;
    if (v.fixed) cuda_rule.keep = rule.keep.cuda();
    auto fused = cuda_solver->SolveSparse(w.cuda(), cuda_rule, v.quantize, 4);
    ASSERT_TRUE(host.ok() && fused.ok()) << host.status() << fused.status();
    const std::string what = "sparsity " + std::to_string(v.sparsity) + " n:m " +
                             std::to_string(v.n) + ":" + std::to_string(v.m) + " quantize " +
                             std::to_string(v.quantize);
    EXPECT_GT(host->keep.eq(fused->keep.cpu()).to(at::kFloat).mean().item<double>(), 0.99) << what;
    EXPECT_NEAR(fused->loss / host->loss, 1.0, 0.02) << what;
    const at::Tensor fw = fused->weight.cpu();
    EXPECT_TRUE((fw.masked_select(fused->keep.cpu().logical_not()) == 0).all().item<bool>())
        << what;
    if (v.m > 0) {
      EXPECT_TRUE(fused->keep.cpu().view({200, -1, v.m}).sum(-1).eq(v.m - v.n).all().item<bool>())
          << what;
    }
    if (v.quantize) {
      EXPECT_TRUE(at::allclose(fused->quantized.Dequantize().cpu(), fw, 1e-5, 1e-6)) << what;
    }
    EXPECT_LT((fw - host->weight).abs().max().item<double>(), 0.05) << what;
  }
}

// Hessians from bfloat16 inputs: one GEMM with float32 accumulation, equal to the float32 product
// of the same (bf16-rounded) inputs.
TEST_F(CompressCudaTest, HessianFromBfloat16InputsAccumulatesInFloat32) {
  at::Tensor x = CorrelatedInputs(3000, 384).to(at::kBFloat16);
  HessianAccumulator exact(384, at::kCPU), fast(384, at::Device(at::kCUDA));
  exact.Add(x.slice(0, 0, 1000).to(at::kFloat));
  exact.Add(x.slice(0, 1000).to(at::kFloat));
  fast.Add(x.slice(0, 0, 1000).cuda());
  fast.Add(x.slice(0, 1000).cuda());
  EXPECT_EQ(fast.hessian().scalar_type(), at::kFloat);
  EXPECT_TRUE(at::allclose(exact.hessian(), fast.hessian().cpu(), 1e-4, 1e-4));
}

// The streaming path on the device (bf16 layers, shards per layer) writes a checkpoint that loads
// and whose damage to the outputs matches the host's float32 pipeline; resuming from the first
// two layers' shards reproduces the same files.
TEST_F(CompressCudaTest, StreamingQuantizerOnTheDeviceWritesALoadableShardedCheckpoint) {
  LlamaConfig c = SmallLlama(4);
  c.torch_dtype = "bfloat16";
  const std::string dir = ::testing::TempDir() + "/streaming_cuda";
  const LlamaModel original = LlamaModel::RandomInit(c, 1);
  ASSERT_TRUE(original.Save(dir + "/in", at::kBFloat16).ok());
  at::manual_seed(2);
  at::Tensor calibration = at::randint(0, 256, {32, 128}, at::kLong);
  StreamingQuantizeOptions o;
  o.sequential.gptq.quant = {4, 128, false};
  o.sequential.device = at::Device(at::kCUDA);
  std::map<int64_t, std::string> shards;
  o.on_file = [&](int64_t layer, const std::string& path, const std::string& name) {
    if (layer >= 0) shards[layer] = path;
    return absl::OkStatus();
  };
  auto result = QuantizeCheckpointStreaming(dir + "/in", calibration, dir + "/out", o);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->format, "gptq");
  EXPECT_EQ(shards.size(), 4u);
  auto loaded = LoadModel(dir + "/out");
  ASSERT_TRUE(loaded.ok()) << loaded.status();

  LlamaModel host_model = LlamaModel::RandomInit(c, 1);
  SequentialOptions host;
  host.gptq.quant = {4, 128, false};
  ASSERT_TRUE(QuantizeSequential(host_model, calibration, host).ok());
  const at::Tensor ids = calibration.slice(0, 0, 8);
  const at::Tensor reference = original.Forward(ids);
  const double host_error = (host_model.Forward(ids) - reference).pow(2).sum().item<double>();
  const double device_error = (loaded->Forward(ids) - reference).pow(2).sum().item<double>();
  EXPECT_NEAR(device_error / host_error, 1.0, 0.3) << host_error << " vs " << device_error;

  // Resume after two layers: the remaining shards come out the same.
  StreamingQuantizeOptions resumed = o;
  resumed.start_layer = 2;
  const std::map<int64_t, std::string> first = shards;
  resumed.finished_shard = [&](int64_t layer) -> absl::StatusOr<std::string> {
    return first.at(layer);
  };
  std::map<int64_t, std::string> again;
  resumed.on_file = [&](int64_t layer, const std::string& path, const std::string& name) {
    if (layer >= 0) again[layer] = path;
    return absl::OkStatus();
  };
  auto second = QuantizeCheckpointStreaming(dir + "/in", calibration, dir + "/again", resumed);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ(again.size(), 2u);
  for (int64_t layer : {2, 3}) {
    auto a = SafetensorsFile::Open(first.at(layer));
    auto b = SafetensorsFile::Open(again.at(layer));
    ASSERT_TRUE(a.ok() && b.ok());
    const std::string name = "model.layers." + std::to_string(layer) + ".mlp.down_proj.qweight";
    auto ta = ToTorch(*(*a)->Get(name)), tb = ToTorch(*(*b)->Get(name));
    const double same = ta->eq(*tb).to(at::kFloat).mean().item<double>();
    EXPECT_GT(same, 0.99) << "layer " << layer;
  }
}

#ifdef SQUEEZE_HAS_CUDA
// The model stays on the host; the device holds one layer, its Hessians and the activations, so
// peak device memory does not grow with the number of layers.
TEST_F(CompressCudaTest, PeakDeviceMemoryDoesNotGrowWithDepth) {
  auto peak_for = [](int64_t layers) {
    LlamaConfig c;
    c.vocab_size = 512;
    c.hidden_size = 512;
    c.intermediate_size = 1536;
    c.num_hidden_layers = layers;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 8;
    c.head_dim = 64;
    LlamaModel model = LlamaModel::RandomInit(c, 3);
    at::Tensor calibration = at::randint(0, 512, {32, 128}, at::kLong);
    SequentialOptions o;
    o.gptq.quant = {4, 128, false};
    o.device = at::Device(at::kCUDA);
    c10::cuda::CUDACachingAllocator::emptyCache();
    c10::cuda::CUDACachingAllocator::resetPeakStats(0);
    EXPECT_TRUE(QuantizeSequential(model, calibration, o).ok());
    return c10::cuda::CUDACachingAllocator::getDeviceStats(0).allocated_bytes[0].peak;
  };
  const int64_t shallow = peak_for(2), deep = peak_for(12);
  std::cout << "peak device memory: 2 layers " << shallow << " bytes, 12 layers " << deep
            << " bytes\n";
  EXPECT_LT(static_cast<double>(deep), 1.3 * shallow);
}
#endif

}  // namespace
}  // namespace squeeze
