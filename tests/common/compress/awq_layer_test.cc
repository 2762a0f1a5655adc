// AWQ over a whole decoder layer: the folded scales keep the layer's function (8 bits: nearly
// exact), and with a few large activation channels 4-bit AWQ lands closer to the float layer than
// 4-bit round-to-nearest, for the Llama layout and for Gemma's (1 + w) and sandwich norms.
#include "common/compress/awq_layer.h"

#include <gtest/gtest.h>

#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

struct Outcome {
  double awq = 0, rtn = 0;
  std::vector<AwqLinear> linears;
};

// Layer 0 of a random model of `c`, its norms boosting a few channels, run on random inputs:
// the relative output error of AWQ and of plain RTN at `bits`.
Outcome Compare(const LlamaConfig& c, int bits, bool clip = true) {
  LlamaModel m = LlamaModel::RandomInit(c, 21);
  DecoderLayer& layer = m.layer(0);
  for (at::Tensor* norm :
       {&layer.input_layernorm,
        c.sandwich_norms() ? &layer.pre_feedforward_layernorm : &layer.post_attention_layernorm}) {
    at::Tensor w = at::ones({c.hidden_size});
    for (int64_t j = 0; j < c.hidden_size; j += 16) w[j] = 20.0;  // outlier channels
    *norm = c.norm_plus_one() ? w - 1.0 : w;
  }
  at::manual_seed(22);
  const at::Tensor x = at::randn({8, 24, c.hidden_size});
  const RotaryTables rope = m.Rotary(24, at::kCPU, at::kFloat);
  const at::Tensor reference = layer.Forward(c, x, rope, 0);
  auto relative = [&](const DecoderLayer& l) {
    return ((l.Forward(c, x, rope, 0) - reference).norm() / reference.norm()).item<double>();
  };
  AwqOptions o;
  o.quant.bits = bits;
  o.quant.group_size = 32;
  o.clip = clip;
  DecoderLayer rtn = layer;
  for (auto& [name, linear] : rtn.Linears())
    linear->weight = QuantizeRtn(linear->weight, o.quant)->Dequantize();
  Outcome out;
  out.rtn = relative(rtn);
  DecoderLayer awq = layer;
  at::Tensor hidden = x.clone();
  auto linears = AwqQuantizeDecoderLayer(c, awq, hidden, rope, 0, o);
  EXPECT_TRUE(linears.ok()) << linears.status();
  if (!linears.ok()) return out;
  out.linears = *linears;
  out.awq = relative(awq);
  // The next layer's inputs are the float layer's outputs.
  EXPECT_TRUE(at::allclose(hidden, reference, 1e-5, 1e-5));
  return out;
}

LlamaConfig MultiHead() {
  LlamaConfig c = TinyLlamaConfig(/*layers=*/1, /*hidden=*/128);
  c.num_key_value_heads = c.num_attention_heads;  // o_proj's scales fold into v_proj
  return c;
}

TEST(AwqLayerTest, FoldedScalesKeepTheLayersFunction) {
  const Outcome o = Compare(MultiHead(), 8, /*clip=*/false);
  EXPECT_LT(o.awq, 0.01);
  EXPECT_LT(o.awq, 1.5 * o.rtn + 1e-4);
}

TEST(AwqLayerTest, BeatsRoundToNearestWithOutlierChannels) {
  for (int bits : {3, 4}) {
    const Outcome o = Compare(MultiHead(), bits);
    EXPECT_LT(o.awq, 0.8 * o.rtn) << bits << " bits: AWQ " << o.awq << " vs RTN " << o.rtn;
    ASSERT_EQ(o.linears.size(), 7u);
    EXPECT_GT(o.linears[0].alpha, 0.0);  // q/k/v were scaled
    EXPECT_EQ(o.linears[0].weight.spec.bits, bits);
  }
}

TEST(AwqLayerTest, GroupedQueriesLeaveOProjUnscaled) {
  const Outcome o = Compare(TinyLlamaConfig(/*layers=*/1, /*hidden=*/128), 4);
  ASSERT_EQ(o.linears.size(), 7u);
  EXPECT_EQ(o.linears[3].name, "self_attn.o_proj");
  EXPECT_EQ(o.linears[3].alpha, 0.0);
  EXPECT_LT(o.awq, o.rtn);
}

TEST(AwqLayerTest, Gemma3NormsTakeTheScalesAsOffsets) {
  LlamaConfig c = TinyGemmaConfig(/*hidden=*/128);
  c.num_hidden_layers = 1;
  c.layer_types = {"sliding_attention"};
  const Outcome o = Compare(c, 4);
  EXPECT_LT(o.awq, 0.8 * o.rtn) << "AWQ " << o.awq << " vs RTN " << o.rtn;
  const Outcome exact = Compare(c, 8, /*clip=*/false);
  EXPECT_LT(exact.awq, 0.01);
}

}  // namespace
}  // namespace squeeze
