// Data files through the store: uploaded once under their digest, placed verified where a task
// runs, local files read in place, and bad references refused naming the recipe field.
#include "common/store/data_files.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/base/file_util.h"
#include "gtest/gtest.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

class DataFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("data_files_test_" + std::to_string(::getpid()));
    RemoveTree(dir_).IgnoreError();
    fs::create_directories(dir_ / "client");
    std::ofstream(dir_ / "client" / "calib.jsonl") << "{\"text\": \"hello\"}\n";
    root_ = "file://" + (dir_ / "store").string();
    auto store = OpenArtifactStore(root_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }
  fs::path dir_;
  std::string root_;
  std::unique_ptr<ArtifactStore> store_;
};

TEST_F(DataFilesTest, UploadedOnceAndPlacedVerified) {
  const std::string local = (dir_ / "client" / "calib.jsonl").string();
  auto uri = UploadDataFile(*store_, root_, local, "data.calibration");
  ASSERT_TRUE(uri.ok()) << uri.status();
  EXPECT_EQ(uri->rfind(root_ + "/data/sha256-", 0), 0u) << *uri;
  EXPECT_EQ(fs::path(*uri).filename(), "calib.jsonl");
  auto again = UploadDataFile(*store_, root_, local, "data.calibration");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *uri) << "the same content is the same artifact";
  EXPECT_TRUE(CheckDataFile(*store_, *uri, "data.calibration").ok());

  // The client's copy goes away; the task's copy comes from the store, verified.
  fs::remove(local);
  auto placed = PlaceDataFile(*store_, *uri, (dir_ / "scratch").string(), "data.calibration");
  ASSERT_TRUE(placed.ok()) << placed.status();
  std::ifstream in(*placed);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), {}), "{\"text\": \"hello\"}\n");

  // A corrupted blob is never handed to a task.
  for (const auto& e : fs::recursive_directory_iterator(dir_ / "store/blobs")) {
    if (!e.is_regular_file() || e.path().parent_path().filename() == "tmp") continue;
    ::chmod(e.path().c_str(), 0644);
    std::ofstream(e.path(), std::ios::trunc) << "{\"text\": \"HELLO\"}\n";
  }
  auto corrupt = PlaceDataFile(*store_, *uri, (dir_ / "scratch2").string(), "data.calibration");
  EXPECT_EQ(corrupt.status().code(), absl::StatusCode::kDataLoss) << corrupt.status();
  EXPECT_NE(corrupt.status().message().find("data.calibration: "), std::string::npos);
}

TEST_F(DataFilesTest, LocalFilesAreReadInPlaceAndBadReferencesNameTheField) {
  const std::string local = (dir_ / "client" / "calib.jsonl").string();
  auto placed = PlaceDataFile(*store_, local, (dir_ / "scratch").string(), "data.train");
  ASSERT_TRUE(placed.ok());
  EXPECT_EQ(*placed, local);
  EXPECT_TRUE(CheckDataFile(*store_, "file://" + local, "data.train").ok());

  auto missing = CheckDataFile(*store_, (dir_ / "client" / "nope.jsonl").string(), "data.train");
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound) << missing;
  EXPECT_EQ(missing.message().rfind("data.train: ", 0), 0u) << missing;
  auto scheme = CheckDataFile(*store_, "http://example/x.jsonl", "data.evaluation[0]");
  EXPECT_EQ(scheme.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(
      scheme.message().find("data.evaluation[0]: \"http://example/x.jsonl\": expected a local "
                            "path, a file:// URI or an s3:// URI"),
      std::string::npos)
      << scheme;
  auto uploaded = UploadDataFile(*store_, root_, local, "data.train");
  ASSERT_TRUE(uploaded.ok());
  const std::string wrong_name = uploaded->substr(0, uploaded->rfind('/')) + "/other.jsonl";
  auto absent = CheckDataFile(*store_, wrong_name, "data.train");
  EXPECT_EQ(absent.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(absent.message().find("has no file \"other.jsonl\""), std::string::npos) << absent;
  EXPECT_EQ(UploadDataFile(*store_, root_, (dir_ / "nope").string(), "data.train").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace squeeze
