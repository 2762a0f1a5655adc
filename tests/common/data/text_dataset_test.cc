#include "common/data/text_dataset.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

class TextDatasetTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& content) {
    const fs::path p = fs::temp_directory_path() / ("ds_" + std::to_string(::getpid()) + "_" +
                                                    std::to_string(counter_++) + ".jsonl");
    std::ofstream(p) << content;
    files_.push_back(p);
    return p.string();
  }
  void TearDown() override {
    for (const auto& f : files_) fs::remove(f);
  }
  std::string Error(const std::string& content, const TextDatasetOptions& options = {}) {
    auto r = LoadTextDataset(Write(content), &tokenizer_, options);
    EXPECT_FALSE(r.ok()) << content;
    return r.ok() ? "" : std::string(r.status().message());
  }

  ByteTokenizer tokenizer_;
  std::vector<fs::path> files_;
  int counter_ = 0;
};

TEST_F(TextDatasetTest, ReadsTextAndIdsWithCategories) {
  const std::string path = Write(
      "{\"text\": \"hi there\", \"category\": \"greeting\"}\n"
      "\n"
      "{\"input_ids\": [5, 6, 7]}\n");
  auto r = LoadTextDataset(path, &tokenizer_);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].ids.front(), ByteTokenizer::kBos);
  EXPECT_EQ((*r)[0].ids.size(), 9u);
  EXPECT_EQ((*r)[0].category, "greeting");
  EXPECT_EQ((*r)[1].ids, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ((*r)[1].category, "");
}

TEST_F(TextDatasetTest, ErrorsNameFileLineAndField) {
  std::string e = Error("{\"text\": \"ok\"}\n{\"text\": 3}\n");
  EXPECT_NE(e.find(".jsonl:2: field \"text\""), std::string::npos) << e;
  e = Error("{\"text\": \"ok\"}\n{not json\n");
  EXPECT_NE(e.find(":2: not valid JSON"), std::string::npos) << e;
  e = Error("{\"text\": \"a\", \"input_ids\": [1]}\n");
  EXPECT_NE(e.find("exactly one"), std::string::npos) << e;
  e = Error("{\"category\": \"x\"}\n");
  EXPECT_NE(e.find("exactly one"), std::string::npos) << e;
  e = Error("{\"input_ids\": [1, -2]}\n");
  EXPECT_NE(e.find("input_ids"), std::string::npos) << e;
  e = Error("{\"text\": \"ok\", \"category\": 5}\n");
  EXPECT_NE(e.find("category"), std::string::npos) << e;
  TextDatasetOptions small_vocab;
  small_vocab.vocab_size = 100;
  e = Error("{\"input_ids\": [1, 200]}\n", small_vocab);
  EXPECT_NE(e.find("token id 200"), std::string::npos) << e;
  e = Error("\n\n");
  EXPECT_NE(e.find("no examples"), std::string::npos) << e;
}

TEST_F(TextDatasetTest, LinesAreBoundedAndFifosRefused) {
  TextDatasetOptions small;
  small.max_line_bytes = 64;
  const std::string long_line = "{\"text\": \"" + std::string(100, 'x') + "\"}\n";
  const std::string message = Error("{\"text\": \"ok\"}\n" + long_line, small);
  EXPECT_NE(message.find(":2: line longer than the limit of 64 bytes"), std::string::npos)
      << message;
  EXPECT_TRUE(LoadTextDataset(Write(long_line), &tokenizer_).ok()) << "the default allows it";
  const fs::path fifo = fs::temp_directory_path() / ("ds_fifo_" + std::to_string(::getpid()));
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  files_.push_back(fifo);
  auto r = LoadTextDataset(fifo.string(), &tokenizer_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("found a FIFO"), absl::string_view::npos) << r.status();
}

TEST_F(TextDatasetTest, TextWithoutTokenizerIsAnError) {
  auto r = LoadTextDataset(Write("{\"text\": \"abc\"}\n"), nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("input_ids"), absl::string_view::npos);
}

TEST_F(TextDatasetTest, MissingFileIsNotFound) {
  EXPECT_EQ(LoadTextDataset("/nonexistent.jsonl", &tokenizer_).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace squeeze
