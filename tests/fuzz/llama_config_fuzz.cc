// libFuzzer target: config.json parsing, and writing back what was accepted.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/model/llama_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = squeeze::ParseLlamaConfig(text, "config.json");
  if (config.ok()) {
    auto again = squeeze::ParseLlamaConfig(squeeze::LlamaConfigToJson(*config), "again");
    if (!again.ok() || again->hidden_size != config->hidden_size) __builtin_trap();
    (void)squeeze::CheckpointTensorShapes(*config);
  }
  return 0;
}
