#include "common/model/hf_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/base/file_util.h"
#include "common/base/status_macros.h"

namespace squeeze {
namespace {

using json = nlohmann::json;

// The regex the ByteLevel pre-tokenizer uses with use_regex (GPT-2's).
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// A PCRE2 pattern, compiled once with UTF, Unicode properties and the JIT.
class Regex {
 public:
  static absl::StatusOr<std::shared_ptr<const Regex>> Compile(const std::string& pattern,
                                                              bool literal,
                                                              const std::string& where) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    // A literal takes no UCP (PCRE2 refuses the combination); it needs none.
    const uint32_t flags = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     flags, &error, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return absl::InvalidArgumentError(absl::StrCat(where, ": the regex \"", pattern,
                                                     "\" does not compile at offset ", offset, ": ",
                                                     reinterpret_cast<char*>(message)));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if unavailable
    return std::shared_ptr<const Regex>(new Regex(code));
  }
  ~Regex() { pcre2_code_free(code_); }

  // [start, end) of every match in `text`, left to right. Text that is not UTF-8 has none.
  std::vector<std::pair<size_t, size_t>> Matches(absl::string_view text) const {
    std::vector<std::pair<size_t, size_t>> out;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t pos = 0;
    uint32_t options = 0;
    while (pos <= text.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos,
                                 options, md, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t start = ov[0], end = ov[1];
      if (end > start) {
        out.emplace_back(start, end);
        pos = end;
      } else {
        // An empty match: step over one character.
        if (start >= text.size()) break;
        pos = start + 1;
        while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
      }
      options = PCRE2_NO_UTF_CHECK;  // checked on the first call
    }
    pcre2_match_data_free(md);
    return out;
  }

  std::string ReplaceAll(absl::string_view text, absl::string_view content) const {
    std::string out;
    size_t last = 0;
    for (auto [s, e] : Matches(text)) {
      absl::StrAppend(&out, text.substr(last, s - last));
      absl::StrAppend(&out, content);
      last = e;
    }
    absl::StrAppend(&out, text.substr(last));
    return out;
  }

 private:
  explicit Regex(pcre2_code* code) : code_(code) {}
  pcre2_code* code_;
};

// The pattern of a Split or Replace: {"Regex": "..."} or {"String": "..."}.
absl::StatusOr<std::shared_ptr<const Regex>> PatternOf(const json& node, const std::string& where) {
  if (node.is_object() && node.contains("Regex") && node["Regex"].is_string())
    return Regex::Compile(node["Regex"].get<std::string>(), false, where);
  if (node.is_object() && node.contains("String") && node["String"].is_string())
    return Regex::Compile(node["String"].get<std::string>(), true, where);
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": expected a pattern {Regex} or {String}"));
}

// GPT-2's map of bytes to printable characters: the ByteLevel alphabet.
struct ByteAlphabet {
  std::string encode[256];                        // byte -> UTF-8 of its character
  absl::flat_hash_map<uint32_t, uint8_t> decode;  // code point -> byte
  ByteAlphabet() {
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      const uint32_t cp = printable ? b : next++;
      utf8proc_uint8_t buf[4];
      const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
      encode[b].assign(reinterpret_cast<char*>(buf), n);
      decode[cp] = static_cast<uint8_t>(b);
    }
  }
};

const ByteAlphabet& Alphabet() {
  static const ByteAlphabet* alphabet = new ByteAlphabet();
  return *alphabet;
}

