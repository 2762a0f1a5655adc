// What the store must never do, on every backend (file://, moto_server, s3rver): lose an
// artifact to garbage collection, delete anything when it cannot see everything, keep checkpoint
// bytes that nothing will read, or spend space (or retries) on a full disk.
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "common/base/file_util.h"
#include "common/recipe/recipe.h"
#include "common/store/artifact_store.h"
#include "common/store/blob_digest.h"
#include "common/store/object_backend.h"
#include "gtest/gtest.h"
#include "tests/common/store/moto_server.h"
#include "tests/common/store/s3rver_server.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

enum class Backend { kFile, kMoto, kS3rver };

std::string Name(const ::testing::TestParamInfo<Backend>& info) {
  switch (info.param) {
    case Backend::kFile:
      return "File";
    case Backend::kMoto:
      return "MotoServer";
    case Backend::kS3rver:
      return "S3rver";
  }
  return "";
}

void WriteFile(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

class StoreSafetyTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("store_safety_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    RemoveTree(dir_).IgnoreError();
    fs::create_directories(dir_);
    S3Options s3;
    switch (GetParam()) {
      case Backend::kFile:
        root_ = "file://" + (dir_ / "root").string();
        elsewhere_ = "file://" + (dir_ / "elsewhere").string();
        break;
      case Backend::kMoto:
        moto_ = std::make_unique<testing::MotoServer>();
        ASSERT_TRUE(moto_->Ready("store")) << "moto_server did not start";
        s3 = moto_->Options();
        break;
      case Backend::kS3rver:
        ASSERT_TRUE(testing::S3rverServer::Installed())
            << testing::S3rverServer::Binary() << " is missing: run scripts/install-test-peers.sh";
        s3rver_ = std::make_unique<testing::S3rverServer>();
        ASSERT_TRUE(s3rver_->Ready("store")) << "s3rver did not start";
        s3 = s3rver_->Options();
        break;
    }
    if (GetParam() != Backend::kFile) {
      ::setenv("SQUEEZE_S3_ENDPOINT", s3.endpoint.c_str(), 1);
      ::setenv("AWS_ACCESS_KEY_ID", s3.credentials.access_key_id.c_str(), 1);
      ::setenv("AWS_SECRET_ACCESS_KEY", s3.credentials.secret_access_key.c_str(), 1);
      root_ = "s3://store/root";
      elsewhere_ = "s3://store/elsewhere";
      auto backend = NewS3ObjectBackend();
      ASSERT_TRUE(backend.ok()) << backend.status();
      objects_ = *std::move(backend);
    } else {
      objects_ = NewFileObjectBackend(/*sync=*/false);
    }
    auto store = OpenArtifactStore(root_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }

  // A local directory of files with the given contents.
  std::string LocalDir(const std::string& name, const std::map<std::string, std::string>& files) {
    const fs::path d = dir_ / "local" / name;
    for (const auto& [file, bytes] : files) WriteFile(d / file, bytes);
    return d.string();
  }
  size_t Count(const std::string& prefix) {
    auto listed = objects_->List(prefix);
    EXPECT_TRUE(listed.ok()) << listed.status();
    return listed.ok() ? listed->size() : 0;
  }

  fs::path dir_;
  std::string root_, elsewhere_;
  std::unique_ptr<testing::MotoServer> moto_;
  std::unique_ptr<testing::S3rverServer> s3rver_;
  std::unique_ptr<ObjectBackend> objects_;
  std::unique_ptr<ArtifactStore> store_;
};

// `squeezectl store-put DIR URI --store ROOT` with URI outside ROOT, then `store-gc`: the model
// used to lose its blobs, which lived under ROOT where no manifest named them. Now a reference
// under ROOT names them until the artifact is deleted through the store.
TEST_P(StoreSafetyTest, ArtifactOutsideTheRootSurvivesGarbageCollection) {
  const std::string model = elsewhere_ + "/models/m";
  ASSERT_TRUE(store_->PutDirectory(LocalDir("m", {{"a.bin", std::string(5000, 'a')}}), model).ok());
  ASSERT_EQ(Count(root_ + "/blobs/"), 1u) << "deduplicated in the root's pool";
  auto gc = store_->CollectGarbage(/*grace_seconds=*/0);
  ASSERT_TRUE(gc.ok()) << gc.status();
  EXPECT_EQ(gc->blobs_deleted, 0);
  auto back = store_->LocalDirectory(model, (dir_ / "back").string());
  ASSERT_TRUE(back.ok()) << back.status();
  std::ifstream in(fs::path(*back) / "a.bin");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), {}), std::string(5000, 'a'));
  // Deleted through the store, its reference goes with it and its blob becomes garbage.
  ASSERT_TRUE(store_->Delete(model).ok());
  EXPECT_EQ(Count(root_ + "/refs/"), 0u);
  gc = store_->CollectGarbage(0);
  ASSERT_TRUE(gc.ok()) << gc.status();
  EXPECT_EQ(gc->blobs_deleted, 1);
}

