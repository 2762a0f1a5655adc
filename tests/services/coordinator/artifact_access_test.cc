#include "services/coordinator/artifact_access.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/base/file_util.h"
#include "gtest/gtest.h"
#include "tests/common/store/random_file.h"

namespace squeeze::coordinator {
namespace {

namespace fs = std::filesystem;

class ArtifactAccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("artifact_access_test_" + std::to_string(::getpid()));
    RemoveTree(dir_).IgnoreError();
    fs::create_directories(dir_ / "model");
    // Over one 16 MiB digest chunk, so the stream crosses a chunk boundary.
    squeeze::testing::WriteRandomFile(dir_ / "model" / "model.safetensors", (17 << 20) + 123);
    std::ofstream(dir_ / "model" / "config.json") << R"({"hidden_size": 8})";
    store_ = *OpenArtifactStore("file://" + (dir_ / "store").string());
    uri_ = "file://" + (dir_ / "store" / "jobs" / "j" / "0-model").string();
    ASSERT_TRUE(store_->PutDirectory((dir_ / "model").string(), uri_).ok());
    artifact_.set_uri(uri_);
    artifact_.set_name("model");
    artifact_.set_kind("quantize");
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }

  // The stream's files reassembled: name -> bytes.
  absl::Status Collect(const std::string& file, std::map<std::string, std::string>& out,
                       int* pieces = nullptr) {
    std::string current;
    return StreamArtifact(*store_, artifact_, file, [&](const v1::DownloadArtifactResponse& r) {
      if (r.has_file()) {
        current = r.file().name();
        out[current];
      } else {
        EXPECT_LE(static_cast<int64_t>(r.data().size()), kDownloadPieceBytes);
        out[current] += r.data();
        if (pieces) ++*pieces;
      }
      return true;
    });
  }

  fs::path dir_;
  std::unique_ptr<ArtifactStore> store_;
  std::string uri_;
  v1::Artifact artifact_;
};

TEST_F(ArtifactAccessTest, DescribesFilesWithSizesAndDigests) {
  ASSERT_TRUE(DescribeArtifact(*store_, artifact_).ok());
  ASSERT_EQ(artifact_.files_size(), 2);
  EXPECT_EQ(artifact_.size_bytes(), (17 << 20) + 123 + 18);
  for (const v1::ArtifactFile& f : artifact_.files()) {
    EXPECT_EQ(f.size_bytes(), static_cast<int64_t>(fs::file_size(dir_ / "model" / f.name())));
    EXPECT_EQ(f.digest().rfind("sha256", 0), 0u) << f.digest();
  }
}

TEST_F(ArtifactAccessTest, StreamsEveryByteOfEveryFile) {
  std::map<std::string, std::string> got;
  int pieces = 0;
  ASSERT_TRUE(Collect("", got, &pieces).ok());
  ASSERT_EQ(got.size(), 2u);
  for (const auto& [name, bytes] : got) {
    auto expected = ReadFileToString((dir_ / "model" / name).string(), int64_t{1} << 30);
    ASSERT_TRUE(expected.ok());
    EXPECT_TRUE(bytes == *expected) << name << ": " << bytes.size() << " bytes";
  }
  EXPECT_EQ(pieces, 18 + 1) << "17 MiB + 123 bytes in 1 MiB pieces, and the config";
  got.clear();
  ASSERT_TRUE(Collect("config.json", got).ok());
  EXPECT_EQ(got.size(), 1u);
  EXPECT_EQ(got["config.json"], R"({"hidden_size": 8})");
}

TEST_F(ArtifactAccessTest, UnknownFileIsNotFoundNamingTheFilesThereAre) {
  std::map<std::string, std::string> got;
  const absl::Status s = Collect("weights.bin", got);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("config.json"), std::string::npos) << s;
  EXPECT_NE(s.message().find("weights.bin"), std::string::npos) << s;
}

TEST_F(ArtifactAccessTest, CorruptedBlobEndsTheStreamWithDataLoss) {
  // Flip a byte in the second 16 MiB chunk of the large file's blob.
  fs::path victim;
  for (const auto& e : fs::recursive_directory_iterator(dir_ / "store"))
    if (e.is_regular_file() && e.file_size() > (16 << 20)) victim = e.path();
  ASSERT_FALSE(victim.empty());
  ::chmod(victim.c_str(), 0644);
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp((16 << 20) + 7);
    f.put('X');
  }
  std::map<std::string, std::string> got;
  const absl::Status s = Collect("model.safetensors", got);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_LE(got["model.safetensors"].size(), size_t{16} << 20)
      << "no byte of the bad chunk was sent";
}

TEST_F(ArtifactAccessTest, ReportIsOneFileNamedAfterItsObject) {
  v1::Artifact report;
  report.set_kind("report");
  report.set_uri("file://" + (dir_ / "store" / "jobs" / "j" / "report.json").string());
  ASSERT_TRUE(store_->PutFile(report.uri(), R"({"stages": []})").ok());
  ASSERT_TRUE(DescribeArtifact(*store_, report).ok());
  ASSERT_EQ(report.files_size(), 1);
  EXPECT_EQ(report.files(0).name(), "report.json");
  EXPECT_EQ(report.size_bytes(), 14);
  std::string body;
  ASSERT_TRUE(StreamArtifact(*store_, report, "", [&](const v1::DownloadArtifactResponse& r) {
                if (!r.has_file()) body += r.data();
                return true;
              }).ok());
  EXPECT_EQ(body, R"({"stages": []})");
}

TEST_F(ArtifactAccessTest, ClientGoneEndsTheStreamAsCancelled) {
  const absl::Status s = StreamArtifact(*store_, artifact_, "",
                                        [](const v1::DownloadArtifactResponse&) { return false; });
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace squeeze::coordinator
