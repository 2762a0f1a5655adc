#include "common/tensor/torch_tensor.h"

#include <unistd.h>

#include <filesystem>

#include "gtest/gtest.h"

namespace squeeze {
namespace {

TEST(TorchTensorTest, EveryScalarTypeRoundTripsBitExactThroughAFile) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("torch_tensor_test_" + std::to_string(::getpid()) + ".safetensors"))
                               .string();
  at::manual_seed(3);
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f32", at::randn({4, 7})},
      {"f64", at::randn({3}, at::kDouble)},
      {"f16", at::randn({2, 3, 4}).to(at::kHalf)},
      {"bf16", at::randn({5, 5}).to(at::kBFloat16)},
      {"i64", at::randint(-1000, 1000, {6}, at::kLong)},
      {"i32", at::randint(-1000, 1000, {6}, at::kInt)},
      {"i16", at::randint(-1000, 1000, {6}, at::kShort)},
      {"i8", at::randint(-100, 100, {6}, at::kChar)},
      {"u8", at::randint(0, 255, {6}, at::kByte)},
      {"bool", at::randint(0, 2, {6}, at::kLong).to(at::kBool)},
      {"strided", at::randn({4, 6}).t()},  // non-contiguous input is written in logical order
  };
  SafetensorsWriter writer;
  for (const auto& [name, t] : tensors) ASSERT_TRUE(AddTensor(writer, name, t).ok()) << name;
  ASSERT_TRUE(writer.WriteFile(path).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  for (const auto& [name, t] : tensors) {
    auto view = (*file)->Get(name);
    ASSERT_TRUE(view.ok());
    auto back = ToTorch(*view);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back->scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(back->sizes(), t.sizes()) << name;
    EXPECT_TRUE(at::equal(*back, t)) << name;
  }
  std::filesystem::remove(path);
}

TEST(TorchTensorTest, UnsupportedScalarTypeIsAnError) {
  SafetensorsWriter writer;
  auto status = AddTensor(writer, "c", at::zeros({2}, at::kComplexFloat));
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find("\"c\""), absl::string_view::npos);
}

}  // namespace
}  // namespace squeeze