TEST_P(StoreSafetyTest, UnreadableManifestStopsCollectionBeforeAnyDeletion) {
  ASSERT_TRUE(store_->PutDirectory(LocalDir("a", {{"a.bin", "aaaa"}}), root_ + "/jobs/1/a").ok());
  ASSERT_TRUE(store_->PutDirectory(LocalDir("b", {{"b.bin", "bbbb"}}), root_ + "/jobs/2/b").ok());
  ASSERT_TRUE(store_->Delete(root_ + "/jobs/2/b").ok());  // b's blob is now garbage
  ASSERT_TRUE(store_->PutFile(root_ + "/jobs/3/c/manifest.json", "{\"files\": [trunc").ok());
  const size_t blobs = Count(root_ + "/blobs/");
  ASSERT_EQ(blobs, 2u);
  auto gc = store_->CollectGarbage(0);
  ASSERT_FALSE(gc.ok());
  EXPECT_EQ(gc.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(gc.status().message().find("jobs/3/c/manifest.json"), absl::string_view::npos)
      << gc.status();
  EXPECT_NE(gc.status().message().find("before deleting anything"), absl::string_view::npos);
  EXPECT_EQ(Count(root_ + "/blobs/"), blobs) << "nothing was deleted";
  ASSERT_TRUE(store_->Delete(root_ + "/jobs/3/c").ok());
  gc = store_->CollectGarbage(0);
  ASSERT_TRUE(gc.ok()) << gc.status();
  EXPECT_EQ(gc->blobs_deleted, 1);
  EXPECT_TRUE(store_->LocalDirectory(root_ + "/jobs/1/a", (dir_ / "a").string()).ok());
  if (GetParam() == Backend::kS3rver) {
    // s3rver cannot list multipart uploads (501): collection still runs and says so.
    EXPECT_NE(gc->uploads_not_listed.find("501"), std::string::npos) << gc->uploads_not_listed;
  } else {
    EXPECT_TRUE(gc->uploads_not_listed.empty()) << gc->uploads_not_listed;
  }
}

// Checkpoints keep private blobs: a superseding checkpoint frees the old one's bytes, and
// deleting the checkpoint frees all of them, with no garbage collection.
TEST_P(StoreSafetyTest, CheckpointBlobsAreFreedWhenSupersededAndWhenDeleted) {
  const std::string ckpt = root_ + "/jobs/7/0-distill.checkpoint";
  ASSERT_TRUE(store_
                  ->PutDirectory(LocalDir("c1", {{"state.bin", std::string(3000, '1')}}), ckpt, {},
                                 CheckpointPutOptions())
                  .ok());
  EXPECT_EQ(Count(ckpt + "/.blobs/"), 1u);
  EXPECT_EQ(Count(root_ + "/blobs/"), 0u);
  ASSERT_TRUE(store_
                  ->PutDirectory(LocalDir("c2", {{"state.bin", std::string(3000, '2')}}), ckpt, {},
                                 CheckpointPutOptions())
                  .ok());
  EXPECT_EQ(Count(ckpt + "/.blobs/"), 1u) << "the superseded checkpoint's blob is gone";
  auto back = store_->LocalDirectory(ckpt, (dir_ / "ck").string());
  ASSERT_TRUE(back.ok()) << back.status();
  std::ifstream in(fs::path(*back) / "state.bin");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), {}), std::string(3000, '2'));
  ASSERT_TRUE(store_->Delete(ckpt).ok());
  EXPECT_EQ(Count(ckpt + "/"), 0u);
}

