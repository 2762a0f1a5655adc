// libFuzzer target: a JSON Lines data file read with the byte tokenizer.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "common/data/text_dataset.h"
#include "common/model/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/squeeze-jsonl-fuzz-" + std::to_string(::getpid());
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  squeeze::ByteTokenizer tokenizer;
  squeeze::TextDatasetOptions options;
  options.vocab_size = 300;
  options.max_line_bytes = 4096;
  auto examples = squeeze::LoadTextDataset(path, &tokenizer, options);
  if (examples.ok()) {
    for (const auto& e : *examples) {
      for (int32_t id : e.ids) {
        if (id < 0 || id >= 300) __builtin_trap();
      }
    }
  }
  return 0;
}
