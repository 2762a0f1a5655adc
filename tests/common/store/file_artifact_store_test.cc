// The content-addressed store on the file:// backend: blobs stored once, the manifest as commit
// point, provenance, verification on every read, garbage collection.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/base/file_util.h"
#include "common/base/sha256.h"
#include "common/store/artifact_store.h"
#include "gtest/gtest.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

class FileArtifactStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("store_test_" + std::to_string(::getpid()));
    RemoveTree(root_).IgnoreError();
    fs::create_directories(root_ / "a");
    fs::create_directories(root_ / "b");
    std::ofstream(root_ / "a" / "shared.bin") << std::string(100000, 's');
    std::ofstream(root_ / "a" / "config.json") << "{\"a\": 1}";
    std::ofstream(root_ / "a" / ".hidden") << "skipped";
    std::ofstream(root_ / "b" / "shared.bin") << std::string(100000, 's');
    std::ofstream(root_ / "b" / "only-b.bin") << "bbbb";
    auto store = OpenArtifactStore(store_uri());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void TearDown() override { RemoveTree(root_).IgnoreError(); }

  std::string store_uri() const { return "file://" + (root_ / "store").string(); }
  std::string artifact(const std::string& name) const { return store_uri() + "/jobs/" + name; }
  std::vector<fs::path> Blobs() const {
    std::vector<fs::path> out;
    for (const auto& e : fs::recursive_directory_iterator(root_ / "store/blobs/sha256")) {
      if (e.is_regular_file() && e.path().parent_path().filename() != "tmp")
        out.push_back(e.path());
    }
    return out;
  }

  fs::path root_;
  std::unique_ptr<ArtifactStore> store_;
};

