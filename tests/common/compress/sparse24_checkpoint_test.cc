// The sparse-24-bitmask layout against bytes worked out by hand, a round trip through a whole
// checkpoint and the project's loader, and the refusal of weights that are not 2:4.
#include "common/compress/sparse24_checkpoint.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/base/file_util.h"
#include "gtest/gtest.h"
#include "tests/common/model/tiny_llama_config.h"

namespace squeeze {
namespace {

TEST(Sparse24CheckpointTest, BitsAndValuesFollowTheLayout) {
  // Row 0 keeps columns 0, 2 | 5, 7 | 8, 9 ; row 1 keeps 1, 3 | 4, 6 | 10, 11.
  const at::Tensor w = at::tensor({1.f, 0.f, 2.f, 0.f, 0.f, 3.f, 0.f,  4.f, 5.f, 6.f, 0.f,  0.f,  //
                                   0.f, 7.f, 0.f, 8.f, 9.f, 0.f, 10.f, 0.f, 0.f, 0.f, 11.f, 12.f})
                           .view({2, 12});
  auto packed = PackSparse24("l", w, at::kFloat);
  ASSERT_TRUE(packed.ok()) << packed.status();
  ASSERT_EQ(packed->size(), 3u);
  const at::Tensor values = (*packed)[0].second, bitmask = (*packed)[1].second,
                   shape = (*packed)[2].second;
  EXPECT_EQ((*packed)[0].first, "l.compressed");
  EXPECT_TRUE(at::equal(values, at::tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f,  //
                                            7.f, 8.f, 9.f, 10.f, 11.f, 12.f})
                                    .view({2, 6})));
  // Least significant bit first: row 0 byte 0 = bits 0, 2, 5, 7 = 1 + 4 + 32 + 128; byte 1 holds
  // columns 8 and 9 = 1 + 2. Row 1: bits 1, 3, 4, 6 = 2 + 8 + 16 + 64; columns 10, 11 = 4 + 8.
  EXPECT_TRUE(at::equal(bitmask, at::tensor({165, 3, 90, 12}, at::kByte).view({2, 2})));
  EXPECT_TRUE(at::equal(shape, at::tensor({2, 12}, at::kLong).view({2, 1})));
  const std::map<std::string, at::Tensor> stored(packed->begin(), packed->end());
  auto back = UnpackSparse24(
      "l", [&](const std::string& n) -> absl::StatusOr<at::Tensor> { return stored.at(n); });
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(at::equal(*back, w));

  // Three non-zeros in a group of four is not 2:4.
  at::Tensor dense = w.clone();
  dense[0][1] = 9.f;
  auto refused = PackSparse24("model.layers.0.mlp.up_proj", dense, at::kFloat);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("model.layers.0.mlp.up_proj: not 2:4"),
            std::string::npos);
}

TEST(Sparse24CheckpointTest, ACheckpointLoadsBackAsTheSparseModel) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("sparse24_test_" + std::to_string(::getpid()));
  RemoveTree(dir.string()).IgnoreError();
  LlamaModel model = LlamaModel::RandomInit(TinyLlamaConfig(2, 32), 4);
  for (int64_t i = 0; i < model.num_layers(); ++i) {
    for (auto& [name, linear] : model.layer(i).Linears()) {
      at::Tensor& w = linear->weight;
      const at::Tensor groups = w.view({w.size(0), -1, 4});
      const at::Tensor top = std::get<1>(groups.abs().topk(2, -1));
      w = (groups * at::zeros_like(groups, at::kBool).scatter_(-1, top, true)).view(w.sizes());
    }
  }
  ASSERT_TRUE(WriteSparse24Checkpoint(dir.string(), model, at::kHalf, 0.5).ok());
  std::ifstream config(dir / "config.json");
  const auto qc = nlohmann::json::parse(config)["quantization_config"];
  EXPECT_EQ(qc["quant_method"], "compressed-tensors");
  EXPECT_EQ(qc["sparsity_config"]["format"], "sparse-24-bitmask");
  EXPECT_EQ(qc["sparsity_config"]["sparsity_structure"], "2:4");
  auto loaded = LoadModel(dir.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const at::Tensor ids = at::randint(0, 200, {1, 16});
  EXPECT_TRUE(at::allclose(loaded->Forward(ids), model.Forward(ids), 1e-2, 1e-2));
  EXPECT_TRUE(
      at::equal(loaded->layer(1).down_proj.weight == 0, model.layer(1).down_proj.weight == 0));
  // A dense model is refused rather than written with its weights dropped.
  LlamaModel dense = LlamaModel::RandomInit(TinyLlamaConfig(1, 32), 5);
  EXPECT_FALSE(WriteSparse24Checkpoint((dir / "dense").string(), dense, at::kHalf, 0.5).ok());
  RemoveTree(dir.string()).IgnoreError();
}

}  // namespace
}  // namespace squeeze
