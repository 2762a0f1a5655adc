// Ranged tensor reads from a sharded model stored as an artifact: only the headers and the
// asked-for tensors are fetched, bytes equal the originals, and lying headers are rejected.
#include "common/store/artifact_tensor_reader.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/base/file_util.h"
#include "gtest/gtest.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

class ArtifactTensorReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tensor_reader_test_" + std::to_string(::getpid()));
    RemoveTree(dir_).IgnoreError();
    fs::create_directories(dir_ / "model");
    // 4 layers of two 64x64 f32 matrices each, in shards of at most ~40 KB.
    SafetensorsWriter all;
    for (int layer = 0; layer < 4; ++layer) {
      for (const char* part : {"q_proj", "k_proj"}) {
        std::vector<float> w(64 * 64);
        for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(layer * 10000 + i);
        const std::string name =
            "model.layers." + std::to_string(layer) + ".self_attn." + part + ".weight";
        ASSERT_TRUE(all.Add(name, DType::kF32, {64, 64}, w.data(), w.size() * 4).ok());
        originals_[name] = std::string(reinterpret_cast<const char*>(w.data()), w.size() * 4);
      }
    }
    ASSERT_TRUE(WriteCheckpoint((dir_ / "model").string(), all, 40000).ok());
    ASSERT_TRUE(fs::exists(dir_ / "model" / "model.safetensors.index.json"));
    auto store = OpenArtifactStore("file://" + (dir_ / "store").string());
    ASSERT_TRUE(store.ok());
    store_ = *std::move(store);
    uri_ = "file://" + (dir_ / "store/models/m").string();
    ASSERT_TRUE(store_->PutDirectory((dir_ / "model").string(), uri_).ok());
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }

  fs::path dir_;
  std::unique_ptr<ArtifactStore> store_;
  std::string uri_;
  std::map<std::string, std::string> originals_;
};

TEST_F(ArtifactTensorReaderTest, FetchesOnlyTheHeadersAndTheTensorsAskedFor) {
  auto reader = ArtifactTensorReader::Open(*store_, uri_);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->tensors().size(), 8u);
  const int64_t after_headers = (*reader)->bytes_read();
  EXPECT_LT(after_headers, 4096) << "opening reads headers only";

  // One layer, into a local file a worker can load.
  const std::string path = (dir_ / "layer-2.safetensors").string();
  auto written = (*reader)->WriteSubset({"model.layers.2."}, path);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(*written, 2);
  EXPECT_EQ((*reader)->bytes_read() - after_headers, 2 * 64 * 64 * 4);
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ((*file)->tensors().size(), 2u);
  for (const TensorInfo& t : (*file)->tensors()) {
    auto view = (*file)->Get(t.name);
    ASSERT_TRUE(view.ok());
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(view->data), t.nbytes), originals_[t.name])
        << t.name;
  }
  auto one = (*reader)->Read("model.layers.3.self_attn.k_proj.weight");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, originals_["model.layers.3.self_attn.k_proj.weight"]);
  EXPECT_EQ((*reader)->Read("model.layers.9.mlp").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ArtifactTensorReaderTest, ALyingHeaderNamesTheShard) {
  // A plain directory whose only shard claims a header longer than the file.
  fs::create_directories(dir_ / "bad");
  std::string bytes(16, '\0');
  bytes[0] = static_cast<char>(0xff);
  bytes[1] = static_cast<char>(0xff);
  std::ofstream(dir_ / "bad" / "model.safetensors", std::ios::binary) << bytes;
  auto reader = ArtifactTensorReader::Open(*store_, "file://" + (dir_ / "bad").string());
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(reader.status().message().find("model.safetensors: header length"),
            absl::string_view::npos)
      << reader.status();
}

}  // namespace
}  // namespace squeeze
