#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/base/file_util.h"
#include "common/store/artifact_store.h"
#include "gtest/gtest.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

TEST(FileArtifactStoreTest, PutDirectoryCommitsWholeArtifacts) {
  const fs::path root = fs::temp_directory_path() / ("store_test_" + std::to_string(::getpid()));
  RemoveTree(root).IgnoreError();
  fs::create_directories(root / "src");
  std::ofstream(root / "src" / "a.txt") << "alpha";
  std::ofstream(root / "src" / "b.bin") << std::string(1000, 'b');
  auto store = OpenArtifactStore("file://" + root.string());
  ASSERT_TRUE(store.ok());
  const std::string uri = "file://" + (root / "store/jobs/j/0-x").string();
  EXPECT_FALSE(*(*store)->Exists(uri));
  ASSERT_TRUE((*store)->PutDirectory((root / "src").string(), uri).ok());
  EXPECT_TRUE(*(*store)->Exists(uri));
  auto dir = (*store)->LocalDirectory(uri, "");
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(fs::file_size(fs::path(*dir) / "b.bin"), 1000u);
  EXPECT_TRUE(fs::exists(fs::path(*dir) / ".squeeze-manifest.json"));
  // No staging directory is left beside it.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(root / "store/jobs/j")) entries += e.is_directory();
  EXPECT_EQ(entries, 1);
  // Replacing works and removes files of the old version.
  fs::remove(root / "src" / "a.txt");
  ASSERT_TRUE((*store)->PutDirectory((root / "src").string(), uri).ok());
  EXPECT_FALSE(fs::exists(fs::path(*dir) / "a.txt"));

  ASSERT_TRUE((*store)->PutFile(uri + "/../report.json", "{}").ok());
  EXPECT_EQ(*(*store)->ReadFile(uri + "/../report.json"), "{}");
  EXPECT_EQ((*store)->ReadFile(uri + "/missing").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE((*store)->Delete(uri).ok());
  EXPECT_FALSE(*(*store)->Exists(uri));
  EXPECT_EQ(OpenArtifactStore("gs://bucket").status().code(), absl::StatusCode::kInvalidArgument);
  RemoveTree(root).IgnoreError();
}

}  // namespace
}  // namespace squeeze
