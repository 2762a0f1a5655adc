// The S3 client against moto_server, an independent S3 implementation, started by the test on a
// free loopback port.
#include "common/store/s3_client.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <thread>

#include "gtest/gtest.h"
#include "tests/common/store/moto_server.h"

namespace squeeze {
namespace {

class S3ClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    moto_ = new testing::MotoServer();
    ASSERT_TRUE(moto_->Ready("probe")) << "moto_server did not start";
  }
  static void TearDownTestSuite() { delete moto_; }
  static S3Options Options() { return moto_->Options(); }
  static testing::MotoServer* moto_;
};
testing::MotoServer* S3ClientTest::moto_ = nullptr;

TEST_F(S3ClientTest, PutGetRangeHeadDelete) {
  S3Client s3(Options());
  ASSERT_TRUE(s3.CreateBucket("models").ok());
  const std::string data = "0123456789abcdefghij";
  ASSERT_TRUE(s3.PutObject("models", "teacher/config.json", data).ok());
  EXPECT_EQ(*s3.GetObject("models", "teacher/config.json"), data);
  EXPECT_EQ(*s3.GetObject("models", "teacher/config.json", 5, 4), "5678");
  EXPECT_EQ(*s3.GetObject("models", "teacher/config.json", 15), "fghij");
  auto head = s3.HeadObject("models", "teacher/config.json");
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(head->size, 20);
  ASSERT_TRUE(s3.DeleteObject("models", "teacher/config.json").ok());
  auto gone = s3.HeadObject("models", "teacher/config.json");
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(gone.status().message().find("s3://models/teacher/config.json"),
            absl::string_view::npos);
}

TEST_F(S3ClientTest, KeysWithSpacesAndUnicodeRoundTrip) {
  S3Client s3(Options());
  ASSERT_TRUE(s3.CreateBucket("odd").ok());
  ASSERT_TRUE(s3.PutObject("odd", "a dir/ü+x=1.bin", "payload").ok());
  EXPECT_EQ(*s3.GetObject("odd", "a dir/ü+x=1.bin"), "payload");
}

TEST_F(S3ClientTest, ListFollowsContinuationTokens) {
  S3Client s3(Options());
  ASSERT_TRUE(s3.CreateBucket("listing").ok());
  for (int i = 0; i < 7; ++i)
    ASSERT_TRUE(s3.PutObject("listing", "p/" + std::to_string(i), std::string(i, 'x')).ok());
  ASSERT_TRUE(s3.PutObject("listing", "other/z", "z").ok());
  auto all = s3.List("listing", "p/", /*page_size=*/2);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 7u);
  EXPECT_EQ((*all)[3].key, "p/3");
  EXPECT_EQ((*all)[3].size, 3);
}

TEST_F(S3ClientTest, MultipartUploadWithPartsInParallel) {
  S3Options o = Options();
  o.part_size = 5 << 20;  // S3's minimum for all parts but the last
  o.parallel_parts = 2;
  S3Client s3(o);
  ASSERT_TRUE(s3.CreateBucket("big").ok());
  std::string data(12 << 20, '\0');
  std::mt19937 rng(1);
  for (char& c : data) c = static_cast<char>(rng());
  auto status = s3.PutObjectMultipart("big", "model.safetensors", data);
  ASSERT_TRUE(status.ok()) << status;
  auto head = s3.HeadObject("big", "model.safetensors");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->size, static_cast<int64_t>(data.size()));
  EXPECT_EQ(*s3.GetObject("big", "model.safetensors", 6 << 20, 1000), data.substr(6 << 20, 1000));
  EXPECT_TRUE(*s3.GetObject("big", "model.safetensors") == data);
}

TEST_F(S3ClientTest, ErrorsNameTheObjectAndTheReason) {
  S3Client s3(Options());
  auto missing_bucket = s3.GetObject("no-such-bucket", "k");
  EXPECT_EQ(missing_bucket.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing_bucket.status().message().find("NoSuchBucket"), absl::string_view::npos)
      << missing_bucket.status().message();
  // Nothing listens here: transport errors are retried, then reported as unavailable.
  S3Options dead = Options();
  dead.endpoint = "http://127.0.0.1:" + std::to_string(testing::FreeLoopbackPort());
  auto refused = S3Client(dead).GetObject("b", "k");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(refused.status().message().find("after 3 attempts"), absl::string_view::npos);
  S3Options bad = Options();
  bad.endpoint = "127.0.0.1:9";
  EXPECT_EQ(S3Client(bad).GetObject("b", "k").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace squeeze
