#include "common/compress/gptq_checkpoint.h"

#include "gtest/gtest.h"

namespace squeeze {
namespace {

QuantizedWeight RandomQuantized(int bits, int64_t out, int64_t in, int64_t group, uint64_t seed) {
  at::manual_seed(seed);
  QuantizedWeight q;
  q.spec = {bits, group, false};
  const int64_t groups = in / group;
  q.codes = at::randint(0, 1 << bits, {out, in}, at::kLong).to(at::kByte);
  q.zeros = at::randint(0, 1 << bits, {out, groups}, at::kLong).to(at::kFloat);
  q.scales = (at::rand({out, groups}) * 0.1 + 0.001).to(at::kHalf).to(at::kFloat);  // fp16-exact
  q.g_idx = at::randperm(in, at::kLong).div(group, "floor").to(at::kInt);  // act-order style groups
  return q;
}

TEST(GptqCheckpointTest, PackUnpackIsBitExactForEveryWidthAndFormat) {
  for (int bits : {2, 3, 4, 8}) {
    for (GptqFormat format : {GptqFormat::kV1, GptqFormat::kV2}) {
      QuantizedWeight q = RandomQuantized(bits, 64, 128, 32, bits);
      auto packed = PackGptqLinear(q, format);
      ASSERT_TRUE(packed.ok()) << packed.status();
      EXPECT_EQ(packed->qweight.sizes(), (at::IntArrayRef{128 * bits / 32, 64}));
      EXPECT_EQ(packed->qzeros.sizes(), (at::IntArrayRef{4, 64 * bits / 32}));
      EXPECT_EQ(packed->scales.scalar_type(), at::kHalf);
      EXPECT_EQ(packed->g_idx.scalar_type(), at::kInt);
      auto back = UnpackGptqLinear(*packed, bits, 32, format);
      ASSERT_TRUE(back.ok()) << back.status();
      EXPECT_TRUE(at::equal(back->codes, q.codes)) << bits;
      EXPECT_TRUE(at::equal(back->zeros, q.zeros)) << bits << " bits, zero 0 included";
      EXPECT_TRUE(at::equal(back->scales, q.scales));
      EXPECT_TRUE(at::equal(back->g_idx, q.g_idx));
      EXPECT_TRUE(at::equal(back->Dequantize(), q.Dequantize()));
    }
  }
}

TEST(GptqCheckpointTest, SymmetricFourBitV1ZerosAreSevens) {
  QuantizedWeight q = RandomQuantized(4, 32, 64, 64, 1);
  q.zeros.fill_(8);  // symmetric 4-bit
  auto v1 = PackGptqLinear(q, GptqFormat::kV1);
  auto v2 = PackGptqLinear(q, GptqFormat::kV2);
  ASSERT_TRUE(v1.ok() && v2.ok());
  EXPECT_TRUE((v1->qzeros == static_cast<int32_t>(0x77777777)).all().item<bool>()) << v1->qzeros;
  EXPECT_TRUE((v2->qzeros == static_cast<int32_t>(0x88888888u)).all().item<bool>()) << v2->qzeros;
  // Reading v1 data as v2 shifts every weight by one step: the trap the label exists for.
  auto wrong = UnpackGptqLinear(*v1, 4, 64, GptqFormat::kV2);
  ASSERT_TRUE(wrong.ok());
  EXPECT_FALSE(at::allclose(wrong->Dequantize(), q.Dequantize()));
}

TEST(GptqCheckpointTest, ThreeBitCodesSpanWordBoundariesLsbFirst) {
  QuantizedWeight q = RandomQuantized(3, 32, 32, 32, 2);
  for (int64_t i = 0; i < 32; ++i) q.codes.select(1, i).fill_(i % 8);
  auto p = PackGptqLinear(q, GptqFormat::kV2);
  ASSERT_TRUE(p.ok());
  // Bit stream of codes 0,1,...,7,0,1,...: code k occupies bits [3k, 3k + 3).
  uint64_t stream[2] = {0, 0};
  for (int k = 0; k < 32; ++k) {
    const int bit = 3 * k;
    const unsigned __int128 v = static_cast<unsigned __int128>(k % 8) << bit;
    stream[0] |= static_cast<uint64_t>(v);
    stream[1] |= static_cast<uint64_t>(v >> 64);
  }
  const uint32_t word0 = static_cast<uint32_t>(stream[0]);
  const uint32_t word1 = static_cast<uint32_t>(stream[0] >> 32);
  const uint32_t word2 = static_cast<uint32_t>(stream[1]);
  EXPECT_EQ(static_cast<uint32_t>(p->qweight[0][0].item<int32_t>()), word0);
  EXPECT_EQ(static_cast<uint32_t>(p->qweight[1][0].item<int32_t>()),
            word1);  // code 10 spans words 0-1
  EXPECT_EQ(static_cast<uint32_t>(p->qweight[2][0].item<int32_t>()),
            word2);  // code 21 spans words 1-2
}

TEST(GptqCheckpointTest, UnpackableShapesAreRejected) {
  QuantizedWeight q = RandomQuantized(3, 30, 32, 32, 3);  // 30 outputs x 3 bits do not fill words
  auto p = PackGptqLinear(q, GptqFormat::kV1);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("32-bit words"), std::string::npos);
}

}  // namespace
}  // namespace squeeze
