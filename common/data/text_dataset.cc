#include "common/data/text_dataset.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/base/file_util.h"
#include "common/base/line_reader.h"
#include "common/base/status_macros.h"

namespace squeeze {

absl::StatusOr<std::vector<TextExample>> LoadTextDataset(const std::string& path,
                                                         const Tokenizer* tokenizer,
                                                         const TextDatasetOptions& options) {
  if (auto s = CheckRegularFile(path); !s.ok()) return s;  // a FIFO would block the read
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<TextExample> out;
  std::string line;
  BoundedLineReader reader(in, path, options.max_line_bytes);
  auto error = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", reader.line_number(), ": ", what));
  };
  for (;;) {
    SQ_ASSIGN_OR_RETURN(const bool more, reader.Next(&line));
    if (!more) break;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return error("not valid JSON");
    if (!j.is_object()) return error("expected a JSON object");
    TextExample ex;
    if (auto it = j.find("category"); it != j.end() && !it->is_null()) {
      if (!it->is_string()) return error("field \"category\": expected a string");
      ex.category = it->get<std::string>();
    }
    const auto text = j.find("text");
    const auto ids = j.find("input_ids");
    if ((text == j.end()) == (ids == j.end())) {
      return error("expected exactly one of the fields \"text\" and \"input_ids\"");
    }
    if (text != j.end()) {
      if (!text->is_string()) return error("field \"text\": expected a string");
      if (tokenizer == nullptr) {
        return error("field \"text\": the model has no tokenizer; give \"input_ids\" instead");
      }
      if (options.add_bos && tokenizer->bos_id() >= 0) ex.ids.push_back(tokenizer->bos_id());
      const auto encoded = tokenizer->Encode(text->get<std::string>());
      ex.ids.insert(ex.ids.end(), encoded.begin(), encoded.end());
    } else {
      if (!ids->is_array()) return error("field \"input_ids\": expected a list of integers");
      for (const auto& v : *ids) {
        if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
            v.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
          return error("field \"input_ids\": expected a list of non-negative integers");
        }
        ex.ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
      }
    }
    if (options.vocab_size > 0) {
      for (int32_t id : ex.ids) {
        if (id >= options.vocab_size) {
          return error(absl::StrCat("token id ", id, " is outside the model's vocabulary of ",
                                    options.vocab_size));
        }
      }
    }
    if (ex.ids.size() < 2) continue;  // nothing to predict
    out.push_back(std::move(ex));
  }
  if (out.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no examples with at least 2 tokens"));
  }
  return out;
}

absl::StatusOr<std::vector<TextExample>> LoadTextDatasetForModel(const std::string& model_dir,
                                                                 const LlamaConfig& config,
                                                                 const std::string& path) {
  auto tokenizer = LoadTokenizer(model_dir, config);
  if (!tokenizer.ok() && tokenizer.status().code() != absl::StatusCode::kNotFound) {
    return tokenizer.status();
  }
  TextDatasetOptions options;
  options.vocab_size = config.vocab_size;
  return LoadTextDataset(path, tokenizer.ok() ? tokenizer->get() : nullptr, options);
}

}  // namespace squeeze
