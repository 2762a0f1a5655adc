// Multiple-choice task files: questions tokenized with bos on the context and each choice on its
// own, and every malformed line refused with its file, line and what is wrong.
#include "common/data/choice_tasks.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

class ChoiceTasksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = fs::temp_directory_path() / ("choice_tasks_" + std::to_string(::getpid()) + ".jsonl");
  }
  void TearDown() override { fs::remove(path_); }
  absl::StatusOr<std::vector<ChoiceQuestion>> Load(const std::string& contents,
                                                   int64_t vocab = ByteTokenizer::kMinVocab) {
    std::ofstream(path_) << contents;
    return LoadChoiceTasks(path_.string(), tokenizer_, vocab);
  }
  fs::path path_;
  ByteTokenizer tokenizer_;
};

TEST_F(ChoiceTasksTest, QuestionsAreTokenizedWithBosOnTheContext) {
  auto q = Load(
      "{\"context\": \"ab\", \"choices\": [\"c\", \"de\"], \"label\": 1, \"category\": \"x\"}\n"
      "\n"
      "{\"context\": \"z\", \"choices\": [\"é\", \"f\", \"g\"], \"label\": 0}\n");
  ASSERT_TRUE(q.ok()) << q.status();
  ASSERT_EQ(q->size(), 2u);
  EXPECT_EQ((*q)[0].context, (std::vector<int32_t>{ByteTokenizer::kBos, 'a', 'b'}));
  EXPECT_EQ((*q)[0].choices[1], (std::vector<int32_t>{'d', 'e'}));
  EXPECT_EQ((*q)[0].label, 1);
  EXPECT_EQ((*q)[0].category, "x");
  EXPECT_EQ((*q)[1].choice_bytes[0], 2) << "UTF-8 bytes, for acc_norm";
  EXPECT_EQ((*q)[1].category, "");
}

TEST_F(ChoiceTasksTest, MalformedLinesAreRefusedWithFileAndLine) {
  const std::string good = "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"label\": 0}\n";
  struct Case {
    std::string line;
    std::string expect;
  };
  for (const Case& c : std::vector<Case>{
           {"not json", ":2: not a JSON object"},
           {"{\"choices\": [\"b\", \"c\"], \"label\": 0}", ":2: field \"context\""},
           {"{\"context\": \"a\", \"choices\": [], \"label\": 0}", "at least 2 choices, got 0"},
           {"{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"label\": 2}",
            ":2: label 2 is out of range for 2 choices"},
           {"{\"context\": \"a\", \"choices\": [\"b\", \"\"], \"label\": 0}",
            "choices[1]: expected a non-empty string"},
           {"{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"label\": \"0\"}",
            "field \"label\": expected an integer"},
       }) {
    auto q = Load(good + c.line + "\n");
    ASSERT_FALSE(q.ok()) << c.line;
    EXPECT_EQ(q.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(q.status().message().find(c.expect), std::string::npos)
        << q.status() << " (wanted " << c.expect << ")";
    EXPECT_NE(q.status().message().find(path_.string()), std::string::npos);
  }
  // Ids beyond the model's vocabulary (a byte model cut to 100 ids sees 'z' = 122).
  auto small = Load("{\"context\": \"z\", \"choices\": [\"a\", \"b\"], \"label\": 0}\n", 100);
  EXPECT_NE(small.status().message().find(":1: id 256 is outside the vocabulary of 100"),
            std::string::npos)
      << small.status();
  EXPECT_EQ(Load("\n\n").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadChoiceTasks("/nonexistent.jsonl", tokenizer_, 0).status().code(),
            absl::StatusCode::kNotFound);
}

// A file with no newline (a binary file given by mistake) stops at the line cap with an error,
// instead of being read into memory whole.
TEST_F(ChoiceTasksTest, ALineOverTheCapIsRefusedWithFileAndLine) {
  const std::string ok = "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"label\": 0}\n";
  auto loaded = Load(ok + std::string(kMaxChoiceLineBytes + 1, 'x'));
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find(":2: line longer than the limit of"), std::string::npos)
      << loaded.status();
}

}  // namespace
}  // namespace squeeze
