"""Writes a Llama-3-8B-shaped (or, with --shape 1b, Llama-3.2-1B-shaped) checkpoint with random
weights (bf16, made on the GPU, a shard per four layers) and a calibration file of random token
ids, for benchmarks of speed and memory.

usage: make_llama_checkpoint.py OUT_DIR [--shape 8b|1b] [--layers N] [--samples 128]
                                [--seq-len 2048]
"""
import argparse
import json
import os
import time

import torch
from safetensors.torch import save_file

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--shape", choices=["8b", "1b"], default="8b")
p.add_argument("--layers", type=int, default=0, help="default: the shape's (32 or 16)")
p.add_argument("--samples", type=int, default=128)
p.add_argument("--seq-len", type=int, default=2048)
a = p.parse_args()

if a.shape == "8b":
    H, F, HEADS, KV, VOCAB, TIED = 4096, 14336, 32, 8, 128256, False
else:
    H, F, HEADS, KV, VOCAB, TIED = 2048, 8192, 32, 8, 128256, True
a.layers = a.layers or (32 if a.shape == "8b" else 16)
D = H // HEADS
start = time.perf_counter()
os.makedirs(a.out, exist_ok=True)
config = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
    "intermediate_size": F, "num_hidden_layers": a.layers, "num_attention_heads": HEADS,
    "num_key_value_heads": KV, "head_dim": D, "vocab_size": VOCAB, "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0, "max_position_embeddings": 8192, "tie_word_embeddings": TIED,
    "torch_dtype": "bfloat16", "hidden_act": "silu", "bos_token_id": 128000,
    "eos_token_id": 128001,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
}
json.dump(config, open(os.path.join(a.out, "config.json"), "w"), indent=2)
g = torch.Generator(device="cuda").manual_seed(0)


def normal(*shape):
    return (torch.randn(*shape, generator=g, device="cuda") * 0.02).to(torch.bfloat16).cpu()


shapes = {"self_attn.q_proj": (H, H), "self_attn.k_proj": (KV * D, H),
          "self_attn.v_proj": (KV * D, H), "self_attn.o_proj": (H, H),
          "mlp.gate_proj": (F, H), "mlp.up_proj": (F, H), "mlp.down_proj": (H, F)}
groups = [list(range(i, min(i + 4, a.layers))) for i in range(0, a.layers, 4)]
n = len(groups) + 1
weight_map, total = {}, 0
for k, layers in enumerate(groups):
    tensors = {}
    for i in layers:
        pre = "model.layers.%d." % i
        tensors[pre + "input_layernorm.weight"] = torch.ones(H, dtype=torch.bfloat16)
        tensors[pre + "post_attention_layernorm.weight"] = torch.ones(H, dtype=torch.bfloat16)
        for name, shape in shapes.items():
            tensors[pre + name + ".weight"] = normal(*shape)
    fname = "model-%05d-of-%05d.safetensors" % (k + 1, n)
    save_file(tensors, os.path.join(a.out, fname), metadata={"format": "pt"})
    for t in tensors:
        weight_map[t] = fname
        total += tensors[t].numel() * 2
tensors = {"model.embed_tokens.weight": normal(VOCAB, H),
           "model.norm.weight": torch.ones(H, dtype=torch.bfloat16)}
if not TIED:
    tensors["lm_head.weight"] = normal(VOCAB, H)
fname = "model-%05d-of-%05d.safetensors" % (n, n)
save_file(tensors, os.path.join(a.out, fname), metadata={"format": "pt"})
for t in tensors:
    weight_map[t] = fname
    total += tensors[t].numel() * 2
json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
          open(os.path.join(a.out, "model.safetensors.index.json"), "w"), indent=2)
ids = torch.randint(0, VOCAB, (a.samples, a.seq_len), generator=torch.Generator().manual_seed(1))
with open(os.path.join(a.out, "..", "calibration.jsonl"), "w") as f:
    for row in ids.tolist():
        f.write(json.dumps({"input_ids": row}) + "\n")
print(json.dumps({"checkpoint_bytes": total, "seconds": time.perf_counter() - start}))
