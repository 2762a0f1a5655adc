#!/usr/bin/env python3
"""Checks a lora stage's output against PEFT itself.

A job quantizes the example teacher to NF4 and trains rank-8 adapters on it (a few steps, the
original teaching). This script decodes the NF4 base with the numpy reader
(tests/formats/bnb4bit_reader.py) into transformers' LlamaForCausalLM, has PEFT load our
adapter_config.json and adapter_model.safetensors onto it (PeftModel.from_pretrained) and merge
them (merge_and_unload), and compares that model's logits with our loader's reading of the same
directory (reference_logits, which merges the adapters). It also checks the adapters change the
model: PEFT's adapted logits must differ from the base's.

  peft_format_check.py --squeezectl build/services/cli/squeezectl \
      --binary build/tests/gpu/reference_logits --out DIR [--device cuda]
"""
import json
import os
import subprocess
import sys

import torch
from peft import PeftModel
from transformers import LlamaConfig, LlamaForCausalLM

from checkpoint_io import compare_with_our_loader, decode_bnb4bit_checkpoint, parse_check_args


def main():
    args, teacher, data = parse_check_args()
    os.makedirs(args.out, exist_ok=True)
    recipe = os.path.join(args.out, "recipe.yaml")
    with open(recipe, "w") as f:
        f.write(f"model: {teacher}\ndata: {{train: {data}/train.jsonl}}\nstages:\n"
                "  - quantize: {method: nf4}\n"
                "  - distill: {lora: {targets: [q_proj, v_proj, down_proj], rank: 8, alpha: 16},\n"
                "              steps: 8, batch_size: 8, seq_len: 64, lr: 0.001, warmup_steps: 1}\n")
    subprocess.run([args.squeezectl, "run", recipe, "--output", args.out, "--device", args.device,
                    "--state-dir", os.path.join(args.out, "state"), "--json"],
                   check=True, capture_output=True)
    out = os.path.join(args.out, "model")
    dense, _ = decode_bnb4bit_checkpoint(out)
    config = json.load(open(os.path.join(out, "config.json")))
    base = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items()
                                           if k != "quantization_config"})).eval().float()
    base.load_state_dict(dense, strict=False)
    base.tie_weights()
    ids = torch.arange(32, 96).view(1, -1)
    with torch.no_grad():
        base_logits = base(ids).logits
    adapted = PeftModel.from_pretrained(base, out).eval()
    with torch.no_grad():
        peft_logits = adapted(ids).logits
    moved = ((peft_logits - base_logits).norm() / base_logits.norm()).item()
    merged = adapted.merge_and_unload()
    state = {k: v for k, v in merged.state_dict().items() if k != "lm_head.weight"}
    err = compare_with_our_loader(out, state, args.binary)
    print(f"adapters move PEFT's logits by {moved:.3e} (rel); "
          f"ours vs PEFT merged (rel err): {err:.3e}")
    sys.exit(0 if moved > 1e-4 and err < 1e-4 else 1)


if __name__ == "__main__":
    main()