TEST_F(FileArtifactStoreTest, StoresBlobsOnceUnderTheirDigestWithAManifest) {
  ArtifactProvenance provenance;
  provenance.job_id = "job-1";
  provenance.stage = "quantize";
  provenance.stage_spec = R"({"method": "rtn", "bits": 4})";
  EXPECT_FALSE(*store_->Exists(artifact("a")));
  ASSERT_TRUE(store_->PutDirectory((root_ / "a").string(), artifact("a"), provenance).ok());
  provenance.sources["model"] = artifact("a");
  ASSERT_TRUE(store_->PutDirectory((root_ / "b").string(), artifact("b"), provenance).ok());
  EXPECT_TRUE(*store_->Exists(artifact("a")));
  EXPECT_EQ(Blobs().size(), 3u) << "the shared file is stored once";
  // Each blob sits at blobs/sha256/<first two hex digits>/<digest> and hashes to its name.
  for (const fs::path& b : Blobs()) {
    EXPECT_EQ(b.parent_path().filename().string(), b.filename().string().substr(0, 2));
    EXPECT_EQ(*Sha256File(b.string()), b.filename().string());
  }
  const nlohmann::json manifest =
      nlohmann::json::parse(Slurp(root_ / "store/jobs/b/manifest.json"));
  ASSERT_EQ(manifest["files"].size(), 2u);
  EXPECT_EQ(manifest["files"][0]["name"], "only-b.bin");
  EXPECT_EQ(manifest["files"][0]["digest"], "sha256:" + Sha256Hex("bbbb"));
  EXPECT_EQ(manifest["files"][0]["size"], 4);
  EXPECT_EQ(manifest["files"][0]["media_type"], "application/octet-stream");
  const nlohmann::json& origin = manifest["provenance"];
  EXPECT_EQ(origin["job_id"], "job-1");
  EXPECT_EQ(origin["stage"], "quantize");
  EXPECT_EQ(origin["stage_spec"]["bits"], 4);
  EXPECT_FALSE(origin["code_version"].get<std::string>().empty());
  ASSERT_EQ(origin["sources"].size(), 1u);
  EXPECT_EQ(origin["sources"][0]["uri"], artifact("a"));
  EXPECT_EQ(origin["sources"][0]["digest"],
            "sha256:" + Sha256Hex(Slurp(root_ / "store/jobs/a/manifest.json")));

  auto dir = store_->LocalDirectory(artifact("a"), (root_ / "read-a").string());
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(Slurp(fs::path(*dir) / "config.json"), "{\"a\": 1}");
  EXPECT_EQ(fs::file_size(fs::path(*dir) / "shared.bin"), 100000u);
  EXPECT_FALSE(fs::exists(fs::path(*dir) / ".hidden"));
  // One file alone, verified.
  ASSERT_TRUE(store_->FetchFile(artifact("b"), "only-b.bin", (root_ / "one.bin").string()).ok());
  EXPECT_EQ(Slurp(root_ / "one.bin"), "bbbb");
  EXPECT_EQ(store_->FetchFile(artifact("b"), "nope", (root_ / "x").string()).code(),
            absl::StatusCode::kNotFound);
  int64_t size = 0;
  auto range = store_->ReadArtifactRange(artifact("a"), "config.json", 1, 3, &size);
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(*range, "\"a\"");
  EXPECT_EQ(size, 8);

  // Replacing an artifact is one manifest write; deleting it leaves the shared blob to b.
  fs::remove(root_ / "a" / "config.json");
  ASSERT_TRUE(store_->PutDirectory((root_ / "a").string(), artifact("a")).ok());
  dir = store_->LocalDirectory(artifact("a"), (root_ / "read-a").string());
  ASSERT_TRUE(dir.ok());
  EXPECT_FALSE(fs::exists(fs::path(*dir) / "config.json"));
  ASSERT_TRUE(store_->Delete(artifact("a")).ok());
  EXPECT_FALSE(*store_->Exists(artifact("a")));
  EXPECT_EQ(store_->LocalDirectory(artifact("a"), (root_ / "x").string()).status().code(),
            absl::StatusCode::kNotFound);

  // Small single objects (reports).
  ASSERT_TRUE(store_->PutFile(store_uri() + "/jobs/report.json", "{}").ok());
  EXPECT_EQ(*store_->ReadFile(store_uri() + "/jobs/report.json"), "{}");
  EXPECT_EQ(store_->ReadFile(store_uri() + "/missing").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(FileArtifactStoreTest, FlippedBytesOnDiskAreDetectedAndNeverReturned) {
  ASSERT_TRUE(store_->PutDirectory((root_ / "b").string(), artifact("b")).ok());
  fs::path victim;
  for (const fs::path& b : Blobs()) {
    if (fs::file_size(b) == 100000) victim = b;
  }
  ASSERT_FALSE(victim.empty());
  {
    ::chmod(victim.c_str(), 0644);
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5000);
    f.put('X');
  }
  auto bad = store_->LocalDirectory(artifact("b"), (root_ / "bad").string());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("does not match its digest"), absl::string_view::npos);
  EXPECT_NE(bad.status().message().find(victim.filename().string()), absl::string_view::npos);
  EXPECT_FALSE(fs::exists(root_ / "bad" / "shared.bin")) << "bad bytes must not be handed out";
  const absl::Status one = store_->FetchFile(artifact("b"), "shared.bin", (root_ / "one").string());
  EXPECT_EQ(one.code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(fs::exists(root_ / "one"));
}

TEST_F(FileArtifactStoreTest, AManifestNamingAMissingBlobIsAClearError) {
  ASSERT_TRUE(store_->PutDirectory((root_ / "b").string(), artifact("b")).ok());
  const std::string digest = Sha256Hex("bbbb");
  fs::remove(root_ / "store/blobs/sha256" / digest.substr(0, 2) / digest);
  auto missing = store_->LocalDirectory(artifact("b"), (root_ / "m").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(missing.status().message().find("\"only-b.bin\""), absl::string_view::npos);
  EXPECT_NE(missing.status().message().find("missing from the store"), absl::string_view::npos);

  // A manifest that is not one names itself.
  std::ofstream(root_ / "store/jobs/b/manifest.json") << "{\"files\": 3}";
  auto malformed = store_->LocalDirectory(artifact("b"), (root_ / "m").string());
  EXPECT_EQ(malformed.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(malformed.status().message().find("manifest.json"), absl::string_view::npos);
}

// Files are placed in parallel: a manifest naming one file twice (two writers of one path) is
// refused before anything is written.
TEST_F(FileArtifactStoreTest, AManifestNamingAFileTwiceIsRefused) {
  ASSERT_TRUE(store_->PutDirectory((root_ / "b").string(), artifact("b")).ok());
  const fs::path manifest = root_ / "store/jobs/b/manifest.json";
  auto json = nlohmann::json::parse(Slurp(manifest));
  json["files"].push_back(json["files"][0]);
  std::ofstream(manifest) << json.dump();
  auto twice = store_->LocalDirectory(artifact("b"), (root_ / "m").string());
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(twice.status().message().find("names \"" + json["files"][0]["name"].get<std::string>() +
                                          "\" twice"),
            absl::string_view::npos)
      << twice.status();
}

// A model of many shards goes in and comes out whole, each file by its own digest.
TEST_F(FileArtifactStoreTest, ManyFilesRoundTripInParallel) {
  fs::create_directories(root_ / "shards");
  for (int i = 0; i < 24; ++i)
    std::ofstream(root_ / "shards" / ("model-" + std::to_string(i) + ".safetensors"))
        << std::string(1000 + i * 777, static_cast<char>('a' + i));
  ASSERT_TRUE(store_->PutDirectory((root_ / "shards").string(), artifact("shards")).ok());
  auto files = store_->Files(artifact("shards"));
  ASSERT_TRUE(files.ok());
  ASSERT_EQ(files->size(), 24u);
  auto local = store_->LocalDirectory(artifact("shards"), (root_ / "got").string());
  ASSERT_TRUE(local.ok()) << local.status();
  for (int i = 0; i < 24; ++i) {
    const std::string name = "model-" + std::to_string(i) + ".safetensors";
    EXPECT_EQ(Slurp(fs::path(*local) / name), Slurp(root_ / "shards" / name)) << name;
  }
}

TEST_F(FileArtifactStoreTest, GarbageCollectionKeepsReferencedAndYoungBlobs) {
  ASSERT_TRUE(store_->PutDirectory((root_ / "a").string(), artifact("a")).ok());
  ASSERT_TRUE(store_->PutDirectory((root_ / "b").string(), artifact("b")).ok());
  // An upload that died before its manifest leaves a partial file behind.
  std::ofstream(root_ / "store/blobs/sha256/tmp/blob.partial-1") << "half";
  ASSERT_TRUE(store_->Delete(artifact("b")).ok());
  auto young = store_->CollectGarbage(/*grace_seconds=*/3600);
  ASSERT_TRUE(young.ok()) << young.status();
  EXPECT_EQ(young->blobs_deleted, 0) << "a young blob may belong to an upload in progress";
  auto gc = store_->CollectGarbage(/*grace_seconds=*/0);
  ASSERT_TRUE(gc.ok()) << gc.status();
  EXPECT_EQ(gc->blobs_deleted, 2) << "only-b.bin and the partial upload";
  EXPECT_EQ(gc->blobs_kept, 2);
  EXPECT_FALSE(fs::exists(root_ / "store/blobs/sha256/tmp/blob.partial-1"));
  EXPECT_TRUE(store_->LocalDirectory(artifact("a"), (root_ / "again").string()).ok());
}

TEST_F(FileArtifactStoreTest, PlainDirectoriesAreReadInPlaceAndBadUrisAreRejected) {
  // A user's model directory, given by path, is not an artifact but reads like one.
  const std::string plain = "file://" + (root_ / "a").string();
  EXPECT_TRUE(*store_->Exists(plain));
  auto dir = store_->LocalDirectory(plain, (root_ / "unused").string());
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(*dir, (root_ / "a").string());
  int64_t size = 0;
  EXPECT_EQ(*store_->ReadArtifactRange(plain, "config.json", 0, -1, &size), "{\"a\": 1}");
  EXPECT_EQ(size, 8);
  EXPECT_EQ(OpenArtifactStore("gs://bucket").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->PutFile("gs://bucket/x", "").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->PutDirectory((root_ / "nope").string(), artifact("n")).code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace squeeze
