#!/usr/bin/env python3
"""Reference check, run on the GPU machine: Hugging Face transformers builds LlamaForCausalLM
(and Qwen3ForCausalLM, MistralForCausalLM with a sliding window, Phi3ForCausalLM,
Gemma3ForCausalLM) models with random weights from several configs and saves them with
save_pretrained; our
libtorch model loads each directory and must produce the same logits on the same token ids
(max relative error < 1e-4 in float32; in bfloat16 < 2e-2, or no further from the float32
reference than transformers' own bfloat16 run is).

  reference_check.py --binary build/tests/gpu/reference_logits --out DIR [--device cuda]
"""
import argparse
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import save_file
import transformers

# model_type -> (config class, model class); "llama" when a config names none.
FAMILIES = {"llama": ("LlamaConfig", "LlamaForCausalLM"),
            "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
            "mistral": ("MistralConfig", "MistralForCausalLM"),
            "phi3": ("Phi3Config", "Phi3ForCausalLM"),
            "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM")}

CONFIGS = {
    # grouped-query attention, untied head
    "gqa": dict(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=3,
                num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-5,
                rope_theta=10000.0, max_position_embeddings=512, tie_word_embeddings=False),
    # plain multi-head attention, tied embeddings, biases on attention and MLP
    "mha_tied_bias": dict(vocab_size=777, hidden_size=128, intermediate_size=352,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                          rms_norm_eps=1e-6, rope_theta=10000.0, max_position_embeddings=512,
                          tie_word_embeddings=True, attention_bias=True, mlp_bias=True),
    # llama3 rope scaling over a short original context (so the test sequence crosses it),
    # explicit head_dim that differs from hidden_size / heads, GQA
    "llama3_rope": dict(vocab_size=512, hidden_size=192, intermediate_size=512,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=64, rms_norm_eps=1e-5, rope_theta=500000.0,
                        max_position_embeddings=1024, tie_word_embeddings=False,
                        rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 64}),
    # Qwen3: per-head q/k RMSNorm, explicit head_dim (8 heads x 32 = 256 != hidden 128), GQA,
    # untied head
    "qwen3": dict(family="qwen3", vocab_size=600, hidden_size=128, intermediate_size=384,
                  num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                  rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=512,
                  tie_word_embeddings=False, attention_bias=False, use_sliding_window=False),
    # Mistral with a sliding window far shorter than the test sequence (200 tokens)
    "mistral_window": dict(family="mistral", vocab_size=500, hidden_size=128,
                           intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
                           max_position_embeddings=512, tie_word_embeddings=False,
                           sliding_window=16),
    # Phi-3: fused qkv_proj and gate_up_proj, GQA, a sliding window shorter than the sequence
    "phi3": dict(family="phi3", vocab_size=700, hidden_size=128, intermediate_size=320,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=512,
                 original_max_position_embeddings=512, tie_word_embeddings=False,
                 sliding_window=64, pad_token_id=0, bos_token_id=1, eos_token_id=2),
    # Gemma-3 text: (1 + w) norms, scaled embeddings, GeGLU, pre/post feed-forward norms, sliding
    # layers (16-token window, their own rotary base) between full ones (linear rope scaling),
    # query_pre_attn_scalar unequal to head_dim, tied embeddings, soft-capped logits
    "gemma3": dict(family="gemma3", vocab_size=640, hidden_size=128, intermediate_size=320,
                   num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=48,
                   query_pre_attn_scalar=40, sliding_window=16,
                   layer_types=["sliding_attention", "full_attention", "sliding_attention",
                                "full_attention"],
                   rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0,
                                                       "rope_theta": 1000000.0},
                                    "sliding_attention": {"rope_type": "default",
                                                          "rope_theta": 10000.0}},
                   final_logit_softcapping=30.0, rms_norm_eps=1e-6, max_position_embeddings=512,
                   tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=1),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seq", type=int, default=200)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    results = []
    for name, kwargs in CONFIGS.items():
        torch.manual_seed(0)
        kwargs = dict(kwargs)
        family = kwargs.pop("family", "llama")
        config_class, model_class = FAMILIES[family]
        config = getattr(transformers, config_class)(**kwargs)
        if name == "gemma3":
            # The rotary parameters must have been taken as given (the file we read is what
            # transformers writes from this object).
            print("gemma3 config:", json.dumps({k: getattr(config, k, None) for k in (
                "rope_parameters", "rope_theta", "rope_scaling", "rope_local_base_freq",
                "layer_types", "query_pre_attn_scalar")}, default=str), file=sys.stderr)
        config._attn_implementation = "eager"
        model = getattr(transformers, model_class)(config).eval()
        # Non-trivial norm weights and biases so that every parameter matters.
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "norm" in pname:
                    # Gemma stores norms as offsets from 1: the same scales, 0.5 to 1.5. (Scales
                    # of 1.5 to 2.5 in all four norms of a layer make transformers' own bfloat16
                    # logits 24% away from its float32 ones, too noisy to compare against.)
                    p.uniform_(-0.5, 0.5) if family == "gemma3" else p.uniform_(0.5, 1.5)
                elif pname.endswith("bias"):
                    p.normal_(0, 0.02)
        path = os.path.join(args.out, name)
        model.save_pretrained(path, safe_serialization=True)
        ids = torch.randint(0, config.vocab_size, (2, args.seq))
        with torch.no_grad():
            m32 = model.to(args.device, torch.float32)
            logits32 = m32(ids.to(args.device)).logits.float().cpu()
            m16 = model.to(args.device, torch.bfloat16)
            logits16 = m16(ids.to(args.device)).logits.float().cpu()
        ref = os.path.join(args.out, name + ".reference.safetensors")
        save_file({"input_ids": ids.contiguous(), "logits_float32": logits32.contiguous(),
                   "logits_bfloat16": logits16.contiguous()}, ref)
        proc = subprocess.run([args.binary, path, ref, args.device], capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            print(proc.stdout, proc.stderr, file=sys.stderr)
            sys.exit(f"{name}: reference_logits failed with {proc.returncode}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["config"] = name
        # How far the reference's own bfloat16 run is from its float32 one: the noise floor of
        # the bfloat16 comparison.
        r["reference_bf16_vs_fp32"] = ((logits16 - logits32).abs().max() /
                                       logits32.abs().max()).item()
        # float32 within 1e-4 always. bfloat16 within 2e-2 of the reference's bfloat16 run, or,
        # where the reference's own bfloat16 run is further than that from its float32 one (Gemma's
        # four norms per layer), no further from the float32 reference than the reference is.
        r["pass"] = r["rel_err_float32"] < 1e-4 and (
            r["rel_err_bfloat16"] < 2e-2 or
            r["rel_err_bfloat16_vs_reference_float32"] <= r["reference_bf16_vs_fp32"])
        results.append(r)

    print(f"{'config':16s} {'fp32 rel err':>14s} {'bf16 rel err':>14s} {'bf16 vs fp32 ref':>17s} "
          f"{'ref bf16 vs fp32':>17s} {'cpu vs gpu fp32':>16s} result")
    for r in results:
        print(f"{r['config']:16s} {r['rel_err_float32']:14.3e} {r['rel_err_bfloat16']:14.3e} "
              f"{r['rel_err_bfloat16_vs_reference_float32']:17.3e} "
              f"{r['reference_bf16_vs_fp32']:17.3e} "
              f"{r['rel_err_cpu_vs_device_float32']:16.3e} {'PASS' if r['pass'] else 'FAIL'}")
    with open(os.path.join(args.out, "reference_check.json"), "w") as f:
        json.dump(results, f, indent=2)
    sys.exit(0 if all(r["pass"] for r in results) else 1)


if __name__ == "__main__":
    main()