// The UTF-8 characters of `s` (invalid bytes one each).
std::vector<absl::string_view> Chars(absl::string_view s) {
  std::vector<absl::string_view> out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    n = std::min(n, s.size() - i);
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

// ---- normalizers ----------------------------------------------------------------------------

using Normalizer = std::function<std::string(std::string)>;

absl::StatusOr<Normalizer> MakeNormalizer(const json& node, const std::string& where) {
  if (node.is_null()) return Normalizer([](std::string s) { return s; });
  const std::string type = node.value("type", "");
  if (type == "Sequence") {
    std::vector<Normalizer> parts;
    const json& list = node.value("normalizers", json::array());
    for (size_t i = 0; i < list.size(); ++i) {
      auto n = MakeNormalizer(list[i], absl::StrCat(where, ".normalizers[", i, "]"));
      if (!n.ok()) return n.status();
      parts.push_back(*std::move(n));
    }
    return Normalizer([parts](std::string s) {
      for (const Normalizer& n : parts) s = n(std::move(s));
      return s;
    });
  }
  if (type == "NFC") {
    return Normalizer([](std::string s) {
      utf8proc_uint8_t* out = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(s.c_str()));
      if (out == nullptr) return s;  // not UTF-8: left as it is
      std::string r(reinterpret_cast<char*>(out));
      std::free(out);
      return r;
    });
  }
  if (type == "Prepend") {
    const std::string prepend = node.value("prepend", "");
    return Normalizer([prepend](std::string s) { return s.empty() ? s : prepend + s; });
  }
  if (type == "Replace") {
    auto pattern = PatternOf(node.value("pattern", json()), where + ".pattern");
    if (!pattern.ok()) return pattern.status();
    const std::string content = node.value("content", "");
    std::shared_ptr<const Regex> re = *pattern;
    return Normalizer([re, content](std::string s) { return re->ReplaceAll(s, content); });
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": normalizer \"", type,
                   "\" is not supported (NFC, Prepend, Replace and Sequence are)"));
}

// ---- pre-tokenizers -------------------------------------------------------------------------

// Pieces of one segment of text; `first` is whether the segment starts the input.
using PreTokenizer = std::function<std::vector<std::string>(std::vector<std::string>, bool first)>;

enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };

std::vector<std::string> SplitPiece(const std::string& piece, const Regex& re,
                                    SplitBehavior behavior, bool invert) {
  // The piece as alternating runs: (text, is_match).
  std::vector<std::pair<std::string, bool>> runs;
  size_t last = 0;
  for (auto [s, e] : re.Matches(piece)) {
    if (s > last) runs.emplace_back(piece.substr(last, s - last), invert);
    runs.emplace_back(piece.substr(s, e - s), !invert);
    last = e;
  }
  if (last < piece.size()) runs.emplace_back(piece.substr(last), invert);
  std::vector<std::string> out;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (auto& [t, m] : runs) out.push_back(std::move(t));
      break;
    case SplitBehavior::kRemoved:
      for (auto& [t, m] : runs)
        if (!m) out.push_back(std::move(t));
      break;
    case SplitBehavior::kMergedWithPrevious:
      for (auto& [t, m] : runs) {
        if (m && !out.empty()) {
          out.back() += t;
        } else {
          out.push_back(std::move(t));
        }
      }
      break;
    case SplitBehavior::kMergedWithNext: {
      std::string pending;
      for (auto& [t, m] : runs) {
        if (m) {
          pending += t;
        } else {
          out.push_back(pending + t);
          pending.clear();
        }
      }
      if (!pending.empty()) out.push_back(pending);
      break;
    }
    case SplitBehavior::kContiguous: {
      bool last_match = false;
      for (auto& [t, m] : runs) {
        if (m && last_match && !out.empty()) {
          out.back() += t;
        } else {
          out.push_back(std::move(t));
        }
        last_match = m;
      }
      break;
    }
  }
  return out;
}

