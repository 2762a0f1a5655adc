// Bounded, regular-file-only reads: a FIFO, a device or a directory named where a file is
// expected is refused at once (opening a FIFO would block), and so is a file over the limit.
#include "common/base/file_util.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("file_util_test_" + std::to_string(::getpid()));
    RemoveTree(dir_).IgnoreError();
    fs::create_directories(dir_);
  }
  void TearDown() override { RemoveTree(dir_).IgnoreError(); }
  fs::path dir_;
};

TEST_F(FileUtilTest, ReadsARegularFileWithinItsLimit) {
  std::ofstream(dir_ / "a.txt") << "hello";
  auto text = ReadFileToString((dir_ / "a.txt").string(), 5);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "hello");
  auto big = ReadFileToString((dir_ / "a.txt").string(), 4);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("more than the limit of 4"), absl::string_view::npos)
      << big.status();
  EXPECT_EQ(ReadFileToString((dir_ / "none").string()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(FileUtilTest, FifoDeviceAndDirectoryAreRefusedWithoutBlocking) {
  const std::string fifo = (dir_ / "fifo").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const auto start = std::chrono::steady_clock::now();
  auto from_fifo = ReadFileToString(fifo);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  ASSERT_FALSE(from_fifo.ok());
  EXPECT_EQ(from_fifo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(from_fifo.status().message().find("found a FIFO"), absl::string_view::npos)
      << from_fifo.status();
  EXPECT_NE(from_fifo.status().message().find(fifo), absl::string_view::npos);
  auto device = ReadFileToString("/dev/zero");
  EXPECT_NE(device.status().message().find("found a device"), absl::string_view::npos)
      << device.status();
  auto directory = ReadFileToString(dir_.string());
  EXPECT_NE(directory.status().message().find("found a directory"), absl::string_view::npos)
      << directory.status();
}

}  // namespace
}  // namespace squeeze
