#include "common/store/sigv4.h"

#include "gtest/gtest.h"

namespace squeeze {
namespace {

// The worked "GET Object" example of AWS's SigV4 documentation for S3 (header authorization):
// its inputs and its expected signature.
TEST(SigV4Test, MatchesTheDocumentedGetObjectExample) {
  SigV4Request r;
  r.method = "GET";
  r.path = "/test.txt";
  r.payload_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  r.headers = {{"host", "examplebucket.s3.amazonaws.com"},
               {"range", "bytes=0-9"},
               {"x-amz-content-sha256", r.payload_sha256},
               {"x-amz-date", "20130524T000000Z"}};
  AwsCredentials c{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};
  EXPECT_EQ(SignV4(r, c, "20130524T000000Z", "us-east-1", "s3"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

TEST(SigV4Test, CanonicalFormEncodesAndSorts) {
  SigV4Request r;
  r.method = "GET";
  r.path = "/bucket/a key/ü";
  r.query = {{"prefix", "x/y"}, {"list-type", "2"}, {"continuation-token", "a+b="}};
  r.headers = {{"host", "h"}, {"x-amz-meta", "  two   spaces  "}};
  r.payload_sha256 = "UNSIGNED-PAYLOAD";
  EXPECT_EQ(CanonicalRequest(r),
            "GET\n/bucket/a%20key/%C3%BC\n"
            "continuation-token=a%2Bb%3D&list-type=2&prefix=x%2Fy\n"
            "host:h\nx-amz-meta:two spaces\n\nhost;x-amz-meta\nUNSIGNED-PAYLOAD");
}

}  // namespace
}  // namespace squeeze
