#include "common/model/sentencepiece_model.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <queue>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/base/file_util.h"

namespace squeeze {
namespace {

constexpr char kSpace[] = "\xe2\x96\x81";  // U+2581, what SentencePiece writes for a space

// A minimal protobuf wire-format reader: enough for the ModelProto fields we use.
class WireReader {
 public:
  explicit WireReader(absl::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }
  bool ok() const { return ok_; }

  bool ReadVarint(uint64_t& out) {
    out = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return ok_ = false;
      const uint8_t b = static_cast<uint8_t>(data_[pos_++]);
      out |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return ok_ = false;
  }
  // Reads a tag; false at the end or on corruption (then ok() is false).
  bool Next(uint32_t& field, uint32_t& wire_type) {
    if (done()) return false;
    uint64_t tag;
    if (!ReadVarint(tag)) return false;
    field = static_cast<uint32_t>(tag >> 3);
    wire_type = static_cast<uint32_t>(tag & 7);
    return true;
  }
  bool ReadBytes(absl::string_view& out) {
    uint64_t len;
    if (!ReadVarint(len) || len > data_.size() - pos_) return ok_ = false;
    out = data_.substr(pos_, len);
    pos_ += len;
    return true;
  }
  bool ReadFixed32(uint32_t& out) {
    if (data_.size() - pos_ < 4) return ok_ = false;
    std::memcpy(&out, data_.data() + pos_, 4);  // little-endian hosts only, as everywhere here
    pos_ += 4;
    return true;
  }
  bool Skip(uint32_t wire_type) {
    uint64_t v;
    absl::string_view s;
    uint32_t f;
    switch (wire_type) {
      case 0:
        return ReadVarint(v);
      case 1:
        if (data_.size() - pos_ < 8) return ok_ = false;
        pos_ += 8;
        return true;
      case 2:
        return ReadBytes(s);
      case 5:
        return ReadFixed32(f);
      default:
        return ok_ = false;
    }
  }

