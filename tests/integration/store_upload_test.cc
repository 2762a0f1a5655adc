// A 300 MiB model uploaded to moto_server by `squeezectl store-put`: killed mid-upload it leaves no
// artifact (and garbage collection aborts its abandoned multipart upload); the retried upload
// completes in parallel parts and reads back, streamed and verified, byte for byte.
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/base/file_util.h"
#include "common/base/sha256.h"
#include "common/store/artifact_store.h"
#include "common/store/blob_digest.h"
#include "common/store/s3_client.h"
#include "gtest/gtest.h"
#include "tests/common/store/moto_server.h"
#include "tests/common/store/random_file.h"
#include "tests/integration/service_harness.h"

namespace squeeze::testing {
namespace {

namespace fs = std::filesystem;

TEST(StoreUploadTest, KilledUploadLeavesNoArtifactAndTheRetryCompletes) {
  MotoServer moto;
  ASSERT_TRUE(moto.Ready("models")) << "moto_server did not start";
  ::setenv("SQUEEZE_S3_ENDPOINT", moto.endpoint().c_str(), 1);
  ::setenv("AWS_ACCESS_KEY_ID", "testing", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "testing", 1);
  const fs::path dir = fs::temp_directory_path() / ("store_upload_" + std::to_string(::getpid()));
  RemoveTree(dir).IgnoreError();
  fs::create_directories(dir / "model");
  constexpr int64_t kSize = 300ll << 20;
  WriteRandomFile(dir / "model" / "model.safetensors", kSize);
  std::ofstream(dir / "model" / "config.json") << "{\"model_type\": \"llama\"}";
  const std::string uri = "s3://models/team/big", root = "s3://models/store";
  const std::vector<std::string> put = {
      Env("SQUEEZECTL_BIN"), "store-put", (dir / "model").string(), uri, "--store", root};
  S3Client s3(moto.Options());

  {
    Process client(put, (dir / "put.log").string());
    // Kill the client once its multipart upload is in flight.
    bool in_flight = false;
    for (int i = 0; i < 1200 && !in_flight; ++i) {
      auto uploads = s3.ListMultipartUploads("models", "store/");
      in_flight = uploads.ok() && !uploads->empty();
      if (!in_flight) std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    ASSERT_TRUE(in_flight) << "no multipart upload was seen";
    client.Kill(SIGKILL);
    const int status = client.Wait();
    ASSERT_TRUE(WIFSIGNALED(status)) << "the upload finished before it could be killed";
  }
  auto store = OpenArtifactStore(root);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_FALSE(*(*store)->Exists(uri)) << "a killed upload must not look complete";
  EXPECT_EQ(s3.HeadObject("models", "team/big/manifest.json").status().code(),
            absl::StatusCode::kNotFound);
  // Garbage collection aborts the abandoned upload (its parts would otherwise be billed forever).
  auto gc = (*store)->CollectGarbage(/*grace_seconds=*/0);
  ASSERT_TRUE(gc.ok()) << gc.status();
  EXPECT_GE(gc->uploads_aborted, 1);
  auto left = s3.ListMultipartUploads("models", "store/");
  ASSERT_TRUE(left.ok());
  EXPECT_TRUE(left->empty());

  // The retry completes, as one 300 MiB blob uploaded in 64 MiB parts.
  auto [code, out] = RunCommand(put);
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(*(*store)->Exists(uri));
  const std::string digest = *Sha256File((dir / "model" / "model.safetensors").string());
  // Larger than one digest chunk: named by its chunked digest (blob_digest.h).
  auto chunked = DigestFile((dir / "model" / "model.safetensors").string(), 2);
  ASSERT_TRUE(chunked.ok() && chunked->chunked());
  const std::string name = *BlobName(chunked->text);
  auto blob = s3.HeadObject("models", "store/blobs/sha256/" + name.substr(0, 2) + "/" + name);
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_EQ(blob->size, kSize);
  EXPECT_NE(blob->etag.find("-5"), std::string::npos) << "a multipart ETag ends in -<parts>";

  // Read back, streamed to disk and verified.
  auto local = (*store)->LocalDirectory(uri, (dir / "read").string());
  ASSERT_TRUE(local.ok()) << local.status();
  EXPECT_EQ(*Sha256File((fs::path(*local) / "model.safetensors").string()), digest);
  RemoveTree(dir).IgnoreError();
}

}  // namespace
}  // namespace squeeze::testing
