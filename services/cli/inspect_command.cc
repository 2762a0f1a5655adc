#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/base/flags.h"
#include "common/model/llama_config.h"
#include "common/tensor/safetensors.h"
#include "services/cli/commands.h"

namespace squeeze::cli {

int Fail(const absl::Status& status) {
  std::cerr << "squeezectl: " << status.message() << "\n";
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 2;
    default:
      return 1;
  }
}

namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&out, i ? ", " : "", shape[i]);
  return out + "]";
}

}  // namespace

int RunInspect(const Args& args) {
  Flags flags;
  flags.Bool("json").Positional(1, 1);
  if (auto s = flags.Parse(args); !s.ok()) return Fail(s);
  const std::string dir = flags.positional()[0];
  auto config = LoadLlamaConfig(dir);
  if (!config.ok()) return Fail(config.status());
  auto weights = CheckpointReader::Open(dir);
  if (!weights.ok()) return Fail(weights.status());

  int64_t params = 0, bytes = 0;
  nlohmann::json tensors = nlohmann::json::array();
  for (const std::string& name : (*weights)->names()) {
    const TensorInfo& info = *(*weights)->Get(name)->info;
    params += info.numel();
    bytes += static_cast<int64_t>(info.nbytes);
    tensors.push_back({{"name", name},
                       {"dtype", DTypeName(info.dtype)},
                       {"shape", info.shape},
                       {"bytes", info.nbytes}});
  }
  if (flags.GetBool("json")) {
    nlohmann::json out = {{"config", nlohmann::json::parse(LlamaConfigToJson(*config))},
                          {"tensors", tensors},
                          {"parameters", params},
                          {"tensor_bytes", bytes},
                          {"files", (*weights)->files().size()}};
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  const LlamaConfig& c = *config;
  std::cout << "model        " << dir << " (" << c.model_type << ")\n"
            << "layers       " << c.num_hidden_layers << "\n"
            << "hidden       " << c.hidden_size << " (intermediate " << c.intermediate_size << ")\n"
            << "heads        " << c.num_attention_heads << " query, " << c.num_key_value_heads
            << " key/value, head_dim " << c.head_dim << "\n"
            << "vocab        " << c.vocab_size << (c.tie_word_embeddings ? " (tied head)" : "")
            << "\n"
            << "rope         theta " << c.rope_theta
            << (c.rope_scaling ? absl::StrCat(", llama3 scaling x", c.rope_scaling->factor) : "")
            << "\n"
            << "parameters   " << params << " in " << tensors.size() << " tensors, "
            << (*weights)->files().size() << " file(s), " << bytes << " bytes\n\n";
  std::cout << std::left << std::setw(52) << "tensor" << std::setw(6) << "dtype"
            << "shape\n";
  for (const auto& t : tensors) {
    std::cout << std::left << std::setw(52) << t["name"].get<std::string>() << std::setw(6)
              << t["dtype"].get<std::string>()
              << ShapeString(t["shape"].get<std::vector<int64_t>>()) << "\n";
  }
  return 0;
}

}  // namespace squeeze::cli
