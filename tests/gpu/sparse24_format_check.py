#!/usr/bin/env python3
"""Checks our 2:4 sparse checkpoints against an independent reading of compressed-tensors'
sparse-24-bitmask layout.

A job prunes the example teacher with SparseGPT 2:4 and writes it with `format:
sparse_24_bitmask`. This script reads it with its own code, written from the layout's
description (`.compressed` [out, in/2] the kept values in row order; `.bitmask` [out, ceil(in/8)]
uint8, unpacked with numpy.unpackbits(bitorder="little") as compressed-tensors does; `.shape`
the dense shape), checks that every group of 4 inputs keeps exactly 2, loads the dense weights
into transformers' LlamaForCausalLM, and compares its logits with our loader's (reference_logits).

  sparse24_format_check.py --squeezectl build/services/cli/squeezectl \
      --binary build/tests/gpu/reference_logits --out DIR [--device cuda]
"""
import json
import os
import subprocess
import sys

import numpy
import torch

from checkpoint_io import compare_with_our_loader, load_all_tensors, parse_check_args


def main():
    args, teacher, data = parse_check_args()
    os.makedirs(args.out, exist_ok=True)
    recipe = os.path.join(args.out, "recipe.yaml")
    with open(recipe, "w") as f:
        f.write(f"model: {teacher}\ndata: {{calibration: {data}/calibration.jsonl}}\nstages:\n"
                "  - prune: {method: sparsegpt, pattern: \"2:4\", format: sparse_24_bitmask,\n"
                "            calibration_samples: 32}\n")
    subprocess.run([args.squeezectl, "run", recipe, "--output", args.out, "--device", args.device,
                    "--state-dir", os.path.join(args.out, "state"), "--json"],
                   check=True, capture_output=True)
    out = os.path.join(args.out, "model")
    qc = json.load(open(os.path.join(out, "config.json")))["quantization_config"]
    assert qc["sparsity_config"]["format"] == "sparse-24-bitmask", qc
    tensors = load_all_tensors(out)
    dense, linears = {}, 0
    for name, t in tensors.items():
        if name.endswith(".bitmask"):
            prefix = name[: -len(".bitmask")]
            rows, cols = [int(v) for v in tensors[prefix + ".shape"].flatten()]
            keep = numpy.unpackbits(t.numpy(), axis=-1, count=cols, bitorder="little")
            keep = torch.from_numpy(keep.reshape(rows, cols).astype(bool))
            assert (keep.view(rows, -1, 4).sum(-1) == 2).all(), f"{prefix}: not 2 of every 4"
            w = torch.zeros(rows, cols, dtype=torch.float32)
            w[keep] = tensors[prefix + ".compressed"].float().flatten()
            dense[prefix + ".weight"] = w
            linears += 1
        elif not name.endswith((".compressed", ".shape")):
            dense[name] = t.float()
    err = compare_with_our_loader(out, dense, args.binary)
    print(f"{linears} linears in sparse-24-bitmask; ours vs independent reading (rel err): {err:.3e}")
    sys.exit(0 if linears > 0 and err < 1e-4 else 1)


if __name__ == "__main__":
    main()
