#!/bin/bash
# NF4 against 4-bit integers at the same block of 64 on the example teacher (round to nearest, no
# calibration; perplexity on the first 200 evaluation examples). Each row is a job on the embedded
# service; the first row is the teacher itself, the reference every other row is read against.
# DEVICE=cuda runs the jobs on a GPU.
cd "$(dirname "$0")/.."
ctl=${SQUEEZECTL:-build/services/cli/squeezectl}
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
row() {  # label, then the stages before the evaluation (YAML list items, may be empty)
  local label=$1 stages=$2
  cat > "$work/recipe.yaml" <<YAML
model: $root/deploy/models/fortunes-teacher
data:
  evaluation: [$root/deploy/data/fortunes/evaluation.jsonl]
stages:
$stages
  - evaluate: {max_examples: 200}
YAML
  rm -rf "$work/state"
  "$ctl" run "$work/recipe.yaml" --device "${DEVICE:-cpu}" --state-dir "$work/state" --json \
    > "$work/report.json" 2> "$work/log" || { echo "$label: failed"; tail -5 "$work/log"; return; }
  python3 - "$label" "$work/state" <<'PY'
import glob, json, sys
r = json.load(open(glob.glob(sys.argv[2] + "/store/jobs/*/report.json")[0]))
ev = [s for s in r["stages"] if s["kind"] == "evaluate"][-1]["result"]
q = [s for s in r["stages"] if s["kind"] == "quantize"]
bits = q[0]["result"].get("bits_per_quantized_weight", 0) if q else 16
print("%-40s %8.4f %8.3f bits/weight" % (sys.argv[1], ev["perplexity"], bits))
PY
}
row "teacher (float)" ""
row "int4 rtn g64, symmetric" "  - quantize: {method: rtn, bits: 4, group_size: 64, sym: true}"
row "int4 rtn g64, asymmetric" "  - quantize: {method: rtn, bits: 4, group_size: 64}"
row "fp4 g64" "  - quantize: {method: fp4, group_size: 64, double_quant: false}"
row "nf4 g64" "  - quantize: {method: nf4, group_size: 64, double_quant: false}"
row "nf4 g64, double quantization" "  - quantize: {method: nf4, group_size: 64}"
