#!/usr/bin/env python3
"""Checks our W8A8 checkpoints against an independent reading of compressed-tensors' int-quantized
layout, with the activations really quantized on both sides.

`squeezectl compress --activations dynamic|static [--smoothquant-alpha A] --out DIR` writes the
example teacher as llm-compressor does for W8A8: quantization_config {quant_method:
compressed-tensors, format: int-quantized, config_groups.group_0: {targets [Linear], weights
{num_bits 8, int, symmetric, strategy channel}, input_activations {strategy token + dynamic, or
tensor + static}}, ignore [lm_head]}; per linear `weight` int8 [out, in], `weight_scale` [out, 1]
and, when static, `input_scale` [1]. This script reads that with its own code, loads w = weight *
weight_scale into transformers' LlamaForCausalLM, rounds every decoder linear's input as the
config says (a forward pre-hook: per token, scale = absmax / 127, or the stored per-tensor scale;
round half to even, clamp to [-128, 127]), and compares logits with our loader's
(reference_logits), which runs its own activation quantization.

The bound is 2e-2 relative (the bf16 bound of reference_check.py), not float32's 1e-4: rounding
inputs to an int8 grid turns the ~1e-7 differences between two float32 implementations into an
occasional one-step flip of a code, which the following layers carry on. A misread layout (a
scale per tensor instead of per channel, codes offset by 128, a wrong zero point) moves logits by
far more than that.

  w8a8_format_check.py --squeezectl build/services/cli/squeezectl \\
      --binary build/tests/gpu/reference_logits --out DIR [--device cuda]
"""
import json
import os
import sys

import torch

from checkpoint_io import compare_with_our_loader, compress_teacher, load_all_tensors, parse_check_args


def quantize_inputs(x, strategy, scale):
    xf = x.float()
    if strategy == "token":
        scale = xf.abs().amax(-1, keepdim=True).clamp_min(1e-8) / 127.0
    else:
        scale = scale.float().clamp_min(1e-8)
    return (torch.round(xf / scale).clamp(-128, 127) * scale).to(x.dtype)


def main():
    args, teacher, data = parse_check_args()
    rows, ok = [], True
    for name, extra in [("dynamic", ["--activations", "dynamic"]),
                        ("static+sq", ["--activations", "static", "--smoothquant-alpha", "0.5"])]:
        out = os.path.join(args.out, name)
        qc = compress_teacher(args, teacher, data, out, "gptq", extra)
        assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "int-quantized", qc
        group = qc["config_groups"]["group_0"]
        w_args, a_args = group["weights"], group["input_activations"]
        assert (w_args["num_bits"], w_args["type"], w_args["symmetric"], w_args["strategy"]) == \
            (8, "int", True, "channel"), w_args
        strategy = a_args["strategy"]
        assert (strategy, a_args["dynamic"]) in [("token", True), ("tensor", False)], a_args
        tensors = load_all_tensors(out)
        dense, input_scales = {}, {}
        for key, t in tensors.items():
            if key.endswith(".weight_scale") or key.endswith(".input_scale"):
                continue
            prefix = key[: -len(".weight")]
            if prefix + ".weight_scale" in tensors:
                assert t.dtype == torch.int8, (key, t.dtype)
                dense[key] = t.float() * tensors[prefix + ".weight_scale"].float()
                if strategy == "tensor":
                    input_scales[prefix] = tensors[prefix + ".input_scale"]
            else:
                dense[key] = t.float()

        def install_hooks(model):
            for module_name, module in model.named_modules():
                if isinstance(module, torch.nn.Linear) and module_name.startswith("model.layers."):
                    scale = input_scales.get(module_name)
                    module.register_forward_pre_hook(
                        lambda m, inputs, scale=scale: (quantize_inputs(inputs[0], strategy, scale),))

        err = compare_with_our_loader(out, dense, args.binary, prepare=install_hooks)
        ppl = json.load(open(os.path.join(out, "squeeze_report.json")))["compressed"]["perplexity"]
        rows.append((name, strategy, err, ppl))
        ok = ok and err < 2e-2
    print(f"{'config':>10} {'inputs':>7} {'ours vs independent reading (rel err)':>38} {'perplexity':>10}")
    for name, strategy, err, ppl in rows:
        print(f"{name:>10} {strategy:>7} {err:>38.3e} {ppl:>10.4f}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
