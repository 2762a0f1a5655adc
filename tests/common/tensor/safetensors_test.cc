#include "common/tensor/safetensors.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "common/base/file_util.h"
#include "gtest/gtest.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("safetensors_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    RemoveTree(dir_).IgnoreError();
    fs::create_directories(dir_);
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes `header` (as given) and `data` bytes in the safetensors layout.
  std::string WriteRaw(const std::string& name, const std::string& header, const std::string& data,
                       int64_t claimed_len = -1) {
    std::ofstream out(Path(name), std::ios::binary);
    uint64_t len = claimed_len >= 0 ? claimed_len : header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((len >> (8 * i)) & 0xff));
    out << header << data;
    return Path(name);
  }

  // The error message of opening `path`, which must fail.
  std::string OpenError(const std::string& path) {
    auto file = SafetensorsFile::Open(path);
    EXPECT_FALSE(file.ok()) << path << " opened but should not have";
    return file.ok() ? "" : std::string(file.status().message());
  }

  fs::path dir_;
};

TEST_F(SafetensorsTest, RoundTripIsBitExactForEveryDtype) {
  std::mt19937 rng(7);
  SafetensorsWriter writer;
  writer.SetMetadata("format", "pt");
  writer.SetMetadata("source", "unit test");
  std::map<std::string, std::string> expected;
  for (DType d : {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64, DType::kI32,
                  DType::kI16, DType::kI8, DType::kU8, DType::kBool}) {
    const std::string name = "t." + std::string(DTypeName(d));
    std::vector<int64_t> shape = {3, 5};
    std::string bytes(15 * DTypeSize(d), '\0');
    for (char& c : bytes) c = static_cast<char>(rng() & (d == DType::kBool ? 1 : 0xff));
    ASSERT_TRUE(writer.Add(name, d, shape, bytes.data(), bytes.size()).ok());
    expected[name] = bytes;
  }
  ASSERT_TRUE(writer.Add("scalar", DType::kF32, {}, "\0\0\x80\x3f", 4).ok());
  ASSERT_TRUE(writer.Add("empty", DType::kF32, {0, 4}, nullptr, 0).ok());
  ASSERT_TRUE(writer.WriteFile(Path("a.safetensors")).ok());

  auto file = SafetensorsFile::Open(Path("a.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("source"), "unit test");
  EXPECT_EQ((*file)->tensors().size(), expected.size() + 2);
  for (const auto& [name, bytes] : expected) {
    auto view = (*file)->Get(name);
    ASSERT_TRUE(view.ok()) << name;
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(view->data), view->info->nbytes), bytes);
    EXPECT_EQ(view->info->shape, (std::vector<int64_t>{3, 5}));
  }
  auto scalar = (*file)->Get("scalar");
  ASSERT_TRUE(scalar.ok());
  EXPECT_TRUE(scalar->info->shape.empty());
  EXPECT_EQ(scalar->info->numel(), 1);
  EXPECT_EQ((*file)->Get("empty")->info->nbytes, 0u);
  auto missing = (*file)->Get("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope"), absl::string_view::npos);
}

TEST_F(SafetensorsTest, HeaderIsLittleEndianLengthJsonAndAlignedPadding) {
  SafetensorsWriter writer;
  float values[3] = {1, 2, 3};
  ASSERT_TRUE(writer.Add("x", DType::kF32, {3}, values, sizeof(values)).ok());
  const std::string header = writer.SerializeHeader();
  ASSERT_GE(header.size(), 8u);
  uint64_t len = 0;
  for (int i = 7; i >= 0; --i) len = (len << 8) | static_cast<uint8_t>(header[i]);
  EXPECT_EQ(len + 8, header.size());
  EXPECT_EQ(header.size() % 8, 0u);  // the data region starts 8-byte aligned
  auto json = nlohmann::json::parse(header.substr(8));
  EXPECT_EQ(json["x"]["dtype"], "F32");
  EXPECT_EQ(json["x"]["data_offsets"], nlohmann::json({0, 12}));
}

TEST_F(SafetensorsTest, WriterRejectsSizeMismatchAndDuplicates) {
  SafetensorsWriter writer;
  float v[2] = {0, 0};
  auto status = writer.Add("x", DType::kF32, {3}, v, sizeof(v));
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("\"x\""), absl::string_view::npos);
  ASSERT_TRUE(writer.Add("y", DType::kF32, {2}, v, sizeof(v)).ok());
  EXPECT_FALSE(writer.Add("y", DType::kF32, {2}, v, sizeof(v)).ok());
}

TEST_F(SafetensorsTest, TooShortFileIsRejected) {
  std::ofstream(Path("short.safetensors")) << "abc";
  EXPECT_NE(OpenError(Path("short.safetensors")).find("short.safetensors"), std::string::npos);
}

