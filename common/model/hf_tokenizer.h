// Hugging Face `tokenizer.json` (the "fast" tokenizers' format), for BPE models: byte-level ones
// (Llama 3, Qwen2/3, GPT-2 style) and those with Metaspace and byte fallback (Mistral, Gemma and
// Llama 2 style). Read: normalizers (NFC, Prepend, Replace, Sequence), pre-tokenizers (Split with
// the model's regex, ByteLevel, Metaspace, Digits, Sequence), added and special tokens, the BPE
// model (merges, ignore_merges, byte_fallback, unk) and decoders (ByteLevel, Metaspace, Replace,
// ByteFallback, Fuse, Strip, Sequence). Regexes run on PCRE2 (UTF and Unicode properties, JIT);
// NFC comes from utf8proc. Anything else is refused at load, naming the component.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/model/tokenizer.h"

namespace squeeze {

// The largest tokenizer.json read (Gemma 3's, among the largest, is about 33 MB).
inline constexpr int64_t kMaxTokenizerJsonBytes = int64_t{64} << 20;

// Loads `tokenizer_json`; bos and eos come from `tokenizer_config_json` (bos_token, eos_token)
// when it is given and exists.
absl::StatusOr<std::unique_ptr<Tokenizer>> LoadHfTokenizer(
    const std::string& tokenizer_json, const std::string& tokenizer_config_json = "");

}  // namespace squeeze
