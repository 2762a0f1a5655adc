#include "common/model/generator.h"

#include <ATen/ATen.h>

#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"

namespace squeeze {

int64_t PickToken(const at::Tensor& logits, double temperature, double top_p, double uniform) {
  at::Tensor l = logits.to(at::kCPU, at::kFloat).contiguous();
  if (temperature <= 0.0) return l.argmax().item<int64_t>();
  at::Tensor probs = at::softmax(l / temperature, -1);
  auto [sorted, order] = probs.sort(/*dim=*/-1, /*descending=*/true);
  const float* p = sorted.data_ptr<float>();
  const int64_t* idx = order.data_ptr<int64_t>();
  const int64_t n = sorted.numel();
  // The nucleus: the fewest most likely tokens whose mass reaches top_p (at least one).
  int64_t keep = 0;
  double mass = 0.0;
  while (keep < n && (keep == 0 || mass < top_p)) mass += p[keep++];
  double target = uniform * mass, acc = 0.0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (target < acc) return idx[i];
  }
  return idx[keep - 1];
}

absl::StatusOr<Generation> Generate(const LlamaModel& model, const std::vector<int32_t>& prompt,
                                    const GenerationOptions& options) {
  const LlamaConfig& c = model.config();
  if (prompt.empty()) return absl::InvalidArgumentError("prompt: no tokens");
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= c.vocab_size)
      return absl::InvalidArgumentError(absl::StrCat("prompt: token ", i, " is id ", prompt[i],
                                                     ", outside the vocabulary of ", c.vocab_size));
  }
  if (options.max_new_tokens < 1)
    return absl::InvalidArgumentError("max_new_tokens: must be at least 1");
  if (!(options.temperature >= 0.0))
    return absl::InvalidArgumentError("temperature: must be 0 (greedy) or positive");
  if (!(options.top_p > 0.0 && options.top_p <= 1.0))
    return absl::InvalidArgumentError("top_p: must be in (0, 1]");
  const int64_t capacity = static_cast<int64_t>(prompt.size()) + options.max_new_tokens;
  if (c.max_position_embeddings > 0 && capacity > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt of ", prompt.size(), " tokens plus max_new_tokens ", options.max_new_tokens,
        " is longer than the model's max_position_embeddings ", c.max_position_embeddings));
  }

  c10::InferenceMode inference;
  const at::Device device = model.device();
  const at::ScalarType dtype = model.dtype();
  std::vector<LayerKvCache> cache(model.num_layers());
  for (LayerKvCache& layer : cache) {
    layer.k = at::empty({1, c.num_key_value_heads, capacity, c.head_dim},
                        at::TensorOptions().device(device).dtype(dtype));
    layer.v = at::empty_like(layer.k);
  }
  const RotaryTables rope = model.Rotary(capacity, device, dtype);
  std::mt19937_64 rng(options.seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  // Runs `ids` at positions [pos, pos + n) and returns the logits of the last one.
  auto step = [&](const std::vector<int32_t>& ids, int64_t pos) {
    const int64_t n = static_cast<int64_t>(ids.size());
    at::Tensor x =
        at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kLong).view({1, n}).to(device);
    at::Tensor h = model.Embed(x);
    const RotaryTables rows = rope.Rows(pos, n);
    for (int64_t i = 0; i < model.num_layers(); ++i)
      h = model.layer(i).Forward(c, h, rows, i, nullptr, &cache[i]);
    return model.Head(h.narrow(1, n - 1, 1)).view({-1});
  };

  Generation out;
  auto now = [] { return std::chrono::steady_clock::now(); };
  auto start = now();
  at::Tensor logits = step(prompt, 0);
  int64_t pos = static_cast<int64_t>(prompt.size());
  out.stop_reason = "max_new_tokens";
  for (int64_t t = 0; t < options.max_new_tokens; ++t) {
    const int64_t next = PickToken(logits, options.temperature, options.top_p, uniform(rng));
    if (t == 0) {
      out.prefill_seconds = std::chrono::duration<double>(now() - start).count();
      start = now();
    }
    out.tokens.push_back(static_cast<int32_t>(next));
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), next) !=
        options.stop_ids.end()) {
      out.stop_reason = "stop token";
      break;
    }
    if (t + 1 == options.max_new_tokens) break;
    logits = step({static_cast<int32_t>(next)}, pos++);
  }
  out.decode_seconds = std::chrono::duration<double>(now() - start).count();
  return out;
}

absl::StatusOr<TextGeneration> GenerateText(const LlamaModel& model, const Tokenizer& tokenizer,
                                            const std::string& prompt, GenerationOptions options) {
  std::vector<int32_t> ids;
  if (tokenizer.bos_id() >= 0) ids.push_back(tokenizer.bos_id());
  const std::vector<int32_t> text = tokenizer.Encode(prompt);
  ids.insert(ids.end(), text.begin(), text.end());
  if (tokenizer.eos_id() >= 0) options.stop_ids.push_back(tokenizer.eos_id());
  auto generated = Generate(model, ids, options);
  if (!generated.ok()) return generated.status();
  TextGeneration out;
  out.prompt_tokens = static_cast<int64_t>(ids.size());
  std::vector<int32_t> shown = generated->tokens;
  if (generated->stop_reason == "stop token") shown.pop_back();  // the eos is not text
  out.completion = tokenizer.Decode(shown);
  out.generation = *std::move(generated);
  return out;
}

}  // namespace squeeze
