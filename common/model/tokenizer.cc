#include "common/model/tokenizer.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/model/hf_tokenizer.h"
#include "common/model/sentencepiece_model.h"

namespace squeeze {
namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(std::unique_ptr<SentencePieceModel> sp) : sp_(std::move(sp)) {}

  std::vector<int32_t> Encode(absl::string_view text) const override { return sp_->Encode(text); }
  std::string Decode(const std::vector<int32_t>& ids) const override { return sp_->Decode(ids); }
  int64_t vocab_size() const override { return sp_->vocab_size(); }
  int32_t bos_id() const override { return sp_->bos_id(); }
  int32_t eos_id() const override { return sp_->eos_id(); }

 private:
  std::unique_ptr<SentencePieceModel> sp_;
};

}  // namespace

std::vector<int32_t> ByteTokenizer::Encode(absl::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (unsigned char c : text) ids.push_back(c);
  return ids;
}

std::string ByteTokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids) {
    if (id >= 0 && id < 256) text.push_back(static_cast<char>(id));
  }
  return text;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path) {
  auto sp = SentencePieceModel::Load(path);
  if (!sp.ok()) return sp.status();
  return std::make_unique<SentencePieceTokenizer>(*std::move(sp));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir,
                                                         const LlamaConfig& config) {
  // tokenizer.json first, as transformers' fast tokenizers do; bos and eos from its config.
  const auto hf_path = std::filesystem::path(model_dir) / "tokenizer.json";
  if (std::filesystem::exists(hf_path))
    return LoadHfTokenizer(hf_path.string(),
                           (std::filesystem::path(model_dir) / "tokenizer_config.json").string());
  const auto sp_path = std::filesystem::path(model_dir) / "tokenizer.model";
  if (std::filesystem::exists(sp_path)) return LoadSentencePieceTokenizer(sp_path.string());
  if (config.byte_tokenizer) {
    if (config.vocab_size < ByteTokenizer::kMinVocab) {
      return absl::InvalidArgumentError(
          absl::StrCat(model_dir, "/config.json: vocab_size: a byte-level model needs at least ",
                       ByteTokenizer::kMinVocab, ", got ", config.vocab_size));
    }
    return std::make_unique<ByteTokenizer>();
  }
  return absl::NotFoundError(
      absl::StrCat(model_dir,
                   ": no tokenizer.model and config.json does not declare squeeze_byte_tokenizer; "
                   "use data with \"input_ids\""));
}

}  // namespace squeeze
