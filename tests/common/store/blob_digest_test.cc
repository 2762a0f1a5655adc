// Blob digests: plain SHA-256 for one chunk, a root over 16 MiB chunk digests above, the same
// whatever the thread count; and a store that verifies ranges by the chunks they cover.
#include "common/store/blob_digest.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/base/file_util.h"
#include "common/base/sha256.h"
#include "common/store/artifact_store.h"
#include "gtest/gtest.h"
#include "tests/common/store/random_file.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

std::string Slurp(const fs::path& p) { return ReadFileToString(p.string()).value_or(""); }

class BlobDigestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("blob_digest_test_" + std::to_string(::getpid()));
    RemoveTree(root_).IgnoreError();
    fs::create_directories(root_ / "model");
    // Two full chunks and a partial third one.
    testing::WriteRandomFile(root_ / "model" / "big.bin", 2 * kDigestChunkBytes + 12345);
    bytes_ = Slurp(root_ / "model" / "big.bin");
  }
  void TearDown() override { RemoveTree(root_).IgnoreError(); }

  fs::path root_;
  std::string bytes_;
};

TEST_F(BlobDigestTest, OneChunkIsPlainSha256) {
  const std::string small = bytes_.substr(0, kDigestChunkBytes);
  const BlobDigest d = DigestBytes(small, 4);
  EXPECT_EQ(d.text, "sha256:" + Sha256Hex(small));
  EXPECT_FALSE(d.chunked());
  EXPECT_EQ(*BlobName(d.text), Sha256Hex(small));
}

