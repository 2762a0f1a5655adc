#!/usr/bin/env python3
"""Checks our AWQ checkpoints against an independent reading of AutoAWQ's gemm layout.

`squeezectl compress --method awq --out DIR` writes the example teacher in the gemm layout
(quantization_config {quant_method: awq, version: gemm}). This script unpacks it with its own code,
written from the layout's description, not from our packer:
  qweight int32 [in, out / 8]: eight 4-bit codes per word along the outputs; nibble i of packed
      column p holds output 8p + [0, 2, 4, 6, 1, 3, 5, 7][i] (so AutoAWQ's unpacker reorders with
      [0, 4, 1, 5, 2, 6, 3, 7]);
  qzeros int32 [in / group, out / 8]: zero points, packed the same way, stored as they are;
  scales fp16 [in / group, out];
  w[o, i] = (code - zero) * scale of i's group.
It loads the dequantized weights into transformers' LlamaForCausalLM and compares its logits with
our own loader's (reference_logits). Both readings must agree. The model's bits and group size
come from the config, as a loader would take them.

  awq_format_check.py --squeezectl build/services/cli/squeezectl \
      --binary build/tests/gpu/reference_logits --out DIR [--device cuda]
"""
import json
import os
import sys

import torch

from checkpoint_io import compare_with_our_loader, compress_teacher, load_all_tensors, parse_check_args

# Where output column 8p + j sits inside word p: the nibble index of column j.
NIBBLE_OF_COLUMN = {column: nibble for nibble, column in enumerate([0, 2, 4, 6, 1, 3, 5, 7])}


def unpack_columns(packed):
    """int32 [rows, cols / 8] -> int64 [rows, cols] in output-column order."""
    words = packed.to(torch.int64) & 0xFFFFFFFF
    rows, packed_cols = words.shape
    out = torch.empty((rows, packed_cols * 8), dtype=torch.int64)
    for j in range(8):
        out[:, j::8] = (words >> (4 * NIBBLE_OF_COLUMN[j])) & 0xF
    return out


def dequantize(tensors, prefix, group):
    codes = unpack_columns(tensors[prefix + ".qweight"])  # [in, out]
    zeros = unpack_columns(tensors[prefix + ".qzeros"])   # [in / group, out]
    scales = tensors[prefix + ".scales"].float()          # [in / group, out]
    n_in = codes.shape[0]
    group = n_in if group == -1 else group
    groups = torch.arange(n_in) // group
    w = (codes - zeros[groups]).float() * scales[groups]  # [in, out]
    return w.t().contiguous()


def main():
    args, teacher, data = parse_check_args()
    rows = []
    ok = True
    for group, sym in [(128, False), (64, True), (-1, False)]:
        out = os.path.join(args.out, f"awq-g{group}{'-sym' if sym else ''}")
        extra = ["--bits", "4", "--group-size", str(group)] + (["--sym"] if sym else [])
        qc = compress_teacher(args, teacher, data, out, "awq", extra)
        assert qc["quant_method"] == "awq" and qc["version"] == "gemm" and qc["bits"] == 4, qc
        assert qc["zero_point"] is True, qc
        tensors = load_all_tensors(out)
        assert not any(n.endswith(".g_idx") for n in tensors), "the gemm layout has no g_idx"
        dense = {}
        for name, t in tensors.items():
            if name.endswith(".qweight"):
                prefix = name[: -len(".qweight")]
                dense[prefix + ".weight"] = dequantize(tensors, prefix, qc["group_size"])
            elif not name.endswith((".qzeros", ".scales")):
                dense[name] = t.float()
        err = compare_with_our_loader(out, dense, args.binary)
        summary = json.load(open(os.path.join(out, "squeeze_report.json")))
        rows.append((group, sym, err, summary["compressed"]["perplexity"]))
        ok = ok and err < 1e-4
    print(f"{'group':>5} {'sym':>5} {'ours vs independent unpack (rel err)':>38} {'perplexity':>10}")
    for group, sym, err, ppl in rows:
        print(f"{group:>5} {str(sym):>5} {err:>38.3e} {ppl:>10.4f}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
