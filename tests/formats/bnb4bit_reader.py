#!/usr/bin/env python3
"""An independent reader of bitsandbytes' 4-bit layout, with numpy only: parses the safetensors
files of a model directory by hand, decodes every `*.weight` that has a
`.quant_state.bitsandbytes__nf4` (or `__fp4`) companion and writes it, float32, row-major, to
OUT_DIR/<name>.f32. It follows bitsandbytes' own decoding (functional.py dequantize_4bit and
dequantize_blockwise): high nibble first, code values from the stored quant_map, block scales from
`absmax`, or from uint8 codes through nested_quant_map * nested_absmax + nested_offset.

usage: bnb4bit_reader.py MODEL_DIR OUT_DIR   (prints one line per weight: name and shape)
"""
import glob
import json
import os
import struct
import sys

import numpy as np

DTYPES = {"U8": np.uint8, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        if info["dtype"] == "BF16":
            raw = np.frombuffer(data[begin:end], dtype=np.uint16).astype(np.uint32) << 16
            out[name] = raw.view(np.float32).reshape(info["shape"])
        else:
            out[name] = np.frombuffer(data[begin:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def decode(tensors, name, state):
    shape = state["shape"]
    n = int(np.prod(shape))
    block = state["blocksize"]
    packed = tensors[name].reshape(-1)
    codes = np.empty(packed.size * 2, dtype=np.int64)
    codes[0::2] = packed >> 4
    codes[1::2] = packed & 0xF
    values = tensors[name + ".quant_map"].astype(np.float32)[codes[:n]]
    absmax = tensors[name + ".absmax"]
    if "nested_offset" in state:
        nested = tensors[name + ".nested_quant_map"].astype(np.float32)[absmax.astype(np.int64)]
        scale = np.repeat(tensors[name + ".nested_absmax"].astype(np.float32), state["nested_blocksize"])
        absmax = nested * scale[: absmax.size] + np.float32(state["nested_offset"])
    scales = np.repeat(absmax.astype(np.float32), block)[:n]
    return (values * scales).astype(np.float32).reshape(shape)


def main():
    model_dir, out_dir = sys.argv[1], sys.argv[2]
    config = json.load(open(os.path.join(model_dir, "config.json")))
    qc = config["quantization_config"]
    assert qc["quant_method"] == "bitsandbytes" and qc["load_in_4bit"], qc
    os.makedirs(out_dir, exist_ok=True)
    tensors = {}
    for path in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        tensors.update(read_safetensors(path))
    for key in sorted(tensors):
        for kind in ("nf4", "fp4"):
            suffix = ".quant_state.bitsandbytes__" + kind
            if not key.endswith(suffix):
                continue
            name = key[: -len(suffix)]
            state = json.loads(bytes(tensors[key]).decode("utf-8"))
            assert state["quant_type"] == kind == qc["bnb_4bit_quant_type"], state
            weight = decode(tensors, name, state)
            weight.tofile(os.path.join(out_dir, name + ".f32"))
            print(name, "x".join(str(d) for d in weight.shape))


if __name__ == "__main__":
    main()
