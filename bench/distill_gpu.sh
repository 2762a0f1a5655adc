#!/bin/bash
# Squeeze's distill step against transformers + a plain PyTorch loop, same shapes and precision,
# in the same run on one GPU. Usage: bench/distill_gpu.sh BUILD_DIR [--batch N ...]
set -euo pipefail
build=${1:?build directory}
shift
here=$(cd "$(dirname "$0")" && pwd)
ours=$("$build/bench/distill_gpu_bench" "$@")
echo "$ours" | head -1
ref=$(python3 "$here/distill_hf_reference.py" "$@")
echo "$ref" | head -1
python3 - "$(echo "$ours" | tail -1)" "$(echo "$ref" | tail -1)" <<'PY'
import json, sys
ours, ref = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("ratio: %.2fx transformers' tokens/s (target >= 1.3x); MFU %.1f%% vs %.1f%% (target >= 40%%)"
      % (ours["tokens_per_second"] / ref["tokens_per_second"], 100 * ours["mfu"], 100 * ref["mfu"]))
PY
