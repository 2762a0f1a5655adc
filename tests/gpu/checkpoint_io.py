"""Shared by the format checks: reading every safetensors shard of a checkpoint, and comparing a
transformers model built from independently dequantized weights with our own loader."""
import argparse
import glob
import json
import os
import subprocess

import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "formats"))
from bnb4bit_reader import decode  # noqa: E402


def load_all_tensors(directory):
    """Every tensor of every .safetensors file in `directory` (one file or an index's shards)."""
    tensors = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.safetensors"))):
        if path.endswith(".reference.safetensors"):
            continue
        tensors.update(load_file(path))
    return tensors


def decode_bnb4bit_checkpoint(directory, kind="nf4"):
    """The model weights of a bitsandbytes 4-bit checkpoint as dense float32 tensors (by name),
    decoded with the numpy reader (tests/formats/bnb4bit_reader.py); adapter tensors beside them
    are left out. Returns (weights, number of 4-bit linears)."""
    tensors = {k: v.numpy() if v.dtype != torch.bfloat16 else v.float().numpy()
               for k, v in load_all_tensors(directory).items() if not k.startswith("base_model.")}
    suffix = ".quant_state.bitsandbytes__" + kind
    quantized = {k[: -len(suffix)] for k in tensors if k.endswith(suffix)}
    dense = {}
    for name, t in tensors.items():
        if name in quantized:
            state = json.loads(bytes(tensors[name + suffix]).decode("utf-8"))
            dense[name] = torch.from_numpy(decode(tensors, name, state))
        elif not any(name.startswith(q + ".") for q in quantized):
            dense[name] = torch.from_numpy(t).float()
    return dense, len(quantized)


def compare_with_our_loader(directory, dense, binary, prepare=None):
    """Loads `dense` (name -> float tensor) into transformers' LlamaForCausalLM built from the
    directory's config (then `prepare(model)`, when given, e.g. to install input quantization),
    and returns reference_logits' relative error of our loader against it."""
    config = json.load(open(os.path.join(directory, "config.json")))
    hf_config = {k: v for k, v in config.items() if k != "quantization_config"}
    model = LlamaForCausalLM(LlamaConfig(**hf_config)).eval().float()
    model.config._attn_implementation = "eager"
    missing, unexpected = model.load_state_dict(dense, strict=False)
    missing = [m for m in missing if m != "lm_head.weight"]  # tied to the embeddings
    assert not missing and not unexpected, (missing, unexpected)
    model.tie_weights()
    if prepare is not None:
        prepare(model)
    ids = torch.randint(0, 256, (2, 96))
    with torch.no_grad():
        logits = model(ids).logits.float()
    ref = os.path.join(directory, "hf.reference.safetensors")
    save_file({"input_ids": ids, "logits_float32": logits.contiguous(),
               "logits_bfloat16": logits.clone()}, ref)
    proc = subprocess.run([binary, directory, ref, "cpu"], capture_output=True, text=True)
    os.remove(ref)
    # reference_logits exits 1 when its own (tighter, unquantized) bounds fail; the caller judges
    # the error against its own bound, so only a missing result is a failure here.
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"reference_logits failed ({proc.returncode}): {proc.stderr}")
    return json.loads(lines[-1])["rel_err_float32"]


def parse_check_args():
    """The format checks' command line; returns it with the example teacher's and data's paths."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--squeezectl", required=True)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return (args, os.path.join(root, "deploy/models/fortunes-teacher"),
            os.path.join(root, "deploy/data/fortunes"))


def compress_teacher(args, teacher, data, out, method, extra):
    """`squeezectl compress` of the teacher into `out` (32 calibration windows, evaluation on
    128-byte windows); returns the output's quantization_config."""
    cmd = [args.squeezectl, "compress", "--model", teacher, "--data", f"{data}/evaluation.jsonl",
           "--method", method, "--calibration", f"{data}/calibration.jsonl", "--samples", "32",
           "--out", out, "--json", "--window", "128", "--stride", "64",
           "--device", args.device] + extra
    subprocess.run(cmd, check=True, capture_output=True)
    return json.load(open(os.path.join(out, "config.json")))["quantization_config"]