absl::StatusOr<PreTokenizer> MakePreTokenizer(const json& node, const std::string& where) {
  if (node.is_null()) return PreTokenizer([](std::vector<std::string> p, bool) { return p; });
  const std::string type = node.value("type", "");
  if (type == "Sequence") {
    std::vector<PreTokenizer> parts;
    const json& list = node.value("pretokenizers", json::array());
    for (size_t i = 0; i < list.size(); ++i) {
      auto p = MakePreTokenizer(list[i], absl::StrCat(where, ".pretokenizers[", i, "]"));
      if (!p.ok()) return p.status();
      parts.push_back(*std::move(p));
    }
    return PreTokenizer([parts](std::vector<std::string> pieces, bool first) {
      for (const PreTokenizer& p : parts) pieces = p(std::move(pieces), first);
      return pieces;
    });
  }
  if (type == "Split" || type == "Digits") {
    std::shared_ptr<const Regex> re;
    SplitBehavior behavior = SplitBehavior::kIsolated;
    bool invert = false;
    if (type == "Digits") {
      auto compiled =
          Regex::Compile(node.value("individual_digits", false) ? "[0-9]" : "[0-9]+", false, where);
      if (!compiled.ok()) return compiled.status();
      re = *compiled;
    } else {
      auto compiled = PatternOf(node.value("pattern", json()), where + ".pattern");
      if (!compiled.ok()) return compiled.status();
      re = *compiled;
      invert = node.value("invert", false);
      const std::string b = node.value("behavior", "Isolated");
      if (b == "Isolated") {
        behavior = SplitBehavior::kIsolated;
      } else if (b == "Removed") {
        behavior = SplitBehavior::kRemoved;
      } else if (b == "MergedWithPrevious") {
        behavior = SplitBehavior::kMergedWithPrevious;
      } else if (b == "MergedWithNext") {
        behavior = SplitBehavior::kMergedWithNext;
      } else if (b == "Contiguous") {
        behavior = SplitBehavior::kContiguous;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": unknown split behavior \"", b, "\""));
      }
    }
    return PreTokenizer([re, behavior, invert](std::vector<std::string> pieces, bool) {
      std::vector<std::string> out;
      for (const std::string& p : pieces) {
        for (std::string& s : SplitPiece(p, *re, behavior, invert))
          if (!s.empty()) out.push_back(std::move(s));
      }
      return out;
    });
  }
  if (type == "ByteLevel") {
    const bool add_prefix_space = node.value("add_prefix_space", true);
    std::shared_ptr<const Regex> re;
    if (node.value("use_regex", true)) {
      auto compiled = Regex::Compile(kGpt2Pattern, false, where);
      if (!compiled.ok()) return compiled.status();
      re = *compiled;
    }
    return PreTokenizer([re, add_prefix_space](std::vector<std::string> pieces, bool) {
      const ByteAlphabet& alphabet = Alphabet();
      std::vector<std::string> out;
      for (std::string& p : pieces) {
        if (add_prefix_space && (p.empty() || p[0] != ' ')) p.insert(0, " ");
        std::vector<std::string> split;
        if (re) {
          split = SplitPiece(p, *re, SplitBehavior::kIsolated, false);
        } else {
          split.push_back(std::move(p));
        }
        for (const std::string& s : split) {
          if (s.empty()) continue;
          std::string mapped;
          mapped.reserve(s.size() * 2);
          for (unsigned char c : s) mapped += alphabet.encode[c];
          out.push_back(std::move(mapped));
        }
      }
      return out;
    });
  }
  if (type == "Metaspace") {
    const std::string replacement = node.value("replacement", "\xE2\x96\x81");  // U+2581
    std::string scheme = node.value("prepend_scheme", "");
    if (scheme.empty()) scheme = node.value("add_prefix_space", true) ? "always" : "never";
    if (scheme != "always" && scheme != "first" && scheme != "never")
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": prepend_scheme \"", scheme, "\" is not always, first or never"));
    const bool split = node.value("split", true);
    auto compiled = Regex::Compile(replacement, true, where);
    if (!compiled.ok()) return compiled.status();
    std::shared_ptr<const Regex> re = *compiled;
    return PreTokenizer([=](std::vector<std::string> pieces, bool first) {
      std::vector<std::string> out;
      for (size_t i = 0; i < pieces.size(); ++i) {
        std::string p = absl::StrReplaceAll(pieces[i], {{" ", replacement}});
        const bool prepend = scheme == "always" || (scheme == "first" && first && i == 0);
        if (prepend && !absl::StartsWith(p, replacement)) p.insert(0, replacement);
        if (!split) {
          out.push_back(std::move(p));
          continue;
        }
        for (std::string& s : SplitPiece(p, *re, SplitBehavior::kMergedWithNext, false))
          if (!s.empty()) out.push_back(std::move(s));
      }
      return out;
    });
  }
  return absl::InvalidArgumentError(
      absl::StrCat(where, ": pre-tokenizer \"", type,
                   "\" is not supported (Split, ByteLevel, Metaspace, Digits and Sequence are)"));
}

