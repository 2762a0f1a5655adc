// A reader and encoder for SentencePiece `tokenizer.model` files, written against the format
// (a protobuf ModelProto: pieces with scores and types, trainer and normalizer specs) rather than
// linked from libsentencepiece: that library carries a private copy of protobuf which crashes at
// start-up in any process that also loads libprotobuf (libtorch and gRPC both do). Tests check
// this encoder against the sentencepiece command-line tools.
//
// Supported: BPE and unigram models, byte fallback, add_dummy_prefix, remove_extra_whitespaces,
// whitespace escaping. Not applied: a precompiled normalization charsmap (NFKC rules); models that
// carry one are encoded as if their normalizer were "identity" (exact for ASCII text).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace squeeze {

class SentencePieceModel {
 public:
  enum class Algorithm { kUnigram = 1, kBpe = 2 };
  enum class PieceType {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6
  };
  struct Piece {
    std::string text;
    float score = 0.0f;
    PieceType type = PieceType::kNormal;
  };

  static absl::StatusOr<std::unique_ptr<SentencePieceModel>> Load(const std::string& path);
  static absl::StatusOr<std::unique_ptr<SentencePieceModel>> Parse(absl::string_view bytes,
                                                                   absl::string_view source);

  std::vector<int32_t> Encode(absl::string_view text) const;
  std::string Decode(const std::vector<int32_t>& ids) const;
  int64_t vocab_size() const { return static_cast<int64_t>(pieces_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t unk_id() const { return unk_id_; }
  Algorithm algorithm() const { return algorithm_; }
  const std::vector<Piece>& pieces() const { return pieces_; }

 private:
  SentencePieceModel() = default;
  std::string Normalize(absl::string_view text) const;
  std::vector<int32_t> EncodeBpe(const std::string& normalized) const;
  std::vector<int32_t> EncodeUnigram(const std::string& normalized) const;
  // The id of a piece, falling back to its UTF-8 bytes (or unk) when it is not in the vocabulary.
  void AppendPiece(absl::string_view piece, std::vector<int32_t>& out) const;

  std::vector<Piece> pieces_;
  std::unordered_map<std::string, int32_t> index_;  // normal and user-defined pieces
  int32_t byte_ids_[256];
  bool byte_fallback_ = false;
  Algorithm algorithm_ = Algorithm::kUnigram;
  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = true;
  bool escape_whitespaces_ = true;
  int32_t unk_id_ = 0, bos_id_ = -1, eos_id_ = -1;
  float min_score_ = 0.0f;
  float max_score_ = 0.0f;
  size_t max_piece_bytes_ = 1;
};

}  // namespace squeeze
