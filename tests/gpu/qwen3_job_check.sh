#!/bin/bash
# Qwen3 through a job on the GPU: the random Qwen3 model that reference_check.py saved (its logits
# already checked against transformers) is evaluated, GPTQ-quantized and evaluated again by
# `squeezectl compress --device cuda`, on token ids (the model has no tokenizer). Prints the
# before/after table; fails when the job fails or the 8-bit model's perplexity moves more than 2%.
#
# usage: tests/gpu/qwen3_job_check.sh BUILD_DIR REFERENCE_OUT_DIR
set -euo pipefail
build=${1:?build directory}
ref=${2:?the --out directory of reference_check.py}
work=$(mktemp -d)
python3 - "$work/ids.jsonl" <<'PY'
import json, random, sys
random.seed(0)
with open(sys.argv[1], "w") as f:
    for _ in range(64):
        f.write(json.dumps({"input_ids": [random.randrange(600) for _ in range(96)]}) + "\n")
PY
"$build/services/cli/squeezectl" compress --model "$ref/qwen3" --data "$work/ids.jsonl" \
  --method gptq --calibration "$work/ids.jsonl" --samples 32 --seq-len 64 --bits 8 \
  --group-size 32 --window 64 --stride 32 --device cuda --state-dir "$work/state" \
  --out "$work/qwen3-gptq8" --json > "$work/summary.json"
python3 - "$work/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
before, after = s["baseline"]["perplexity"], s["compressed"]["perplexity"]
print(f"qwen3 gptq w8 g32 on cuda: perplexity {before:.4f} -> {after:.4f}, "
      f"retention {s['retention']:.4f}, packed {s['compressed_bytes_packed'] / 1e6:.2f} MB "
      f"of {s['baseline_bytes'] / 1e6:.2f} MB")
sys.exit(0 if abs(after / before - 1) < 0.02 else 1)
PY
grep -q '"self_attn.q_norm.weight"\|q_norm' "$work/qwen3-gptq8/model.safetensors.index.json"
echo "q_norm/k_norm present in the quantized checkpoint"
