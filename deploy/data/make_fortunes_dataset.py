#!/usr/bin/env python3
"""Builds the example data set from the fortune cookie files of Debian's `fortunes` packages.

Each file under the fortune directory is one category (computers, science, food, ...); each
cookie (text between lines holding a single '%') is one example. Examples are split by a hash of
their text, so the split is stable whatever order the files are read in:
  ~94% train, ~3% calibration, ~3% evaluation.
Writes train.jsonl, calibration.jsonl and evaluation.jsonl, one {"text", "category"} per line.
"""
import argparse
import hashlib
import json
import os
import sys


def read_cookies(path):
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    cookie, out = [], []
    for line in text.splitlines():
        if line.strip() == "%":
            if cookie:
                out.append("\n".join(cookie).strip("\n"))
            cookie = []
        else:
            cookie.append(line.rstrip())
    if cookie:
        out.append("\n".join(cookie).strip("\n"))
    return [c for c in out if c.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", default="/usr/share/games/fortunes",
                        help="directory of fortune files (Debian package fortunes)")
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args()
    if not os.path.isdir(args.src):
        sys.exit(f"make_fortunes_dataset: {args.src}: not a directory (apt-get install fortunes)")

    splits = {"train": [], "calibration": [], "evaluation": []}
    seen = set()
    for name in sorted(os.listdir(args.src)):
        path = os.path.join(args.src, name)
        # Plain cookie files only: skip the .dat indexes, .u8 links and anything else.
        if "." in name or not os.path.isfile(path) or os.path.islink(path):
            continue
        for text in read_cookies(path):
            if text in seen:
                continue
            seen.add(text)
            bucket = int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % 100
            split = "evaluation" if bucket < 3 else "calibration" if bucket < 6 else "train"
            splits[split].append({"text": text, "category": name})

    os.makedirs(args.out, exist_ok=True)
    for split, rows in splits.items():
        with open(os.path.join(args.out, f"{split}.jsonl"), "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        size = sum(len(r["text"].encode("utf-8")) for r in rows)
        print(f"{split:12s} {len(rows):6d} examples {size:9d} bytes")


if __name__ == "__main__":
    main()