TEST_F(SafetensorsTest, DataMustBeCoveredExactly) {
  const std::string one = R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
  EXPECT_NE(OpenError(WriteRaw("extra.safetensors", one, std::string(5, '\0')))
                .find("the tensors cover 4 bytes of a 5-byte data region"),
            std::string::npos);
  const std::string gap =
      R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
          "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})";
  EXPECT_NE(OpenError(WriteRaw("gap.safetensors", gap, std::string(12, '\0')))
                .find("the format requires the data to be covered exactly"),
            std::string::npos);
}

TEST_F(SafetensorsTest, FifoIsRefusedWithoutBlocking) {
  ASSERT_EQ(::mkfifo(Path("pipe.safetensors").c_str(), 0600), 0);
  EXPECT_NE(OpenError(Path("pipe.safetensors")).find("found a FIFO"), std::string::npos);
}

TEST_F(SafetensorsTest, HeaderLengthBeyondFileIsRejected) {
  const std::string path = WriteRaw("liar.safetensors", "{}", "", /*claimed_len=*/1 << 20);
  const std::string error = OpenError(path);
  EXPECT_NE(error.find("liar.safetensors"), std::string::npos);
  EXPECT_NE(error.find("header length"), std::string::npos);
}

TEST_F(SafetensorsTest, InvalidJsonIsRejected) {
  const std::string error = OpenError(WriteRaw("bad.safetensors", "{\"x\": [", ""));
  EXPECT_NE(error.find("not valid JSON"), std::string::npos);
}

TEST_F(SafetensorsTest, OffsetsPastTheDataAreRejectedNamingTheTensor) {
  const std::string header = R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})";
  const std::string error = OpenError(WriteRaw("lie.safetensors", header, std::string(8, '\0')));
  EXPECT_NE(error.find("lie.safetensors"), std::string::npos);
  EXPECT_NE(error.find("\"w\""), std::string::npos);
  EXPECT_NE(error.find("past the end"), std::string::npos);
}

TEST_F(SafetensorsTest, TruncatedFileIsRejected) {
  SafetensorsWriter writer;
  std::vector<float> v(1000, 1.0f);
  ASSERT_TRUE(writer.Add("big", DType::kF32, {1000}, v.data(), 4000).ok());
  ASSERT_TRUE(writer.WriteFile(Path("t.safetensors")).ok());
  fs::resize_file(Path("t.safetensors"), fs::file_size(Path("t.safetensors")) - 100);
  const std::string error = OpenError(Path("t.safetensors"));
  EXPECT_NE(error.find("\"big\""), std::string::npos);
}

TEST_F(SafetensorsTest, DtypeShapeMismatchIsRejected) {
  const std::string header =
      R"({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 24]}})";
  const std::string error = OpenError(WriteRaw("m.safetensors", header, std::string(24, '\0')));
  EXPECT_NE(error.find("\"w\""), std::string::npos);
  EXPECT_NE(error.find("need 12"), std::string::npos);
}

TEST_F(SafetensorsTest, OverlappingTensorsAreRejected) {
  const std::string header =
      R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})";
  const std::string error = OpenError(WriteRaw("o.safetensors", header, std::string(12, '\0')));
  EXPECT_NE(error.find("overlap"), std::string::npos);
}

