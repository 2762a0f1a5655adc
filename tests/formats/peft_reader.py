#!/usr/bin/env python3
"""An independent reader of PEFT LoRA adapters, with numpy only. Reads MODEL_DIR's
adapter_config.json and adapter_model.safetensors as PEFT's loader does (peft/tuners/lora: the
adapted linear computes W x + lora_alpha / r * B A x; keys
base_model.model.<module>.lora_A.weight [r, in] and .lora_B.weight [out, r]), decodes each
targeted module's base weight from MODEL_DIR (a dense float or bf16 tensor, or bitsandbytes 4-bit
through bnb4bit_reader.py) and writes the merged weight, float32, row-major, to
OUT_DIR/<module>.weight.f32.

usage: peft_reader.py MODEL_DIR OUT_DIR   (prints one line per module: name, r and shape)
"""
import glob
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bnb4bit_reader import decode, read_safetensors  # noqa: E402

PREFIX = "base_model.model."


def main():
    model_dir, out_dir = sys.argv[1], sys.argv[2]
    config = json.load(open(os.path.join(model_dir, "adapter_config.json")))
    assert config["peft_type"] == "LORA", config
    assert config["task_type"] == "CAUSAL_LM", config
    assert not config.get("fan_in_fan_out", False), config
    assert config.get("bias", "none") == "none", config
    r = config["r"]
    scale = config["lora_alpha"] / r
    targets = config["target_modules"]
    targets = [targets] if isinstance(targets, str) else targets
    adapters = read_safetensors(os.path.join(model_dir, "adapter_model.safetensors"))
    base = {}
    for path in sorted(glob.glob(os.path.join(model_dir, "model*.safetensors"))):
        base.update(read_safetensors(path))
    os.makedirs(out_dir, exist_ok=True)
    modules = sorted({k[len(PREFIX):-len(".lora_A.weight")] for k in adapters if k.endswith(".lora_A.weight")})
    assert modules, "no lora_A tensors"
    for key in adapters:
        assert key.startswith(PREFIX) and (key.endswith(".lora_A.weight") or key.endswith(".lora_B.weight")), key
    for module in modules:
        # PEFT matches a target against the module name's last part (or the whole name).
        assert any(module == t or module.endswith("." + t) for t in targets), (module, targets)
        a = adapters[PREFIX + module + ".lora_A.weight"].astype(np.float32)
        b = adapters[PREFIX + module + ".lora_B.weight"].astype(np.float32)
        assert a.shape[0] == r and b.shape[1] == r, (module, a.shape, b.shape)
        name = module + ".weight"
        states = [k for k in base if k.startswith(name + ".quant_state.bitsandbytes__")]
        if states:
            weight = decode(base, name, json.loads(bytes(base[states[0]]).decode("utf-8")))
        else:
            weight = base[name].astype(np.float32)
        assert weight.shape == (b.shape[0], a.shape[1]), (module, weight.shape)
        merged = (weight + scale * (b @ a)).astype(np.float32)
        merged.tofile(os.path.join(out_dir, name + ".f32"))
        print(module, r, "x".join(str(d) for d in merged.shape))


if __name__ == "__main__":
    main()
