// AutoAWQ's gemm layout, checked against the layout written out by hand: nibble i of packed
// column p holds output 8p + {0, 2, 4, 6, 1, 3, 5, 7}[i].
#include "common/compress/awq_format.h"

#include <gtest/gtest.h>

namespace squeeze {
namespace {

// The gemm layout written out: nibble i of packed column p holds output 8p + order[i].
TEST(AwqFormatTest, PacksInAutoAwqInterleavedOrderAndUnpacksExactly) {
  at::manual_seed(9);
  const at::Tensor w = at::randn({16, 64});
  QuantSpec spec;
  spec.bits = 4;
  spec.group_size = 32;
  auto q = QuantizeRtn(w, spec);
  ASSERT_TRUE(q.ok());
  auto p = PackAwqGemm(*q);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->qweight.sizes(), (std::vector<int64_t>{64, 2}));
  ASSERT_EQ(p->qzeros.sizes(), (std::vector<int64_t>{2, 2}));
  ASSERT_EQ(p->scales.sizes(), (std::vector<int64_t>{2, 16}));
  EXPECT_EQ(p->scales.scalar_type(), at::kHalf);
  const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  for (int64_t in = 0; in < 64; in += 13) {
    for (int64_t col = 0; col < 2; ++col) {
      const uint32_t word = static_cast<uint32_t>(p->qweight[in][col].item<int32_t>());
      for (int i = 0; i < 8; ++i) {
        EXPECT_EQ((word >> (4 * i)) & 0xF, q->codes[8 * col + order[i]][in].item<uint8_t>())
            << in << " " << col << " " << i;
      }
    }
  }
  const uint32_t zword = static_cast<uint32_t>(p->qzeros[1][0].item<int32_t>());
  EXPECT_EQ((zword >> 4) & 0xF, static_cast<uint32_t>(q->zeros[2][1].item<float>()));
  auto back = UnpackAwqGemm(*p, 32);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(at::equal(back->codes, q->codes));
  EXPECT_TRUE(at::equal(back->zeros, q->zeros));
  EXPECT_TRUE(at::allclose(back->Dequantize(), q->Dequantize()));
}

TEST(AwqFormatTest, RefusesWhatTheLayoutCannotHold) {
  QuantSpec spec;
  spec.bits = 3;
  spec.group_size = 32;
  auto q3 = QuantizeRtn(at::randn({16, 64}), spec);
  EXPECT_NE(PackAwqGemm(*q3).status().message().find("bits must be 4"), std::string::npos);
  spec.bits = 4;
  auto odd = QuantizeRtn(at::randn({12, 64}), spec);
  EXPECT_NE(PackAwqGemm(*odd).status().message().find("multiple of 8"), std::string::npos);
  auto q = QuantizeRtn(at::randn({16, 64}), spec);
  auto p = PackAwqGemm(*q);
  EXPECT_FALSE(UnpackAwqGemm(*p, 48).ok());
  // A g_idx in input order is the layout's own; a permuted one (act_order) is refused.
  q->g_idx = at::div(at::arange(64, at::kLong), 32, "floor").to(at::kInt);
  EXPECT_TRUE(PackAwqGemm(*q).ok());
  q->g_idx = q->g_idx.flip(0).contiguous();
  EXPECT_NE(PackAwqGemm(*q).status().message().find("act_order"), std::string::npos);
}

}  // namespace
}  // namespace squeeze
