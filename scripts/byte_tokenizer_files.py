#!/usr/bin/env python3
"""Writes the Hugging Face tokenizer files of a byte-level model (squeeze_byte_tokenizer: ids 0-255
are the bytes, 256 <s>, 257 </s>, 258 <pad>), so that transformers' AutoTokenizer and vLLM load it:
tokenizer.json, tokenizer_config.json, special_tokens_map.json and generation_config.json.

tokenizer.json is a BPE model with no merges over the byte-level alphabet (each byte's printable
stand-in, in byte order), so every byte is one token whose id is the byte. The ByteLevel
pre-tokenizer maps bytes to those stand-ins without splitting (use_regex false); its decoder maps
them back.

usage: byte_tokenizer_files.py MODEL_DIR [--max-length N]
"""
import argparse
import json
import os

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
SPECIAL = [(256, BOS), (257, EOS), (258, PAD)]


def byte_stand_ins():
    """The byte-level alphabet: printable Latin-1 bytes stand for themselves; the others (controls,
    space, soft hyphen...) take the code points from 256 up, in byte order."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
                 + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    out, extra = {}, 0
    for b in range(256):
        if b in printable:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def tokenizer_json():
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                  "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, c in SPECIAL],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        # <s> first, as the model was trained (every window starts with it).
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": BOS, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": BOS, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {BOS: {"id": BOS, "ids": [256], "tokens": [BOS]}},
        },
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None,
            "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False,
            "byte_fallback": False, "ignore_merges": False,
            "vocab": {ch: b for b, ch in byte_stand_ins().items()},
            "merges": [],
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}
    files = {
        "tokenizer.json": tokenizer_json(),
        "tokenizer_config.json": {
            **special, "add_bos_token": True, "add_eos_token": False,
            "clean_up_tokenization_spaces": False, "model_max_length": args.max_length,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "added_tokens_decoder": {str(i): {"content": c, "lstrip": False, "normalized": False,
                                              "rstrip": False, "single_word": False,
                                              "special": True} for i, c in SPECIAL},
        },
        "special_tokens_map.json": special,
        "generation_config.json": {"bos_token_id": 256, "eos_token_id": 257, "pad_token_id": 258},
    }
    for name, content in files.items():
        with open(os.path.join(args.model_dir, name), "w") as f:
            json.dump(content, f, indent=2, ensure_ascii=False)
            f.write("\n")
    print(f"wrote {', '.join(files)} into {args.model_dir}")


if __name__ == "__main__":
    main()
