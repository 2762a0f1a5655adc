#include "common/data/choice_tasks.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/base/line_reader.h"
#include "common/base/status_macros.h"

namespace squeeze {

absl::StatusOr<std::vector<ChoiceQuestion>> LoadChoiceTasks(const std::string& path,
                                                            const Tokenizer& tokenizer,
                                                            int64_t vocab_size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::vector<ChoiceQuestion> out;
  BoundedLineReader reader(in, path, kMaxChoiceLineBytes);
  std::string line;
  for (;;) {
    SQ_ASSIGN_OR_RETURN(const bool more, reader.Next(&line));
    if (!more) break;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto error = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", reader.line_number(), ": ", what));
    };
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object()) return error("not a JSON object");
    if (!j.contains("context") || !j["context"].is_string())
      return error("field \"context\": expected a string");
    if (!j.contains("choices") || !j["choices"].is_array())
      return error("field \"choices\": expected a list of strings");
    if (j["choices"].size() < 2)
      return error(absl::StrCat("field \"choices\": expected at least 2 choices, got ",
                                j["choices"].size()));
    if (!j.contains("label") || !j["label"].is_number_integer())
      return error("field \"label\": expected an integer");
    ChoiceQuestion q;
    q.label = j["label"].get<int64_t>();
    if (q.label < 0 || q.label >= static_cast<int64_t>(j["choices"].size()))
      return error(absl::StrCat("label ", q.label, " is out of range for ", j["choices"].size(),
                                " choices"));
    if (j.contains("category")) {
      if (!j["category"].is_string()) return error("field \"category\": expected a string");
      q.category = j["category"].get<std::string>();
    }
    if (tokenizer.bos_id() >= 0) q.context.push_back(tokenizer.bos_id());
    const std::vector<int32_t> context = tokenizer.Encode(j["context"].get<std::string>());
    q.context.insert(q.context.end(), context.begin(), context.end());
    for (size_t c = 0; c < j["choices"].size(); ++c) {
      const nlohmann::json& choice = j["choices"][c];
      if (!choice.is_string() || choice.get<std::string>().empty())
        return error(absl::StrCat("choices[", c, "]: expected a non-empty string"));
      q.choices.push_back(tokenizer.Encode(choice.get<std::string>()));
      q.choice_bytes.push_back(static_cast<int64_t>(choice.get<std::string>().size()));
    }
    if (vocab_size > 0) {
      std::vector<const std::vector<int32_t>*> all = {&q.context};
      for (const auto& ids : q.choices) all.push_back(&ids);
      for (const auto* ids : all) {
        for (int32_t id : *ids)
          if (id < 0 || id >= vocab_size)
            return error(absl::StrCat("id ", id, " is outside the vocabulary of ", vocab_size));
      }
    }
    out.push_back(std::move(q));
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no questions"));
  return out;
}

absl::StatusOr<std::vector<ChoiceQuestion>> LoadChoiceTasksForModel(const std::string& model_dir,
                                                                    const LlamaConfig& config,
                                                                    const std::string& path) {
  auto tokenizer = LoadTokenizer(model_dir, config);
  if (!tokenizer.ok()) return tokenizer.status();
  return LoadChoiceTasks(path, **tokenizer, config.vocab_size);
}

}  // namespace squeeze
