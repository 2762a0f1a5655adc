// Text continuation with a key/value cache: the prompt runs once (prefill), then one token per
// step attends to the cached keys and values of everything before it. Greedy when the
// temperature is 0; otherwise sampling from the temperature-scaled distribution cut to its
// top-p nucleus, with a seeded generator so a run can be repeated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/llama_model.h"
#include "common/model/tokenizer.h"

namespace squeeze {

struct GenerationOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0: greedy (argmax)
  double top_p = 1.0;        // (0, 1]: the smallest set of tokens holding this much probability
  uint64_t seed = 0;
  std::vector<int32_t> stop_ids;  // generation ends after one of these (eos)
};

struct Generation {
  std::vector<int32_t> tokens;  // the new tokens only
  std::string stop_reason;      // "stop token" or "max_new_tokens"
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;  // for tokens.size() - 1 cached steps
};

// InvalidArgument for an empty prompt, ids outside the vocabulary, or options out of range.
absl::StatusOr<Generation> Generate(const LlamaModel& model, const std::vector<int32_t>& prompt,
                                    const GenerationOptions& options);

// `prompt` as text through `tokenizer` (bos first when it has one, stopping at its eos): the
// completion's text without the eos, and the generation behind it.
struct TextGeneration {
  std::string completion;
  int64_t prompt_tokens = 0;
  Generation generation;
};
absl::StatusOr<TextGeneration> GenerateText(const LlamaModel& model, const Tokenizer& tokenizer,
                                            const std::string& prompt, GenerationOptions options);

// The index of the token to emit from `logits` [vocab] (any dtype, any device): argmax when
// `temperature` is 0, else a draw from the top-p nucleus of softmax(logits / temperature) using
// `uniform` in [0, 1).
int64_t PickToken(const at::Tensor& logits, double temperature, double top_p, double uniform);

}  // namespace squeeze