TEST_F(BlobDigestTest, LargerIsARootOverChunkDigestsWhateverTheThreads) {
  const BlobDigest one = DigestBytes(bytes_, 1);
  const BlobDigest many = DigestBytes(bytes_, 8);
  EXPECT_EQ(one.text, many.text);
  ASSERT_EQ(one.chunks.size(), 3u);
  EXPECT_EQ(one.text.substr(0, 12), "sha256-c16m:");
  // Each chunk's digest is the plain SHA-256 of its bytes.
  EXPECT_EQ(one.chunks[0], Sha256Hex(absl::string_view(bytes_).substr(0, kDigestChunkBytes)));
  EXPECT_EQ(one.chunks[2], Sha256Hex(absl::string_view(bytes_).substr(2 * kDigestChunkBytes)));
  // The root is not the plain digest of anything obvious, and its blob name is distinct.
  EXPECT_NE(one.text.substr(12), Sha256Hex(bytes_));
  EXPECT_EQ(*BlobName(one.text), one.text.substr(12) + ".c16m");
  EXPECT_TRUE(ChunksMatch(one.text, static_cast<int64_t>(bytes_.size()), one.chunks));

  // Any change of a byte, of the size or of the chunk list is seen.
  std::string changed = bytes_;
  changed[kDigestChunkBytes + 7] ^= 1;
  EXPECT_NE(DigestBytes(changed, 4).text, one.text);
  EXPECT_FALSE(ChunksMatch(one.text, static_cast<int64_t>(bytes_.size()) + 1, one.chunks));
  std::vector<std::string> swapped = one.chunks;
  std::swap(swapped[0], swapped[1]);
  EXPECT_FALSE(ChunksMatch(one.text, static_cast<int64_t>(bytes_.size()), swapped));

  auto from_file = DigestFile((root_ / "model" / "big.bin").string(), 3);
  ASSERT_TRUE(from_file.ok()) << from_file.status();
  EXPECT_EQ(from_file->text, one.text);
  // A reader of an older manifest that named this file by plain SHA-256 hashes it that way.
  EXPECT_EQ(*DigestFileLike((root_ / "model" / "big.bin").string(), "sha256:x", 4),
            "sha256:" + Sha256Hex(bytes_));
  EXPECT_EQ(DigestFile((root_ / "absent").string(), 2).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(BlobDigestTest, MalformedDigestsAreRefusedByName) {
  for (const std::string& bad : std::vector<std::string>{
           "", "sha256:abc", "md5:" + std::string(64, 'a'), "sha256:" + std::string(64, 'A'),
           "sha256-c16m:" + std::string(63, 'a')}) {
    auto name = BlobName(bad);
    ASSERT_FALSE(name.ok()) << bad;
    EXPECT_NE(name.status().message().find("expected sha256:"), std::string::npos);
  }
}

TEST_F(BlobDigestTest, StoreWritesChunksAndVerifiesRangesByTheChunksTheyCover) {
  auto store = OpenArtifactStore("file://" + (root_ / "store").string());
  ASSERT_TRUE(store.ok()) << store.status();
  const std::string uri = "file://" + (root_ / "store" / "jobs" / "m").string();
  ASSERT_TRUE((*store)->PutDirectory((root_ / "model").string(), uri).ok());

  const auto manifest = nlohmann::json::parse(Slurp(root_ / "store/jobs/m/manifest.json"));
  const auto& entry = manifest["files"][0];
  const BlobDigest expected = DigestBytes(bytes_, 2);
  EXPECT_EQ(entry["digest"], expected.text);
  EXPECT_EQ(entry["chunks"].get<std::vector<std::string>>(), expected.chunks);
  auto files = (*store)->Files(uri);
  ASSERT_TRUE(files.ok());
  EXPECT_EQ((*files)[0].chunks, expected.chunks);

  // A range across the first chunk boundary, and one to the end.
  int64_t size = 0;
  auto across = (*store)->ReadArtifactRange(uri, "big.bin", kDigestChunkBytes - 10, 20, &size);
  ASSERT_TRUE(across.ok()) << across.status();
  EXPECT_EQ(*across, bytes_.substr(kDigestChunkBytes - 10, 20));
  EXPECT_EQ(size, static_cast<int64_t>(bytes_.size()));
  // Empty ranges, at the end of the file included, read nothing and touch no chunk.
  for (int64_t at : {int64_t{0}, kDigestChunkBytes, static_cast<int64_t>(bytes_.size())}) {
    auto empty = (*store)->ReadArtifactRange(uri, "big.bin", at, 0, nullptr);
    ASSERT_TRUE(empty.ok()) << empty.status();
    EXPECT_TRUE(empty->empty());
  }
  auto tail = (*store)->ReadArtifactRange(uri, "big.bin", 2 * kDigestChunkBytes + 5, -1, nullptr);
  ASSERT_TRUE(tail.ok()) << tail.status();
  EXPECT_EQ(*tail, bytes_.substr(2 * kDigestChunkBytes + 5));

  // Corrupt one byte of the third chunk in the store: ranges within the first chunk still read,
  // a range touching the third is refused, and so is placing the whole file.
  const fs::path blob = root_ / "store/blobs/sha256" / expected.text.substr(12, 2) /
                        (expected.text.substr(12) + ".c16m");
  ASSERT_TRUE(fs::exists(blob));
  ::chmod(blob.c_str(), 0644);
  {
    std::fstream f(blob, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(2 * kDigestChunkBytes + 100);
    f.put(static_cast<char>(bytes_[2 * kDigestChunkBytes + 100] ^ 0x40));
  }
  auto first = (*store)->ReadArtifactRange(uri, "big.bin", 5, 10, nullptr);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(*first, bytes_.substr(5, 10));
  auto bad = (*store)->ReadArtifactRange(uri, "big.bin", 2 * kDigestChunkBytes, 10, nullptr);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("big.bin"), std::string::npos) << bad.status();
  auto placed = (*store)->LocalDirectory(uri, (root_ / "scratch").string());
  EXPECT_EQ(placed.status().code(), absl::StatusCode::kDataLoss) << placed.status();
  EXPECT_NE(placed.status().message().find("sha256-c16m:"), std::string::npos) << placed.status();
}

}  // namespace
}  // namespace squeeze
