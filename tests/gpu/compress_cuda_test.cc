// GPU correctness of the compression algorithms (run on the GPU machine; see README.md): the CUDA
// path computes what the CPU path computes, and the whole sequential pipeline runs on a device.
#include <ATen/ATen.h>

#include "common/compress/gptq.h"
#include "common/compress/perplexity.h"
#include "common/compress/rtn.h"
#include "common/compress/sequential_quantizer.h"
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

at::Tensor CorrelatedInputs(int64_t n, int64_t d) {
  at::manual_seed(0);
  return at::randn({n, d}).matmul(at::randn({d, d}) / std::sqrt(static_cast<double>(d)) +
                                  at::eye(d));
}

double OutputError(const at::Tensor& x, const at::Tensor& w, const at::Tensor& q) {
  return (x.matmul(w.t()) - x.matmul(q.t())).pow(2).sum().item<double>();
}

TEST_F(CompressCudaTest, RtnOnTheDeviceEqualsTheHost) {
  at::Tensor w = at::randn({256, 512});
  auto cpu = QuantizeRtn(w, {4, 128, false});
  auto gpu = QuantizeRtn(w.cuda(), {4, 128, false});
  ASSERT_TRUE(cpu.ok() && gpu.ok());
  EXPECT_TRUE(at::allclose(cpu->Dequantize(), gpu->Dequantize().cpu(), 1e-5, 1e-6));
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
  LlamaConfig c;
  c.vocab_size = 256;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 4;
  c.head_dim = 32;
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
