#!/bin/bash
# SparseGPT against magnitude and Wanda on the example teacher (50% unstructured and 2:4, one-shot,
# no recovery), and joint 50% + 4-bit GPTQ against Wanda 50% followed by GPTQ 4-bit. Each row is a
# job on the embedded service; perplexity on the first 200 evaluation examples (teacher 4.480).
# DEVICE=cuda runs the jobs on a GPU.
cd "$(dirname "$0")/.."
ctl=${SQUEEZECTL:-build/services/cli/squeezectl}
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
row() {  # label, then the stages before the evaluation (YAML list items)
  local label=$1 stages=$2
  cat > "$work/recipe.yaml" <<YAML
model: $root/deploy/models/fortunes-teacher
data:
  calibration: $root/deploy/data/fortunes/calibration.jsonl
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
print("%-44s %8.4f" % (sys.argv[1], ev["perplexity"]))
PY
}
for pattern in unstructured '"2:4"'; do
  for method in magnitude wanda sparsegpt; do
    row "$method $pattern 50%" "  - prune: {method: $method, pattern: $pattern, sparsity: 0.5}"
  done
done
row "sparsegpt 4:8 50%" '  - prune: {method: sparsegpt, pattern: "4:8"}'
q="quantize: {method: gptq, bits: 4, group_size: 128"
row "gptq 4-bit g128 (dense)" "  - $q}"
row "joint: sparsegpt 50% + gptq 4-bit, one pass" "  - $q, prune: {sparsity: 0.5}}"
row "wanda 50%, then gptq 4-bit (zeros kept)" "  - prune: {method: wanda, sparsity: 0.5}
  - $q}"
row "sparsegpt 50%, then gptq 4-bit (zeros kept)" "  - prune: {method: sparsegpt, sparsity: 0.5}
  - $q}"
row "joint: sparsegpt 2:4 + gptq 4-bit, one pass" "  - $q, prune: {pattern: \"2:4\"}}"
