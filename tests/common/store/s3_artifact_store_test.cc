// The s3:// artifact store against moto_server: content addressing, the manifest as commit point,
// verification on read, garbage collection.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/base/file_util.h"
#include "common/store/artifact_store.h"
#include "gtest/gtest.h"
#include "tests/common/store/moto_server.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

class S3ArtifactStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(moto_.Ready("store")) << "moto_server did not start";
    ::setenv("SQUEEZE_S3_ENDPOINT", moto_.endpoint().c_str(), 1);
    ::setenv("AWS_ACCESS_KEY_ID", "testing", 1);
    ::setenv("AWS_SECRET_ACCESS_KEY", "testing", 1);
    dir_ = fs::temp_directory_path() / ("s3_store_test_" + std::to_string(::getpid()));
    RemoveTree(dir_).IgnoreError();
    fs::create_directories(dir_ / "a");
    fs::create_directories(dir_ / "b");
    std::ofstream(dir_ / "a" / "shared.bin") << std::string(1000, 's');
    std::ofstream(dir_ / "a" / "only-a.json") << "{\"a\": 1}";
    std::ofstream(dir_ / "b" / "shared.bin") << std::string(1000, 's');
    std::ofstream(dir_ / "b" / "only-b.bin") << "bbbb";
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }

  testing::MotoServer moto_;
  fs::path dir_;
};

TEST_F(S3ArtifactStoreTest, StoresBlobsOnceVerifiesReadsAndCollectsGarbage) {
  auto store = OpenArtifactStore("s3://store/root");
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->PutDirectory((dir_ / "a").string(), "s3://store/root/jobs/1/a").ok());
  ASSERT_TRUE((*store)->PutDirectory((dir_ / "b").string(), "s3://store/root/jobs/2/b").ok());
  S3Client s3(moto_.Options());
  auto blobs = s3.List("store", "root/blobs/sha256/");
  ASSERT_TRUE(blobs.ok());
  EXPECT_EQ(blobs->size(), 3u) << "the shared file is stored once";
  EXPECT_TRUE(*(*store)->Exists("s3://store/root/jobs/1/a"));
  EXPECT_FALSE(*(*store)->Exists("s3://store/root/jobs/3/none"));

  auto local = (*store)->LocalDirectory("s3://store/root/jobs/1/a", (dir_ / "got").string());
  ASSERT_TRUE(local.ok()) << local.status();
  std::ifstream in(fs::path(*local) / "only-a.json");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(text, "{\"a\": 1}");

  // Without its manifest, b is gone; only its unique blob is unreferenced.
  ASSERT_TRUE((*store)->Delete("s3://store/root/jobs/2/b").ok());
  EXPECT_FALSE(*(*store)->Exists("s3://store/root/jobs/2/b"));
  auto young = (*store)->CollectGarbage(/*grace_seconds=*/3600);
  ASSERT_TRUE(young.ok()) << young.status();
  EXPECT_EQ(young->blobs_deleted, 0) << "a young blob may belong to an upload in progress";
  auto gc = (*store)->CollectGarbage(/*grace_seconds=*/0);
  ASSERT_TRUE(gc.ok()) << gc.status();
  EXPECT_EQ(gc->blobs_deleted, 1);
  EXPECT_EQ(gc->blobs_kept, 2);
  EXPECT_TRUE((*store)->LocalDirectory("s3://store/root/jobs/1/a", (dir_ / "again").string()).ok());

  // A tampered blob is detected and names itself.
  auto remaining = s3.List("store", "root/blobs/sha256/");
  ASSERT_TRUE(remaining.ok());
  for (const S3ObjectInfo& b : *remaining) ASSERT_TRUE(s3.PutObject("store", b.key, "evil").ok());
  auto bad = (*store)->LocalDirectory("s3://store/root/jobs/1/a", (dir_ / "bad").string());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("does not match its digest"), absl::string_view::npos);
}

TEST_F(S3ArtifactStoreTest, BadUrisAndMissingCredentialsAreClearErrors) {
  EXPECT_EQ(OpenArtifactStore("s3://").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenArtifactStore("gs://x").status().code(), absl::StatusCode::kInvalidArgument);
  auto store = OpenArtifactStore("s3://store/root");
  ASSERT_TRUE(store.ok());
  auto missing = (*store)->LocalDirectory("s3://no-such-bucket/x", (dir_ / "m").string());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("no-such-bucket"), absl::string_view::npos);
  // A file:// store reads s3:// URIs too (a recipe's model in a bucket).
  auto file_only = OpenArtifactStore("file:///tmp");
  ASSERT_TRUE(file_only.ok());
  auto absent = (*file_only)->ReadFile("s3://store/x");
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(absent.status().message().find("s3://store/x"), absl::string_view::npos);
  ::unsetenv("AWS_ACCESS_KEY_ID");
  auto no_credentials = OpenArtifactStore("s3://store/root");
  EXPECT_EQ(no_credentials.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(no_credentials.status().message().find("AWS_ACCESS_KEY_ID"), absl::string_view::npos);
}

TEST(S3CredentialsTest, WrongCredentialsAreRefusedWith403AndTheReason) {
  testing::MotoServer moto(/*enforce_auth=*/true);
  ASSERT_TRUE(moto.Answers()) << "moto_server did not start";
  S3Options options = moto.Options();
  options.credentials = {"AKIANOTAREALKEY00000", "wrong-secret", ""};
  S3Client client(options);
  const absl::Status put = client.PutObject("bucket", "key", "x");
  EXPECT_EQ(put.code(), absl::StatusCode::kPermissionDenied) << put;
  EXPECT_NE(put.message().find("HTTP 403"), absl::string_view::npos) << put;
  EXPECT_NE(put.message().find("InvalidAccessKeyId"), absl::string_view::npos) << put;
  EXPECT_NE(put.message().find("s3://bucket/key"), absl::string_view::npos) << put;

  // Through the store: the failing file and the reason, and never the secret.
  ::setenv("SQUEEZE_S3_ENDPOINT", moto.endpoint().c_str(), 1);
  ::setenv("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00000", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret", 1);
  const fs::path dir = fs::temp_directory_path() / ("s3_creds_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << "{}";
  auto store = OpenArtifactStore("s3://bucket/root");
  ASSERT_TRUE(store.ok());
  const absl::Status stored = (*store)->PutDirectory(dir.string(), "s3://bucket/root/a");
  EXPECT_EQ(stored.code(), absl::StatusCode::kPermissionDenied) << stored;
  EXPECT_NE(stored.message().find("config.json"), absl::string_view::npos) << stored;
  EXPECT_NE(stored.message().find("403"), absl::string_view::npos) << stored;
  EXPECT_EQ(stored.message().find("wrong-secret"), absl::string_view::npos) << stored;
  RemoveTree(dir).IgnoreError();
}

}  // namespace
}  // namespace squeeze
