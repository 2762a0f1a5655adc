// Calibration and evaluation data: JSON Lines, one example per line, with either "text" (tokenized
// with the model's tokenizer) or "input_ids" (already tokenized), and an optional "category".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/tokenizer.h"

namespace squeeze {

struct TextExample {
  std::vector<int32_t> ids;
  std::string category;  // "" when the line has none
};

struct TextDatasetOptions {
  // Prepends the tokenizer's bos id to text examples (input_ids are taken as they are).
  bool add_bos = true;
  // When > 0, every id must be below it.
  int64_t vocab_size = 0;
  // A longer line is an error naming it: a file without newlines is never read whole.
  int64_t max_line_bytes = int64_t{16} << 20;
};

// Reads a JSON Lines file. Blank lines are skipped. Errors name the file, the line number and the
// field: "eval.jsonl:12: field \"text\": expected a string".
absl::StatusOr<std::vector<TextExample>> LoadTextDataset(const std::string& path,
                                                         const Tokenizer* tokenizer,
                                                         const TextDatasetOptions& options = {});

// A data file tokenized with the tokenizer of the model in `model_dir` (input_ids only when the
// model has none), ids checked against the model's vocabulary.
absl::StatusOr<std::vector<TextExample>> LoadTextDatasetForModel(const std::string& model_dir,
                                                                 const LlamaConfig& config,
                                                                 const std::string& path);

}  // namespace squeeze