// A model written with store-put can be named as a recipe's model, on every backend.
TEST_P(StoreSafetyTest, StoredModelIsARecipeModel) {
  const char* src = std::getenv("SQUEEZE_SOURCE_DIR");
  ASSERT_NE(src, nullptr);
  const std::string model = root_ + "/models/teacher";
  ASSERT_TRUE(
      store_->PutDirectory(std::string(src) + "/deploy/models/fortunes-teacher", model).ok());
  auto recipe = ParseRecipe("model: " + model + "\nstages:\n  - quantize: {group_size: 64}\n");
  ASSERT_TRUE(recipe.ok()) << recipe.status();
  const absl::Status checked = CheckRecipeInputs(*recipe);
  EXPECT_TRUE(checked.ok()) << checked;
  // And the shapes were read from it: a group size that does not divide them is refused.
  recipe = ParseRecipe("model: " + model + "\nstages:\n  - quantize: {group_size: 96}\n");
  ASSERT_TRUE(recipe.ok());
  EXPECT_NE(CheckRecipeInputs(*recipe).message().find("hidden_size (256)"), absl::string_view::npos)
      << CheckRecipeInputs(*recipe);
}

// An artifact built a file at a time (a model written as its layers are compressed): files given
// away are moved, not copied, on the file backend; the manifest commits them all.
TEST_P(StoreSafetyTest, ArtifactBuiltAFileAtATime) {
  const std::string uri = root_ + "/jobs/9/model";
  const fs::path part =
      fs::path(LocalDir("parts", {{"part-1.bin", std::string(7000, '1')}, {"part-2.bin", "two"}}));
  auto first = store_->PutFileBlob(uri, "part-1.bin", (part / "part-1.bin").string(), true);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(fs::exists(part / "part-1.bin")) << "a consumed file is given away";
  EXPECT_EQ(first->size, 7000);
  auto second = store_->PutFileBlob(uri, "part-2.bin", (part / "part-2.bin").string(), false);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(fs::exists(part / "part-2.bin"));
  EXPECT_FALSE(*store_->Exists(uri)) << "nothing is committed before the manifest";
  ASSERT_TRUE(store_->PutManifest(uri, {*first, *second}, {}).ok());
  auto files = store_->Files(uri);
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->size(), 2u);
  EXPECT_EQ((*files)[0].digest, first->digest);
  auto back = store_->LocalDirectory(uri, (dir_ / "back").string());
  ASSERT_TRUE(back.ok()) << back.status();
  std::ifstream in(fs::path(*back) / "part-1.bin");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), {}), std::string(7000, '1'));
  EXPECT_EQ(store_->PutFileBlob(uri, "../x", (part / "part-2.bin").string(), false).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A file larger than one digest chunk: named by its chunked digest, its chunks listed in the
// manifest, read back whole and by range across a chunk boundary, and collected like any blob.
TEST_P(StoreSafetyTest, ChunkedBlobRoundTripsAndReadsByRange) {
  std::string big(kDigestChunkBytes + 4096, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
  const std::string uri = root_ + "/jobs/big/model";
  ASSERT_TRUE(store_->PutDirectory(LocalDir("big", {{"w.bin", big}}), uri).ok());
  auto files = store_->Files(uri);
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ((*files)[0].digest, DigestBytes(big, 2).text);
  EXPECT_EQ((*files)[0].chunks.size(), 2u);
  auto range = store_->ReadArtifactRange(uri, "w.bin", kDigestChunkBytes - 3, 6, nullptr);
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(*range, big.substr(kDigestChunkBytes - 3, 6));
  auto back = store_->LocalDirectory(uri, (dir_ / "back").string());
  ASSERT_TRUE(back.ok()) << back.status();
  std::ifstream in(fs::path(*back) / "w.bin", std::ios::binary);
  EXPECT_TRUE(std::string((std::istreambuf_iterator<char>(in)), {}) == big);
  auto kept = store_->CollectGarbage(0);
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_EQ(kept->blobs_deleted, 0) << "a chunked blob named by a manifest is not garbage";
  ASSERT_TRUE(store_->Delete(uri).ok());
  auto gone = store_->CollectGarbage(0);
  ASSERT_TRUE(gone.ok()) << gone.status();
  EXPECT_EQ(gone->blobs_deleted, 1);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreSafetyTest,
                         ::testing::Values(Backend::kFile, Backend::kMoto, Backend::kS3rver), Name);

// A full disk: writing a blob that is already stored succeeds without space, and a new one fails
// at once as ResourceExhausted (never retried as transient), leaving no partial file behind.
class FullDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mount_ = fs::temp_directory_path() / ("full_disk_" + std::to_string(::getpid()));
    fs::create_directories(mount_);
    if (::mount("tmpfs", mount_.c_str(), "tmpfs", 0, "size=2m") != 0) {
      GTEST_SKIP() << "cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN)";
    }
    mounted_ = true;
  }
  void TearDown() override {
    if (mounted_) ::umount(mount_.c_str());
    RemoveTree(mount_).IgnoreError();
  }
  fs::path mount_;
  bool mounted_ = false;
};