 private:
  absl::string_view data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

size_t Utf8Length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xe) return 3;
  if ((lead >> 3) == 0x1e) return 4;
  return 1;  // invalid lead byte: treat as one unit
}

// Splits into UTF-8 characters (a truncated sequence at the end is one unit).
std::vector<absl::string_view> SplitChars(absl::string_view s) {
  std::vector<absl::string_view> out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = std::min(Utf8Length(static_cast<unsigned char>(s[i])), s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SentencePieceModel>> SentencePieceModel::Load(
    const std::string& path) {
  auto bytes = ReadFileToString(path);  // regular files only, bounded
  if (!bytes.ok()) return bytes.status();
  return Parse(*bytes, path);
}

absl::StatusOr<std::unique_ptr<SentencePieceModel>> SentencePieceModel::Parse(
    absl::string_view bytes, absl::string_view source) {
  auto corrupt = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a SentencePiece model: ", what));
  };
  std::unique_ptr<SentencePieceModel> m(new SentencePieceModel());
  WireReader top(bytes);
  uint32_t field, wire;
  while (top.Next(field, wire)) {
    absl::string_view sub;
    if (field == 1 && wire == 2) {  // repeated SentencePiece pieces
      if (!top.ReadBytes(sub)) break;
      Piece piece;
      WireReader r(sub);
      uint32_t f, w;
      while (r.Next(f, w)) {
        absl::string_view text;
        uint32_t bits;
        uint64_t v;
        if (f == 1 && w == 2 && r.ReadBytes(text)) {
          piece.text = std::string(text);
        } else if (f == 2 && w == 5 && r.ReadFixed32(bits)) {
          std::memcpy(&piece.score, &bits, 4);
        } else if (f == 3 && w == 0 && r.ReadVarint(v)) {
          if (v < 1 || v > 6) return corrupt(absl::StrCat("piece type ", v));
          piece.type = static_cast<PieceType>(v);
        } else if (!r.Skip(w)) {
          break;
        }
      }
      if (!r.ok()) return corrupt("truncated piece");
      m->pieces_.push_back(std::move(piece));
    } else if (field == 2 && wire == 2) {  // TrainerSpec
      if (!top.ReadBytes(sub)) break;
      WireReader r(sub);
      uint32_t f, w;
      while (r.Next(f, w)) {
        uint64_t v;
        if (f == 3 && w == 0 && r.ReadVarint(v)) {
          if (v != 1 && v != 2) {
            return corrupt(absl::StrCat("model_type ", v, " (only unigram and bpe are supported)"));
          }
          m->algorithm_ = static_cast<Algorithm>(v);
        } else if (!r.Skip(w)) {
          break;
        }
      }
      if (!r.ok()) return corrupt("truncated trainer_spec");
    } else if (field == 3 && wire == 2) {  // NormalizerSpec
      if (!top.ReadBytes(sub)) break;
      WireReader r(sub);
      uint32_t f, w;
      while (r.Next(f, w)) {
        uint64_t v;
        if ((f == 3 || f == 4 || f == 5) && w == 0 && r.ReadVarint(v)) {
          (f == 3   ? m->add_dummy_prefix_
           : f == 4 ? m->remove_extra_whitespaces_
                    : m->escape_whitespaces_) = v != 0;
        } else if (!r.Skip(w)) {
          break;
        }
      }
      if (!r.ok()) return corrupt("truncated normalizer_spec");
    } else if (!top.Skip(wire)) {
      break;
    }
  }
  if (!top.ok()) return corrupt("truncated or corrupt protobuf");
  if (m->pieces_.empty()) return corrupt("no pieces");

  std::fill(std::begin(m->byte_ids_), std::end(m->byte_ids_), -1);
  m->min_score_ = std::numeric_limits<float>::max();
  m->max_score_ = std::numeric_limits<float>::lowest();
  bool has_unk = false;
  for (size_t i = 0; i < m->pieces_.size(); ++i) {
    const Piece& p = m->pieces_[i];
    const int32_t id = static_cast<int32_t>(i);
    switch (p.type) {
      case PieceType::kNormal:
      case PieceType::kUserDefined:
        m->index_.emplace(p.text, id);
        m->max_piece_bytes_ = std::max(m->max_piece_bytes_, p.text.size());
        if (p.type == PieceType::kNormal) {
          m->min_score_ = std::min(m->min_score_, p.score);
          m->max_score_ = std::max(m->max_score_, p.score);
        }
        break;
      case PieceType::kUnknown:
        m->unk_id_ = id;
        has_unk = true;
        break;
      case PieceType::kControl:
        if (p.text == "<s>") m->bos_id_ = id;
        if (p.text == "</s>") m->eos_id_ = id;
        break;
      case PieceType::kByte: {
        // "<0xAB>"
        unsigned value;
        if (p.text.size() == 6 && std::sscanf(p.text.c_str(), "<0x%2X>", &value) == 1) {
          m->byte_ids_[value] = id;
          m->byte_fallback_ = true;
        }
        break;
      }
      case PieceType::kUnused:
        break;
    }
  }
  if (!has_unk) return corrupt("no unknown piece");
  if (m->min_score_ > m->max_score_) m->min_score_ = m->max_score_ = 0.0f;
  return m;
}

std::string SentencePieceModel::Normalize(absl::string_view text) const {
  std::string s(text);
  if (remove_extra_whitespaces_) {
    std::string collapsed;
    bool pending_space = false;
    for (char c : s) {
      if (c == ' ') {
        pending_space = !collapsed.empty();
        continue;
      }
      if (pending_space) collapsed.push_back(' ');
      pending_space = false;
      collapsed.push_back(c);
    }
    s = std::move(collapsed);
  }
  if (s.empty()) return s;
  if (add_dummy_prefix_) s.insert(s.begin(), ' ');
  if (!escape_whitespaces_) return s;
  std::string out;
  for (char c : s) {
    if (c == ' ') {
      out += kSpace;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

void SentencePieceModel::AppendPiece(absl::string_view piece, std::vector<int32_t>& out) const {
  auto it = index_.find(std::string(piece));
  if (it != index_.end()) {
    out.push_back(it->second);
    return;
  }
  if (byte_fallback_) {
    for (unsigned char c : piece) out.push_back(byte_ids_[c] >= 0 ? byte_ids_[c] : unk_id_);
    return;
  }
  // Consecutive unknown characters become a single unk, as SentencePiece does.
  if (out.empty() || out.back() != unk_id_) out.push_back(unk_id_);
}

std::vector<int32_t> SentencePieceModel::EncodeBpe(const std::string& normalized) const {
  // Symbols as a linked list over the text; repeatedly merge the adjacent pair whose union is a
  // piece with the highest score (leftmost on ties).
  struct Symbol {
    size_t begin, len;
    int prev, next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  for (absl::string_view c : SplitChars(normalized)) {
    const int idx = static_cast<int>(symbols.size());
    symbols.push_back(
        {static_cast<size_t>(c.data() - normalized.data()), c.size(), idx - 1, idx + 1, true});
  }
  if (symbols.empty()) return {};
  symbols.back().next = -1;

  struct Candidate {
    float score;
    int left;
    size_t len;  // expected merged length, to detect stale entries
    bool operator<(const Candidate& o) const {
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  std::priority_queue<Candidate> queue;
  auto consider = [&](int left) {
    if (left < 0 || symbols[left].next < 0) return;
    const Symbol& a = symbols[left];
    const Symbol& b = symbols[a.next];
    auto it = index_.find(normalized.substr(a.begin, a.len + b.len));
    if (it == index_.end()) return;
    queue.push({pieces_[it->second].score, left, a.len + b.len});
  };
  for (int i = 0; i + 1 < static_cast<int>(symbols.size()); ++i) consider(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& a = symbols[c.left];
    if (!a.alive || a.next < 0 || a.len + symbols[a.next].len != c.len) continue;  // stale
    Symbol& b = symbols[a.next];
    a.len += b.len;
    b.alive = false;
    a.next = b.next;
    if (a.next >= 0) symbols[a.next].prev = c.left;
    consider(a.prev);
    consider(c.left);
  }
  std::vector<int32_t> out;
  for (int i = 0; i >= 0; i = symbols[i].next) {
    AppendPiece(absl::string_view(normalized).substr(symbols[i].begin, symbols[i].len), out);
  }
  return out;
}

std::vector<int32_t> SentencePieceModel::EncodeUnigram(const std::string& normalized) const {
  // Viterbi over a lattice of candidate pieces. Ties and float rounding are resolved as the
  // reference encoder resolves them (checked by tokenizer_test against spm_encode): every node
  // takes the best of the nodes ending where it begins, scanned in the order they were added (by
  // begin position, then length), the last of equal scores winning, with path scores accumulated
  // in float. An unknown character costs min_score - 10.
  struct Node {
    size_t begin, len;
    float score;
    float path = 0.0f;  // best path score up to and including this node
    int prev = -1;
  };
  const float unk_score = min_score_ - 10.0f;
  const size_t n = normalized.size();
  std::vector<Node> nodes;
  std::vector<std::vector<int>> ending_at(n + 1), starting_at(n + 1);
  for (size_t i = 0; i < n;) {
    const size_t char_len = std::min(Utf8Length(static_cast<unsigned char>(normalized[i])), n - i);
    bool single_char_piece = false;
    for (size_t len = 1; len <= max_piece_bytes_ && i + len <= n; ++len) {
      auto it = index_.find(normalized.substr(i, len));
      if (it == index_.end()) continue;
      const Piece& p = pieces_[it->second];
      // User-defined pieces get a bonus so that they are always chosen.
      const float score = p.type == PieceType::kUserDefined
                              ? static_cast<float>(SplitChars(p.text).size() * max_score_ - 0.1)
                              : p.score;
      starting_at[i].push_back(static_cast<int>(nodes.size()));
      ending_at[i + len].push_back(static_cast<int>(nodes.size()));
      nodes.push_back({i, len, score});
      single_char_piece = single_char_piece || len == char_len;
    }
    if (!single_char_piece) {
      starting_at[i].push_back(static_cast<int>(nodes.size()));
      ending_at[i + char_len].push_back(static_cast<int>(nodes.size()));
      nodes.push_back({i, char_len, unk_score});
    }
    i += char_len;
  }
  auto best_ending_at = [&](size_t pos, float add, float& best_score) {
    int best = -1;
    for (int l : ending_at[pos]) {
      const float score = nodes[l].path + add;
      if (best < 0 || score >= best_score) {
        best = l;
        best_score = score;
      }
    }
    return best;
  };
  for (size_t pos = 0; pos < n; ++pos) {
    for (int r : starting_at[pos]) {
      if (pos == 0) {
        nodes[r].path = 0.0f + nodes[r].score;  // after the begin-of-sentence node
        continue;
      }
      float best_score = 0.0f;
      nodes[r].prev = best_ending_at(pos, nodes[r].score, best_score);
      nodes[r].path = best_score;
    }
  }
  float final_score = 0.0f;
  std::vector<int> path;
  for (int node = best_ending_at(n, 0.0f, final_score); node >= 0; node = nodes[node].prev) {
    path.push_back(node);
  }
  std::vector<int32_t> out;
  for (auto it = path.rbegin(); it != path.rend(); ++it) {
    AppendPiece(absl::string_view(normalized).substr(nodes[*it].begin, nodes[*it].len), out);
  }
  return out;
}

std::vector<int32_t> SentencePieceModel::Encode(absl::string_view text) const {
  const std::string normalized = Normalize(text);
  return algorithm_ == Algorithm::kBpe ? EncodeBpe(normalized) : EncodeUnigram(normalized);
}

std::string SentencePieceModel::Decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    const Piece& p = pieces_[id];
    if (p.type == PieceType::kControl || p.type == PieceType::kUnused) continue;
    if (p.type == PieceType::kByte) {
      for (int b = 0; b < 256; ++b) {
        if (byte_ids_[b] == id) out.push_back(static_cast<char>(b));
      }
      continue;
    }
    if (p.type == PieceType::kUnknown) {
      out += " \xE2\x81\x87 ";  // what SentencePiece prints for unk
      continue;
    }
    out += p.text;
  }
  // Spaces back from U+2581, and the dummy prefix dropped.
  std::string text;
  for (size_t i = 0; i < out.size();) {
    if (out.compare(i, 3, kSpace) == 0) {
      text.push_back(' ');
      i += 3;
    } else {
      text.push_back(out[i++]);
    }
  }
  if (add_dummy_prefix_ && !text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

}  // namespace squeeze