TEST_F(SafetensorsTest, MalformedEntriesAreRejectedWithTheField) {
  struct Case {
    std::string header, expect;
  };
  const Case cases[] = {
      {R"({"w": {"dtype": "Q4", "shape": [1], "data_offsets": [0, 1]}})", "Q4"},
      {R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", "dtype"},
      {R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", "shape"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", "data_offsets"},
      {R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", "data_offsets"},
      {R"({"w": {"dtype": "F32", "shape": [1099511627776, 1099511627776], "data_offsets": [0, 4]}})",
       "too large"},
      {R"({"__metadata__": {"k": 1}})", "__metadata__"},
      {R"([1, 2])", "not a JSON object"},
  };
  int i = 0;
  for (const Case& c : cases) {
    const std::string error = OpenError(
        WriteRaw("case" + std::to_string(i++) + ".safetensors", c.header, std::string(8, '\0')));
    EXPECT_NE(error.find(c.expect), std::string::npos) << c.header << " -> " << error;
  }
}

TEST_F(SafetensorsTest, ShardedCheckpointRoundTrip) {
  SafetensorsWriter writer;
  writer.SetMetadata("format", "pt");
  std::vector<float> v(256);
  for (int i = 0; i < 5; ++i) {
    for (size_t j = 0; j < v.size(); ++j) v[j] = i * 1000.0f + j;
    ASSERT_TRUE(
        writer.Add("layer." + std::to_string(i), DType::kF32, {16, 16}, v.data(), 1024).ok());
  }
  ASSERT_TRUE(WriteCheckpoint(Path("model"), writer, /*max_shard_bytes=*/2048).ok());
  EXPECT_TRUE(fs::exists(Path("model/model.safetensors.index.json")));
  EXPECT_TRUE(fs::exists(Path("model/model-00003-of-00003.safetensors")));
  EXPECT_FALSE(fs::exists(Path("model/model.safetensors")));

  auto reader = CheckpointReader::Open(Path("model"));
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->names().size(), 5u);
  EXPECT_EQ((*reader)->files().size(), 3u);
  auto t = (*reader)->Get("layer.4");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(reinterpret_cast<const float*>(t->data)[7], 4007.0f);
  EXPECT_NE((*reader)->FileOf("layer.4").find("model-00003-of-00003"), std::string::npos);

  // Unsharded the same tensors read back identically.
  ASSERT_TRUE(WriteCheckpoint(Path("single"), writer).ok());
  auto single = CheckpointReader::Open(Path("single"));
  ASSERT_TRUE(single.ok());
  for (const std::string& name : (*reader)->names()) {
    EXPECT_EQ(std::memcmp((*single)->Get(name)->data, (*reader)->Get(name)->data, 1024), 0);
  }
}

TEST_F(SafetensorsTest, MissingShardIsAnErrorNamingShardAndTensor) {
  SafetensorsWriter writer;
  float v[4] = {};
  ASSERT_TRUE(writer.Add("a", DType::kF32, {4}, v, 16).ok());
  ASSERT_TRUE(writer.Add("b", DType::kF32, {4}, v, 16).ok());
  ASSERT_TRUE(WriteCheckpoint(Path("m"), writer, 16).ok());
  fs::remove(Path("m/model-00002-of-00002.safetensors"));
  auto reader = CheckpointReader::Open(Path("m"));
  ASSERT_FALSE(reader.ok());
  const std::string error(reader.status().message());
  EXPECT_NE(error.find("model-00002-of-00002.safetensors"), std::string::npos) << error;
  EXPECT_NE(error.find("\"b\""), std::string::npos) << error;
}

TEST_F(SafetensorsTest, IndexNamingAbsentTensorOrEscapingPathIsRejected) {
  SafetensorsWriter writer;
  float v[4] = {};
  ASSERT_TRUE(writer.Add("a", DType::kF32, {4}, v, 16).ok());
  ASSERT_TRUE(writer.WriteFile(Path("shard.safetensors")).ok());
  std::ofstream(Path("model.safetensors.index.json"))
      << R"({"weight_map": {"a": "shard.safetensors", "ghost": "shard.safetensors"}})";
  auto reader = CheckpointReader::Open(dir_.string());
  ASSERT_FALSE(reader.ok());
  EXPECT_NE(reader.status().message().find("ghost"), absl::string_view::npos);

  std::ofstream(Path("model.safetensors.index.json"), std::ios::trunc)
      << R"({"weight_map": {"a": "../etc/passwd"}})";
  reader = CheckpointReader::Open(dir_.string());
  ASSERT_FALSE(reader.ok());
  EXPECT_NE(reader.status().message().find("not a plain file name"), absl::string_view::npos);
}

TEST_F(SafetensorsTest, DirectoryWithoutWeightsIsNotFound) {
  auto reader = CheckpointReader::Open(dir_.string());
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, RandomCorruptionNeverCrashes) {
  // Flip bytes of a valid file's header region at random: every open must either succeed with
  // in-bounds tensors or fail cleanly.
  SafetensorsWriter writer;
  std::vector<float> v(64, 0.5f);
  ASSERT_TRUE(writer.Add("a", DType::kF32, {8, 8}, v.data(), 256).ok());
  ASSERT_TRUE(writer.Add("b", DType::kF16, {4, 8}, v.data(), 64).ok());
  ASSERT_TRUE(writer.WriteFile(Path("ok.safetensors")).ok());
  std::ifstream in(Path("ok.safetensors"), std::ios::binary);
  const std::string original((std::istreambuf_iterator<char>(in)), {});
  std::mt19937 rng(1);
  for (int trial = 0; trial < 300; ++trial) {
    std::string bytes = original;
    const size_t header_end = 8 + writer.SerializeHeader().size() - 8;
    for (int k = 0; k < 3; ++k) bytes[rng() % header_end] = static_cast<char>(rng());
    if (trial % 3 == 0) bytes.resize(rng() % bytes.size());
    std::ofstream(Path("fuzz.safetensors"), std::ios::binary | std::ios::trunc) << bytes;
    auto file = SafetensorsFile::Open(Path("fuzz.safetensors"));
    if (!file.ok()) continue;
    for (const TensorInfo& t : (*file)->tensors()) {
      auto view = (*file)->Get(t.name);
      ASSERT_TRUE(view.ok());
      // Touch the last byte: ASan or a segfault would catch an out-of-bounds view.
      if (t.nbytes > 0) (void)*(volatile const uint8_t*)(view->data + t.nbytes - 1);
    }
  }
}

}  // namespace
}  // namespace squeeze
