// Text to token ids: Hugging Face tokenizer.json, SentencePiece `tokenizer.model`, or bytes for the
// project's byte-level example models.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "common/model/llama_config.h"

namespace squeeze {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Ids of `text`, without bos/eos.
  virtual std::vector<int32_t> Encode(absl::string_view text) const = 0;
  virtual std::string Decode(const std::vector<int32_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when there is none
  virtual int32_t eos_id() const = 0;
};

// Ids 0..255 are the bytes of UTF-8 text; 256 is bos, 257 eos, 258 padding.
class ByteTokenizer : public Tokenizer {
 public:
  static constexpr int32_t kBos = 256;
  static constexpr int32_t kEos = 257;
  static constexpr int32_t kPad = 258;
  static constexpr int64_t kMinVocab = 259;

  std::vector<int32_t> Encode(absl::string_view text) const override;
  std::string Decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return kMinVocab; }
  int32_t bos_id() const override { return kBos; }
  int32_t eos_id() const override { return kEos; }
};

// Opens a `tokenizer.model` file (SentencePiece).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadSentencePieceTokenizer(const std::string& path);

// The tokenizer of a model directory: tokenizer.json if present (hf_tokenizer.h), else
// tokenizer.model (SentencePiece), else bytes when the config says so, else NotFound (callers may
// still use pre-tokenized `input_ids`).
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir,
                                                         const LlamaConfig& config);

}  // namespace squeeze
