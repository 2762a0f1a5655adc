#!/usr/bin/env python3
"""Checks our GPTQ checkpoints against an independent reading of the published layout.

For each bit width, `squeezectl compress --method gptq --out DIR` writes a packed checkpoint of the
example teacher. This script unpacks it with its own code, written from the format description
(qweight: codes packed along the input dimension, LSB first, one continuous bit stream per output
column; qzeros: the same along the outputs, v1 storing zero - 1; scales fp16 [groups, out]; g_idx),
loads the dequantized weights into transformers' LlamaForCausalLM, and compares its logits with the
logits of our own loader (reference_logits). Both readings of the checkpoint must agree.

The last case is mixed precision (--average-bits 3.5): each module's width comes from GPTQModel's
`dynamic` overrides, read here with Python's re.match as GPTQModel and vLLM do (the first key whose
pattern matches the module's name from its start; "+:" sets its fields, "-:" leaves it dense).

  gptq_format_check.py --squeezectl build/services/cli/squeezectl \
      --binary build/tests/gpu/reference_logits --out DIR
"""
import os
import re
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


def module_bits(qc, module):
    """The width of `module` under quantization_config `qc`: its `dynamic` override, if any."""
    for key, fields in qc.get("dynamic", {}).items():
        sign, pattern = (key[0], key[2:]) if key[:2] in ("+:", "-:") else ("+", key)
        if re.match(pattern, module):
            if sign == "-":
                raise AssertionError(f"{module}: excluded by {key}, but packed")
            return fields.get("bits", qc["bits"])
    return qc["bits"]


def main():
    args, teacher, data = parse_check_args()
    rows = []
    cases = [(f"{b}", ["--bits", str(b)]) for b in (4, 8, 2)]
    cases += [(f"{b} act", ["--bits", str(b), "--act-order"]) for b in (4, 3)]
    cases += [("mixed 3.5", ["--average-bits", "3.5"])]
    for label, extra in cases:
        out = os.path.join(args.out, label.replace(" ", "-"))
        qc = compress_teacher(args, teacher, data, out, "gptq", extra + ["--group-size", "128"])
        tensors = load_all_tensors(out)
        dense, widths = {}, set()
        for name, t in tensors.items():
            if name.endswith(".qweight"):
                prefix = name[: -len(".qweight")]
                bits = module_bits(qc, prefix)
                widths.add(bits)
                dense[prefix + ".weight"] = dequantize(tensors, prefix, bits, qc["checkpoint_format"])
            elif not name.endswith((".qzeros", ".scales", ".g_idx")):
                dense[name] = t.float()
        err = compare_with_our_loader(out, dense, args.binary)
        rows.append((label, ",".join(map(str, sorted(widths))), qc["checkpoint_format"], err))
    print(f"{'case':>10} {'widths':>8} {'format':>7} {'ours vs independent unpack (rel err)':>38}")
    ok = True
    for label, widths, fmt, err in rows:
        print(f"{label:>10} {widths:>8} {fmt:>7} {err:>38.3e}")
        ok = ok and err < 1e-4
    ok = ok and len(rows[-1][1].split(",")) > 1  # the mixed case really mixes widths
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
