#!/usr/bin/env python3
"""Builds the example's multiple-choice task from the evaluation split of the fortunes data.

Each question is the first part of a fortune (cut at a word boundary near the middle); the
choices are its true continuation and the continuations of three other fortunes of the same
category, in an order drawn from a seeded generator. A model that has learned the corpus picks
the true continuation more often than a quarter of the time. Writes one
{"context", "choices", "label", "category"} per line.

usage: make_fortunes_tasks.py EVALUATION.jsonl OUT.jsonl
"""
import json
import random
import sys


def split_point(text):
    """A space near the middle of `text`, or None when the fortune is too short to split."""
    if len(text) < 60:
        return None
    middle = len(text) // 2
    for offset in range(len(text) // 4):
        for at in (middle - offset, middle + offset):
            if 0 < at < len(text) and text[at] == " ":
                return at
    return None


def main():
    source, out = sys.argv[1], sys.argv[2]
    halves = {}  # category -> [(context, continuation)]
    with open(source, encoding="utf-8") as f:
        for line in f:
            example = json.loads(line)
            text = example["text"]
            at = split_point(text)
            if at is None:
                continue
            halves.setdefault(example["category"], []).append((text[:at], text[at:]))
    rng = random.Random(20261202)
    written = 0
    with open(out, "w", encoding="utf-8") as f:
        for category in sorted(halves):
            pairs = halves[category]
            if len(pairs) < 4:
                continue
            for i, (context, truth) in enumerate(pairs):
                others = [c for j, (_, c) in enumerate(pairs) if j != i and c != truth]
                if len(others) < 3:
                    continue
                choices = rng.sample(others, 3) + [truth]
                rng.shuffle(choices)
                f.write(json.dumps({"context": context, "choices": choices,
                                    "label": choices.index(truth), "category": category}) + "\n")
                written += 1
    print(f"{written} questions in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