// ---- decoders -------------------------------------------------------------------------------

using Decoder = std::function<std::vector<std::string>(std::vector<std::string>)>;

std::string StripChars(const std::string& s, const std::string& content, int64_t start,
                       int64_t stop) {
  std::vector<absl::string_view> chars = Chars(s);
  size_t b = 0, e = chars.size();
  for (int64_t i = 0; i < start && b < e && chars[b] == content; ++i) ++b;
  for (int64_t i = 0; i < stop && e > b && chars[e - 1] == content; ++i) --e;
  std::string out;
  for (size_t i = b; i < e; ++i) absl::StrAppend(&out, chars[i]);
  return out;
}

absl::StatusOr<Decoder> MakeDecoder(const json& node, const std::string& where) {
  if (node.is_null()) {
    return Decoder([](std::vector<std::string> t) {
      std::string joined;
      for (const std::string& s : t) joined += s;
      return std::vector<std::string>{joined};
    });
  }
  const std::string type = node.value("type", "");
  if (type == "Sequence") {
    std::vector<Decoder> parts;
    const json& list = node.value("decoders", json::array());
    for (size_t i = 0; i < list.size(); ++i) {
      auto d = MakeDecoder(list[i], absl::StrCat(where, ".decoders[", i, "]"));
      if (!d.ok()) return d.status();
      parts.push_back(*std::move(d));
    }
    return Decoder([parts](std::vector<std::string> t) {
      for (const Decoder& d : parts) t = d(std::move(t));
      return t;
    });
  }
  if (type == "ByteLevel") {
    return Decoder([](std::vector<std::string> tokens) {
      const ByteAlphabet& alphabet = Alphabet();
      std::string bytes;
      for (const std::string& t : tokens) {
        for (absl::string_view c : Chars(t)) {
          utf8proc_int32_t cp = -1;
          utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(c.data()), c.size(), &cp);
          auto it = alphabet.decode.find(static_cast<uint32_t>(cp));
          if (it != alphabet.decode.end()) {
            bytes.push_back(static_cast<char>(it->second));
          } else {
            absl::StrAppend(&bytes, c);
          }
        }
      }
      return std::vector<std::string>{bytes};
    });
  }
  if (type == "Metaspace") {
    const std::string replacement = node.value("replacement", "\xE2\x96\x81");
    std::string scheme = node.value("prepend_scheme", "");
    if (scheme.empty()) scheme = node.value("add_prefix_space", true) ? "always" : "never";
    return Decoder([replacement, scheme](std::vector<std::string> tokens) {
      for (size_t i = 0; i < tokens.size(); ++i) {
        tokens[i] = absl::StrReplaceAll(tokens[i], {{replacement, " "}});
        if (i == 0 && scheme != "never" && absl::StartsWith(tokens[i], " ")) tokens[i].erase(0, 1);
      }
      return tokens;
    });
  }
  if (type == "Replace") {
    auto pattern = PatternOf(node.value("pattern", json()), where + ".pattern");
    if (!pattern.ok()) return pattern.status();
    std::shared_ptr<const Regex> re = *pattern;
    const std::string content = node.value("content", "");
    return Decoder([re, content](std::vector<std::string> tokens) {
      for (std::string& t : tokens) t = re->ReplaceAll(t, content);
      return tokens;
    });
  }
  if (type == "ByteFallback") {
    return Decoder([](std::vector<std::string> tokens) {
      std::vector<std::string> out;
      std::string bytes;
      auto flush = [&] {
        if (bytes.empty()) return;
        // Bytes that do not form UTF-8 become U+FFFD, as the reference does.
        utf8proc_uint8_t* valid = nullptr;
        if (utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(bytes.data()), bytes.size(),
                         &valid, UTF8PROC_STABLE) >= 0) {
          out.emplace_back(reinterpret_cast<char*>(valid));
          std::free(valid);
        } else {
          out.emplace_back("\xEF\xBF\xBD");
        }
        bytes.clear();
      };
      for (const std::string& t : tokens) {
        int value = 0;
        if (t.size() == 6 && absl::StartsWith(t, "<0x") && t[5] == '>' &&
            std::sscanf(t.c_str() + 3, "%2x", &value) == 1) {
          bytes.push_back(static_cast<char>(value));
          continue;
        }
        flush();
        out.push_back(t);
      }
      flush();
      return out;
    });
  }
  if (type == "Fuse") {
    return Decoder([](std::vector<std::string> tokens) {
      std::string joined;
      for (const std::string& s : tokens) joined += s;
      return std::vector<std::string>{joined};
    });
  }
  if (type == "Strip") {
    const std::string content = node.value("content", " ");
    const int64_t start = node.value("start", int64_t{0}), stop = node.value("stop", int64_t{0});
    return Decoder([content, start, stop](std::vector<std::string> tokens) {
      for (std::string& t : tokens) t = StripChars(t, content, start, stop);
      return tokens;
    });
  }
  return absl::InvalidArgumentError(absl::StrCat(
      where, ": decoder \"", type,
      "\" is not supported (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip and "
      "Sequence are)"));
}