TEST_F(FullDiskTest, ExistingBlobCostsNoSpaceAndNewOneFailsFast) {
  const fs::path local =
      fs::temp_directory_path() / ("full_disk_src_" + std::to_string(::getpid()));
  WriteFile(local / "a" / "w.bin", std::string(600 << 10, 'w'));
  WriteFile(local / "b" / "new.bin", std::string(600 << 10, 'n'));
  auto store = OpenArtifactStore("file://" + (mount_ / "root").string());
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)
                  ->PutDirectory((local / "a").string(), "file://" + (mount_ / "root/x/a").string())
                  .ok());
  // Fill the disk, leaving room for a manifest only.
  {
    std::ofstream fill(mount_ / "filler", std::ios::binary);
    const std::string block(4096, 'f');
    while (fill.write(block.data(), block.size())) {
    }
  }
  ::truncate((mount_ / "filler").c_str(), fs::file_size(mount_ / "filler") - (48 << 10));

  const absl::Status again =
      (*store)->PutDirectory((local / "a").string(), "file://" + (mount_ / "root/x/a2").string());
  EXPECT_TRUE(again.ok()) << "an existing blob needs no space: " << again;

  const auto start = std::chrono::steady_clock::now();
  const absl::Status full =
      (*store)->PutDirectory((local / "b").string(), "file://" + (mount_ / "root/x/b").string());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_NE(full.message().find("new.bin"), absl::string_view::npos) << full;
  EXPECT_NE(full.message().find("full"), absl::string_view::npos) << full;
  EXPECT_LT(seconds, 2.0) << "no retries with backoff";
  EXPECT_TRUE(fs::is_empty(mount_ / "root/blobs/sha256/tmp")) << "no partial blob is left";
  EXPECT_FALSE(fs::exists(mount_ / "root/x/b/manifest.json"));
  RemoveTree(local).IgnoreError();
}

}  // namespace
}  // namespace squeeze
