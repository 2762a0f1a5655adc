// Multiple-choice tasks in JSON Lines, one question a line:
//   {"context": "...", "choices": ["...", ...], "label": 1, "category": "..."}
// The model is scored by the log-likelihood of each choice given the context (evaluate stage).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/llama_config.h"
#include "common/model/tokenizer.h"

namespace squeeze {

struct ChoiceQuestion {
  std::vector<int32_t> context;               // bos first, when the tokenizer has one
  std::vector<std::vector<int32_t>> choices;  // each choice's ids, encoded on its own
  std::vector<int64_t> choice_bytes;          // UTF-8 length of each choice, for acc_norm
  int64_t label = 0;
  std::string category;  // "" when the line has none
};

// A question's line may hold at most this many bytes.
inline constexpr int64_t kMaxChoiceLineBytes = int64_t{16} << 20;

// Errors name the file and line: "tasks.jsonl:7: label 4 is out of range for 3 choices". A
// question needs a context, at least two non-empty choices and a label among them; ids must be
// below `vocab_size` when it is positive.
absl::StatusOr<std::vector<ChoiceQuestion>> LoadChoiceTasks(const std::string& path,
                                                            const Tokenizer& tokenizer,
                                                            int64_t vocab_size);

// With the tokenizer of the model in `model_dir`.
absl::StatusOr<std::vector<ChoiceQuestion>> LoadChoiceTasksForModel(const std::string& model_dir,
                                                                    const LlamaConfig& config,
                                                                    const std::string& path);

}  // namespace squeeze
