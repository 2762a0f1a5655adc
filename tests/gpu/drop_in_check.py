#!/usr/bin/env python3
"""Drop-in checks of our outputs with transformers itself (run on the GPU machine, which has it):

1. The example teacher's tokenizer files: AutoTokenizer loads them, encodes every evaluation text
   exactly as the byte tokenizer (ids 0-255 are the bytes), puts <s> (256) first when asked for
   special tokens, decodes back to the text; GenerationConfig loads generation_config.json.
2. A GPTQ output of ours (a compress --method gptq directory): loaded with transformers' own GPTQ
   integration when its kernels' packages (gptqmodel, or auto_gptq with optimum) are importable;
   otherwise the exact reason is printed, with which of those packages are missing.

usage: drop_in_check.py TEACHER_DIR EVALUATION_JSONL [GPTQ_DIR]"""
import importlib.util
import json
import sys

from transformers import AutoTokenizer, GenerationConfig


def check_tokenizer(teacher, evaluation):
    tok = AutoTokenizer.from_pretrained(teacher)
    texts = [json.loads(line)["text"] for line in open(evaluation) if line.strip()]
    mismatches = 0
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if ids != list(text.encode("utf-8")):
            mismatches += 1
        if tok.decode(ids) != text:
            mismatches += 1
    with_bos = tok(texts[0])["input_ids"]
    gen = GenerationConfig.from_pretrained(teacher)
    print(f"tokenizer: {type(tok).__name__}, {len(texts)} texts, {mismatches} mismatches; "
          f"bos {tok.bos_token_id} eos {tok.eos_token_id} pad {tok.pad_token_id}; "
          f"first ids with special tokens {with_bos[:3]}; generation_config eos {gen.eos_token_id}")
    assert mismatches == 0, "the tokenizer.json does not encode as the byte tokenizer"
    assert with_bos[0] == 256 and tok.eos_token_id == 257 and gen.eos_token_id == 257


def check_gptq(gptq_dir):
    kernels = {name: importlib.util.find_spec(name) is not None
               for name in ("gptqmodel", "auto_gptq", "optimum")}
    print(f"gptq kernel packages importable: {kernels}")
    from transformers import AutoModelForCausalLM
    try:
        model = AutoModelForCausalLM.from_pretrained(gptq_dir, device_map="cuda")
    except Exception as e:  # the reason is the result here
        print(f"transformers' GPTQ load: refused: {type(e).__name__}: {e}")
        return
    import torch
    ids = torch.tensor([[256] + list(b"A fortune: ")], device="cuda")
    logits = model(ids).logits
    print(f"transformers' GPTQ load: ok, {type(model).__name__}, logits {tuple(logits.shape)}, "
          f"finite {bool(torch.isfinite(logits).all())}")


if __name__ == "__main__":
    check_tokenizer(sys.argv[1], sys.argv[2])
    if len(sys.argv) > 3:
        check_gptq(sys.argv[3])
