#!/usr/bin/env python3
"""Checks our GPTQ checkpoints against an independent reading of the published layout.

For each bit width, `squeezectl compress --method gptq --out DIR` writes a packed checkpoint of the
example teacher. This script unpacks it with its own code, written from the format description
(qweight: codes packed along the input dimension, LSB first, one continuous bit stream per output
column; qzeros: the same along the outputs, v1 storing zero - 1; scales fp16 [groups, out]; g_idx),
loads the dequantized weights into transformers' LlamaForCausalLM, and compares its logits with the
logits of our own loader (reference_logits). Both readings of the checkpoint must agree.

  gptq_format_check.py --squeezectl build/services/cli/squeezectl \
      --binary build/tests/gpu/reference_logits --out DIR
"""
import os
import sys

import torch

from checkpoint_io import compare_with_our_loader, compress_teacher, load_all_tensors, parse_check_args


def unpack_rows(packed, bits, n):
    """packed int32 [n*bits/32, m] -> int64 [n, m]: value i of column j at bits [i*bits, (i+1)*bits)."""
    words = packed.to(torch.int64) & 0xFFFFFFFF
    out = torch.zeros((n, packed.shape[1]), dtype=torch.int64)
    mask = (1 << bits) - 1
    for i in range(n):
        bit = i * bits
        word, shift = divmod(bit, 32)
        value = words[word] >> shift
        if shift + bits > 32:
            value = value | (words[word + 1] << (32 - shift))
        out[i] = value & mask
    return out


def dequantize(tensors, prefix, bits, fmt):
    qweight = tensors[prefix + ".qweight"]
    qzeros = tensors[prefix + ".qzeros"]
    scales = tensors[prefix + ".scales"].float()
    g_idx = tensors[prefix + ".g_idx"].long()
    n_in = qweight.shape[0] * 32 // bits
    codes = unpack_rows(qweight, bits, n_in)                      # [in, out]
    zeros = unpack_rows(qzeros.t().contiguous(), bits, scales.shape[1]).t()  # [groups, out]
    if fmt == "gptq":
        zeros = (zeros + 1) & ((1 << bits) - 1)
    w = (codes - zeros[g_idx]).float() * scales[g_idx]            # [in, out]
    return w.t().contiguous()


def main():
    args, teacher, data = parse_check_args()
    rows = []
    for bits, act in [(4, False), (4, True), (3, True), (8, False), (2, False)]:
        out = os.path.join(args.out, f"w{bits}{'-act' if act else ''}")
        extra = ["--bits", str(bits), "--group-size", "128"] + (["--act-order"] if act else [])
        qc = compress_teacher(args, teacher, data, out, "gptq", extra)
        tensors = load_all_tensors(out)
        dense = {}
        for name, t in tensors.items():
            if name.endswith(".qweight"):
                prefix = name[: -len(".qweight")]
                dense[prefix + ".weight"] = dequantize(tensors, prefix, qc["bits"], qc["checkpoint_format"])
            elif not name.endswith((".qzeros", ".scales", ".g_idx")):
                dense[name] = t.float()
        err = compare_with_our_loader(out, dense, args.binary)
        rows.append((bits, act, qc["checkpoint_format"], err))
    print(f"{'bits':>4} {'act_order':>9} {'format':>7} {'ours vs independent unpack (rel err)':>38}")
    ok = True
    for bits, act, fmt, err in rows:
        print(f"{bits:>4} {str(act):>9} {fmt:>7} {err:>38.3e}")
        ok = ok and err < 1e-4
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
