#!/bin/bash
# A reference model through jobs on the GPU: one of the random models reference_check.py saved (its
# logits already checked against transformers) runs two recipes with `squeezectl run --device
# cuda`, on token ids (the models have no tokenizer):
#   evaluate -> GPTQ 8-bit -> evaluate                          perplexity must move < 2%
#   evaluate -> Wanda 50% -> RTN 8-bit -> evaluate              must finish with a finite perplexity
# and the GPTQ checkpoint must hold every non-linear tensor (norms) of the source. Prints a table.
#
# usage: tests/gpu/model_job_check.sh BUILD_DIR REFERENCE_OUT_DIR MODEL   (e.g. qwen3, gemma3)
set -euo pipefail
build=${1:?build directory}
ref=${2:?the --out directory of reference_check.py}
name=${3:?a model saved by reference_check.py}
model="$ref/$name"
work=$(mktemp -d)
vocab=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$model/config.json")
python3 - "$work/ids.jsonl" "$vocab" <<'PY'
import json, random, sys
random.seed(0)
with open(sys.argv[1], "w") as f:
    for _ in range(64):
        f.write(json.dumps({"input_ids": [random.randrange(int(sys.argv[2])) for _ in range(96)]}) + "\n")
PY
cat > "$work/gptq.yaml" <<EOF2
model: $model
data: {calibration: $work/ids.jsonl, evaluation: [$work/ids.jsonl]}
stages:
  - evaluate: {window: 64, stride: 32, metrics: [perplexity, size]}
  - quantize: {method: gptq, bits: 8, group_size: 32, calibration_samples: 32, calibration_seq_len: 64}
  - evaluate: {window: 64, stride: 32, metrics: [perplexity, size]}
EOF2
cat > "$work/prune.yaml" <<EOF2
model: $model
data: {calibration: $work/ids.jsonl, evaluation: [$work/ids.jsonl]}
stages:
  - evaluate: {window: 64, stride: 32, metrics: [perplexity, size]}
  - prune: {method: wanda, sparsity: 0.5, calibration_samples: 32, calibration_seq_len: 64}
  - quantize: {method: rtn, bits: 8, group_size: 32}
  - evaluate: {window: 64, stride: 32, metrics: [perplexity, size]}
EOF2
for recipe in gptq prune; do
  "$build/services/cli/squeezectl" run "$work/$recipe.yaml" --device cuda \
    --state-dir "$work/state-$recipe" --output "$work/out-$recipe" --json > "$work/$recipe.json"
done
python3 - "$work" "$name" "$model" <<'PY'
import json, math, os, sys
work, name, model = sys.argv[1:]
ok = True
for recipe in ("gptq", "prune"):
    r = json.load(open(os.path.join(work, recipe + ".json")))
    evals = [s["result"] for s in r["stages"] if s["kind"] == "evaluate"]
    before, after = evals[0]["perplexity"], evals[-1]["perplexity"]
    good = math.isfinite(after) and (recipe != "gptq" or abs(after / before - 1) < 0.02)
    ok = ok and good
    print(f"{name:10s} {recipe:6s} on cuda: perplexity {before:10.4f} -> {after:10.4f} "
          f"{'PASS' if good else 'FAIL'}")
# Every tensor of the source that is not a linear's weight or bias is in the GPTQ checkpoint.
def names(d):
    index = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(index):
        return set(json.load(open(index))["weight_map"])
    from safetensors import safe_open
    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        return set(f.keys())
linear = ("_proj.weight", "_proj.bias")
wanted = {n for n in names(model) if not n.endswith(linear)}
missing = wanted - names(os.path.join(work, "out-gptq", "model"))
print(f"{name:10s} gptq checkpoint: {len(wanted) - len(missing)}/{len(wanted)} norms and "
      f"embeddings kept" + (f"; missing {sorted(missing)[:5]}" if missing else ""))
sys.exit(0 if ok and not missing else 1)
PY