// ---- the tokenizer --------------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool lstrip = false;
  bool rstrip = false;
};

struct PairHash {
  size_t operator()(const std::pair<int32_t, int32_t>& p) const {
    return std::hash<uint64_t>()((static_cast<uint64_t>(static_cast<uint32_t>(p.first)) << 32) |
                                 static_cast<uint32_t>(p.second));
  }
};

class HfTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> Encode(absl::string_view text) const override {
    std::vector<int32_t> ids;
    bool first = true;
    for (const auto& [segment, added] : SplitAdded(text)) {
      if (added >= 0) {
        ids.push_back(added);
        first = false;
        continue;
      }
      std::vector<std::string> pieces = pre_tokenizer_({normalizer_(std::string(segment))}, first);
      first = false;
      for (const std::string& piece : pieces) EncodeWord(piece, ids);
    }
    return ids;
  }

  std::string Decode(const std::vector<int32_t>& ids) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
      if (id >= 0 && static_cast<size_t>(id) < id_to_token_.size())
        tokens.push_back(id_to_token_[id]);
    }
    std::string out;
    for (const std::string& s : decoder_(std::move(tokens))) out += s;
    return out;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }

  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path,
                                                         const std::string& config_path);

 private:
  // The text cut into runs of plain text (id -1) and added tokens (their id), leftmost-longest.
  std::vector<std::pair<absl::string_view, int32_t>> SplitAdded(absl::string_view text) const {
    std::vector<std::pair<absl::string_view, int32_t>> out;
    if (added_.empty()) {
      out.emplace_back(text, -1);
      return out;
    }
    size_t plain = 0, i = 0;
    while (i < text.size()) {
      const AddedToken* best = nullptr;
      auto it = added_by_first_byte_.find(static_cast<unsigned char>(text[i]));
      if (it != added_by_first_byte_.end()) {
        for (const AddedToken* a : it->second) {  // longest first
          if (text.compare(i, a->content.size(), a->content) == 0) {
            best = a;
            break;
          }
        }
      }
      if (best == nullptr) {
        ++i;
        continue;
      }
      size_t before_end = i, after = i + best->content.size();
      if (best->lstrip)
        while (before_end > plain && std::isspace(static_cast<unsigned char>(text[before_end - 1])))
          --before_end;
      if (best->rstrip)
        while (after < text.size() && std::isspace(static_cast<unsigned char>(text[after])))
          ++after;
      if (before_end > plain) out.emplace_back(text.substr(plain, before_end - plain), -1);
      out.emplace_back(text.substr(i, best->content.size()), best->id);
      plain = i = after;
    }
    if (plain < text.size()) out.emplace_back(text.substr(plain), -1);
    return out;
  }

  void EncodeWord(const std::string& word, std::vector<int32_t>& ids) const {
    if (ignore_merges_) {
      auto it = vocab_.find(word);
      if (it != vocab_.end()) {
        ids.push_back(it->second);
        return;
      }
    }
    {
      absl::MutexLock lock(&cache_mu_);
      auto it = cache_.find(word);
      if (it != cache_.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> symbols;
    for (absl::string_view c : Chars(word)) {
      auto it = vocab_.find(std::string(c));
      if (it != vocab_.end()) {
        symbols.push_back(it->second);
      } else if (byte_fallback_) {
        for (unsigned char b : c) symbols.push_back(byte_ids_[b]);
      } else if (unk_ >= 0) {
        if (!(fuse_unk_ && !symbols.empty() && symbols.back() == unk_)) symbols.push_back(unk_);
      }
    }
    // Merge the adjacent pair of lowest rank (leftmost first) until none merges.
    while (symbols.size() > 1) {
      int32_t best_rank = std::numeric_limits<int32_t>::max();
      size_t best = 0;
      int32_t merged = -1;
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        auto it = merges_.find({symbols[i], symbols[i + 1]});
        if (it != merges_.end() && it->second.first < best_rank) {
          best_rank = it->second.first;
          best = i;
          merged = it->second.second;
        }
      }
      if (merged < 0) break;
      symbols[best] = merged;
      symbols.erase(symbols.begin() + best + 1);
    }
    ids.insert(ids.end(), symbols.begin(), symbols.end());
    absl::MutexLock lock(&cache_mu_);
    if (cache_.size() > 500000) cache_.clear();  // bounded: a corpus of unique words
    cache_.emplace(word, std::move(symbols));
  }

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<std::pair<int32_t, int32_t>, std::pair<int32_t, int32_t>, PairHash>
      merges_;  // (a, b) -> (rank, merged id)
  std::vector<AddedToken> added_;
  absl::flat_hash_map<unsigned char, std::vector<const AddedToken*>> added_by_first_byte_;
  int32_t byte_ids_[256] = {};
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  bool fuse_unk_ = false;
  int32_t unk_ = -1;
  int32_t bos_ = -1;
  int32_t eos_ = -1;
  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  Decoder decoder_;
  mutable absl::Mutex cache_mu_;
  mutable absl::flat_hash_map<std::string, std::vector<int32_t>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

absl::StatusOr<json> ReadJson(const std::string& path) {
  SQ_ASSIGN_OR_RETURN(const std::string text, ReadFileToString(path, kMaxTokenizerJsonBytes));
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  return j;
}

// A token named in tokenizer_config.json: a string or {"content": ...}.
std::string TokenContent(const json& node) {
  if (node.is_string()) return node.get<std::string>();
  if (node.is_object()) return node.value("content", "");
  return "";
}

absl::StatusOr<std::unique_ptr<Tokenizer>> HfTokenizer::Load(const std::string& path,
                                                             const std::string& config_path) {
  auto parsed = ReadJson(path);
  if (!parsed.ok()) return parsed.status();
  const json& j = *parsed;
  if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, ": no \"model\" object"));
  const json& model = j["model"];
  const std::string type = model.value("type", "BPE");
  if (type != "BPE")
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": model.type \"", type,
                     "\" is not supported (BPE is; Unigram and WordPiece are not)"));
  if (!model.contains("vocab") || !model["vocab"].is_object())
    return absl::InvalidArgumentError(absl::StrCat(path, ": model.vocab: expected an object"));
  for (const char* unsupported : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(unsupported) && !model[unsupported].is_null() &&
        !(model[unsupported].is_string() && model[unsupported].get<std::string>().empty()))
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": model.", unsupported, " is not supported"));
  }
  if (model.contains("dropout") && model["dropout"].is_number() &&
      model["dropout"].get<double>() > 0)
    return absl::InvalidArgumentError(absl::StrCat(path, ": model.dropout is not supported"));

  auto t = std::unique_ptr<HfTokenizer>(new HfTokenizer());
  int32_t max_id = -1;
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 30))
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": model.vocab[\"", token, "\"]: expected an id"));
    t->vocab_[token] = id.get<int32_t>();
    max_id = std::max(max_id, id.get<int32_t>());
  }
  std::vector<AddedToken> added;
  for (const json& a : j.value("added_tokens", json::array())) {
    AddedToken tok;
    tok.content = a.value("content", "");
    tok.id = a.value("id", -1);
    tok.lstrip = a.value("lstrip", false);
    tok.rstrip = a.value("rstrip", false);
    if (tok.content.empty() || tok.id < 0)
      return absl::InvalidArgumentError(absl::StrCat(path,
                                                     ": added_tokens: an entry without "
                                                     "content or id"));
    max_id = std::max(max_id, tok.id);
    added.push_back(std::move(tok));
  }
  t->id_to_token_.assign(static_cast<size_t>(max_id + 1), "");
  for (const auto& [token, id] : t->vocab_) t->id_to_token_[id] = token;
  for (const AddedToken& a : added) t->id_to_token_[a.id] = a.content;
  t->added_ = std::move(added);
  for (const AddedToken& a : t->added_)
    t->added_by_first_byte_[static_cast<unsigned char>(a.content[0])].push_back(&a);
  for (auto& [b, list] : t->added_by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [](const AddedToken* x, const AddedToken* y) {
      return x->content.size() > y->content.size();
    });
  }

  // Merges: "a b" strings (older files) or [a, b] pairs.
  const json& merges = model.value("merges", json::array());
  t->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    std::string a, b;
    const json& m = merges[rank];
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ', 1);
      if (space == std::string::npos)
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": model.merges[", rank, "]: expected \"a b\""));
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": model.merges[", rank, "]: expected \"a b\" or [a, b]"));
    }
    auto ia = t->vocab_.find(a), ib = t->vocab_.find(b), iab = t->vocab_.find(a + b);
    if (ia == t->vocab_.end() || ib == t->vocab_.end() || iab == t->vocab_.end())
      return absl::InvalidArgumentError(absl::StrCat(path, ": model.merges[", rank, "]: \"", a,
                                                     "\" + \"", b, "\" is not in the vocabulary"));
    t->merges_.emplace(std::make_pair(ia->second, ib->second),
                       std::make_pair(static_cast<int32_t>(rank), iab->second));
  }
  t->byte_fallback_ = model.value("byte_fallback", false);
  if (t->byte_fallback_) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      auto it = t->vocab_.find(name);
      if (it == t->vocab_.end())
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": model.byte_fallback is set but ", name, " is not a token"));
      t->byte_ids_[b] = it->second;
    }
  }
  t->ignore_merges_ = model.value("ignore_merges", false);
  t->fuse_unk_ = model.value("fuse_unk", false);
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = t->vocab_.find(model["unk_token"].get<std::string>());
    if (it != t->vocab_.end()) t->unk_ = it->second;
  }

  auto normalizer = MakeNormalizer(j.value("normalizer", json()), path + ": normalizer");
  if (!normalizer.ok()) return normalizer.status();
  t->normalizer_ = *std::move(normalizer);
  auto pre = MakePreTokenizer(j.value("pre_tokenizer", json()), path + ": pre_tokenizer");
  if (!pre.ok()) return pre.status();
  t->pre_tokenizer_ = *std::move(pre);
  auto decoder = MakeDecoder(j.value("decoder", json()), path + ": decoder");
  if (!decoder.ok()) return decoder.status();
  t->decoder_ = *std::move(decoder);

  if (!config_path.empty()) {
    if (auto config = ReadJson(config_path); config.ok() && config->is_object()) {
      auto id_of = [&](const std::string& content) -> int32_t {
        if (content.empty()) return -1;
        for (const AddedToken& a : t->added_)
          if (a.content == content) return a.id;
        auto it = t->vocab_.find(content);
        return it == t->vocab_.end() ? -1 : it->second;
      };
      t->bos_ = id_of(TokenContent(config->value("bos_token", json())));
      t->eos_ = id_of(TokenContent(config->value("eos_token", json())));
    } else if (!config.ok() && config.status().code() != absl::StatusCode::kNotFound) {
      return config.status();
    }
  }
  return std::unique_ptr<Tokenizer>(std::move(t));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(
    const std::string& tokenizer_json, const std::string& tokenizer_config_json) {
  return HfTokenizer::Load(tokenizer_json, tokenizer_config_json);
}

}  // namespace squeeze
