#include "common/model/tokenizer.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/base/file_util.h"
#include "common/model/sentencepiece_model.h"
#include "gtest/gtest.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;

TEST(ByteTokenizerTest, BytesRoundTrip) {
  ByteTokenizer t;
  const std::string text = "Grüße, world!\n\ttab";
  auto ids = t.Encode(text);
  EXPECT_EQ(ids.size(), text.size());
  EXPECT_EQ(ids[0], 'G');
  EXPECT_EQ(t.Decode(ids), text);
  ids.insert(ids.begin(), ByteTokenizer::kBos);
  EXPECT_EQ(t.Decode(ids), text);  // specials decode to nothing
}

TEST(TokenizerTest, ByteModelsNeedTheFlagAndAVocabulary) {
  LlamaConfig c;
  c.vocab_size = 300;
  EXPECT_EQ(LoadTokenizer("/nonexistent", c).status().code(), absl::StatusCode::kNotFound);
  c.byte_tokenizer = true;
  EXPECT_TRUE(LoadTokenizer("/nonexistent", c).ok());
  c.vocab_size = 100;
  EXPECT_EQ(LoadTokenizer("/nonexistent", c).status().code(), absl::StatusCode::kInvalidArgument);
}

// Trains real SentencePiece models with the reference command-line tools and checks that our
// encoder produces exactly the ids the reference encoder does.
class SentencePieceTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("spm_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    const char* src = std::getenv("SQUEEZE_SOURCE_DIR");
    ASSERT_NE(src, nullptr) << "SQUEEZE_SOURCE_DIR must point at the repository";
    std::ifstream in(fs::path(src) / "deploy/data/fortunes/calibration.jsonl");
    ASSERT_TRUE(in) << "example data missing";
    std::ofstream corpus(dir_ / "corpus.txt");
    std::string line;
    while (std::getline(in, line)) {
      std::string text = nlohmann::json::parse(line)["text"];
      for (char& c : text) {
        if (c == '\n' || c == '\t') c = ' ';
      }
      lines_.push_back(text);
      corpus << text << "\n";
    }
  }
  static void TearDownTestSuite() { RemoveTree(dir_).IgnoreError(); }

  static std::string Run(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen(cmd.c_str(), "r");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    EXPECT_EQ(::pclose(p), 0) << cmd;
    return out;
  }

  static fs::path dir_;
  static std::vector<std::string> lines_;
};

fs::path SentencePieceTest::dir_;
std::vector<std::string> SentencePieceTest::lines_;

TEST_P(SentencePieceTest, MatchesTheReferenceEncoder) {
  const std::string type = GetParam();
  const std::string prefix = (dir_ / type).string();
  Run("spm_train --input=" + (dir_ / "corpus.txt").string() + " --model_prefix=" + prefix +
      " --model_type=" + type +
      " --vocab_size=600 --byte_fallback=true --character_coverage=0.98"
      " --normalization_rule_name=identity --num_threads=2 --minloglevel=2 2>&1");
  auto tokenizer = LoadSentencePieceTokenizer(prefix + ".model");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->vocab_size(), 600);
  EXPECT_EQ((*tokenizer)->bos_id(), 1);
  EXPECT_EQ((*tokenizer)->eos_id(), 2);

  // Sentences the model saw, plus text with characters it never saw (byte fallback).
  std::vector<std::string> texts(lines_.begin(), lines_.begin() + 200);
  texts.push_back("Zürich – naïve café ☕ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢");
  texts.push_back("   leading and   repeated   spaces  ");
  {
    std::ofstream f(dir_ / "input.txt");
    for (const std::string& t : texts) f << t << "\n";
  }
  std::istringstream reference(Run("spm_encode --model=" + prefix + ".model --output_format=id < " +
                                   (dir_ / "input.txt").string()));
  std::string line;
  for (size_t i = 0; i < texts.size(); ++i) {
    ASSERT_TRUE(std::getline(reference, line));
    std::vector<int32_t> expected;
    std::istringstream ids(line);
    for (int32_t id; ids >> id;) expected.push_back(id);
    const std::vector<int32_t> got = (*tokenizer)->Encode(texts[i]);
    size_t first_diff = 0;
    while (first_diff < std::min(got.size(), expected.size()) &&
           got[first_diff] == expected[first_diff]) {
      ++first_diff;
    }
    EXPECT_EQ(got, expected) << type << ": \"" << texts[i] << "\" first differs at token "
                             << first_diff << ": ours "
                             << (first_diff < got.size() ? got[first_diff] : -1) << ", reference "
                             << (first_diff < expected.size() ? expected[first_diff] : -1);
  }
  // Decoding what we encode gives the text back (spaces normalized the way the model does).
  EXPECT_EQ((*tokenizer)->Decode((*tokenizer)->Encode("Zürich – naïve café ☕")),
            "Zürich – naïve café ☕");
}

INSTANTIATE_TEST_SUITE_P(Algorithms, SentencePieceTest, ::testing::Values("bpe", "unigram"));

TEST(SentencePieceModelTest, CorruptFilesAreRejected) {
  auto m = SentencePieceModel::Parse("\x0a\xff\xff\xff\x0f", "bad.model");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("bad.model"), absl::string_view::npos);
  EXPECT_FALSE(SentencePieceModel::Parse("", "empty.model").ok());
  EXPECT_EQ(SentencePieceModel::Load("/nonexistent.model").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace squeeze
