#!/usr/bin/env python3
"""Checks our NF4 checkpoints against independent readings of bitsandbytes' 4-bit layout.

A job quantizes the example teacher to NF4 (block 64, double quantization) in bitsandbytes'
layout. This script decodes it with the numpy reader written from that layout
(tests/formats/bnb4bit_reader.py), loads the dense weights into transformers' LlamaForCausalLM and
compares its logits with our loader's (reference_logits). When the bitsandbytes package can be
imported, transformers also loads the checkpoint itself through its bitsandbytes integration and
its logits are compared too; otherwise the script says so.

  bnb4bit_format_check.py --squeezectl build/services/cli/squeezectl \
      --binary build/tests/gpu/reference_logits --out DIR [--device cuda]
"""
import importlib.util
import json
import os
import subprocess
import sys

import torch

from checkpoint_io import compare_with_our_loader, decode_bnb4bit_checkpoint, parse_check_args


def main():
    args, teacher, data = parse_check_args()
    os.makedirs(args.out, exist_ok=True)
    recipe = os.path.join(args.out, "recipe.yaml")
    with open(recipe, "w") as f:
        f.write(f"model: {teacher}\nstages:\n  - quantize: {{method: nf4}}\n")
    subprocess.run([args.squeezectl, "run", recipe, "--output", args.out, "--device", args.device,
                    "--state-dir", os.path.join(args.out, "state"), "--json"],
                   check=True, capture_output=True)
    out = os.path.join(args.out, "model")
    qc = json.load(open(os.path.join(out, "config.json")))["quantization_config"]
    assert qc["quant_method"] == "bitsandbytes" and qc["bnb_4bit_quant_type"] == "nf4", qc
    dense, linears = decode_bnb4bit_checkpoint(out)
    err = compare_with_our_loader(out, dense, args.binary)
    print(f"{linears} linears in NF4; ours vs the numpy reading (rel err): {err:.3e}")
    ok = linears > 0 and err < 1e-4
    if importlib.util.find_spec("bitsandbytes") is None:
        print("bitsandbytes is not installed here: transformers' own 4-bit loading was not run")
    else:
        from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
        theirs = AutoModelForCausalLM.from_pretrained(out, device_map="cuda").eval()
        config = json.load(open(os.path.join(out, "config.json")))
        ref = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items()
                                              if k != "quantization_config"})).eval().float()
        ref.load_state_dict(dense, strict=False)
        ids = torch.arange(32, 96).view(1, -1)
        with torch.no_grad():
            a = theirs(ids.cuda()).logits.float().cpu()
            b = ref(ids).logits
        rel = ((a - b).norm() / b.norm()).item()
        print(f"transformers + bitsandbytes vs the numpy reading (rel err, fp16 compute): {rel:.3e}")
        ok = ok and rel < 2e-2
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
