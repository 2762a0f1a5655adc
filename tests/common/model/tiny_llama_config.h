// A small Llama shape shared by tests: grouped-query attention (4 query heads over 2 key/value
// heads), an MLP twice as wide as the model, tied embeddings; the byte tokenizer's vocabulary
// unless another is asked for.
#pragma once

#include <cstdint>

#include "common/model/llama_config.h"
#include "common/model/tokenizer.h"

namespace squeeze {

inline LlamaConfig TinyLlamaConfig(int64_t layers = 2, int64_t hidden = 32,
                                   int64_t vocab = ByteTokenizer::kMinVocab) {
  LlamaConfig c;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = 2 * hidden;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = hidden / 4;
  c.tie_word_embeddings = true;
  c.byte_tokenizer = vocab >= ByteTokenizer::kMinVocab;
  return c;
}

// TinyLlamaConfig as Gemma-3 text: two layers, the first sliding (window `window`, its own rotary
// base), the second full; GELU gating and a score scale unequal to head_dim.
inline LlamaConfig TinyGemmaConfig(int64_t hidden = 32, int64_t vocab = ByteTokenizer::kMinVocab,
                                   int64_t window = 4) {
  LlamaConfig c = TinyLlamaConfig(/*layers=*/2, hidden, vocab);
  c.model_type = "gemma3_text";
  c.hidden_activation = "gelu_pytorch_tanh";
  c.query_pre_attn_scalar = static_cast<double>(c.head_dim) / 2;
  c.sliding_window = window;
  c.layer_types = {"sliding_attention", "full_attention"};
  c.rope_local_theta = 100.0;
  return c;
}

}  // namespace squeeze
