# Sourced by the quality benchmarks on the example teacher: quality_row LABEL DATA STAGES runs one
# job on the embedded service (squeezectl run; DEVICE=cuda for a GPU) whose recipe has the data
# block's lines DATA (calibration, ...; evaluation is added) and the stages STAGES (YAML list
# items, possibly none) followed by an evaluation on the first 200 evaluation examples, and
# prints the label, the perplexity and, when a quantize stage ran, its bits per weight. With
# TASKS=1 the evaluation also scores the example task file and the row prints its accuracy (acc
# and per-byte acc_norm).
bench_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bench_ctl=${SQUEEZECTL:-$bench_root/build/services/cli/squeezectl}
bench_work=$(mktemp -d)
trap 'rm -rf "$bench_work"' EXIT
quality_row() {
  local label=$1 data=$2 stages=$3
  cat > "$bench_work/recipe.yaml" <<YAML
model: $bench_root/deploy/models/fortunes-teacher
data:
$data
  evaluation: [$bench_root/deploy/data/fortunes/evaluation.jsonl]
$([ "${TASKS:-0}" = 1 ] && echo "  tasks: [$bench_root/deploy/data/fortunes/tasks.jsonl]")
stages:
$stages
  - evaluate: {max_examples: 200}
YAML
  rm -rf "$bench_work/state"
  "$bench_ctl" run "$bench_work/recipe.yaml" --device "${DEVICE:-cpu}" --state-dir "$bench_work/state" \
    --json > "$bench_work/report.json" 2> "$bench_work/log" || {
    echo "$label: failed"
    tail -5 "$bench_work/log"
    return
  }
  python3 - "$label" "$bench_work/state" <<'PY'
import glob, json, sys
r = json.load(open(glob.glob(sys.argv[2] + "/store/jobs/*/report.json")[0]))
ev = [s for s in r["stages"] if s["kind"] == "evaluate"][-1]["result"]
q = [s for s in r["stages"] if s["kind"] == "quantize"]
bits = " %8.3f bits/weight" % q[0]["result"]["bits_per_quantized_weight"] if q else ""
t = ev.get("tasks")
acc = "  task acc %.3f, acc_norm %.3f" % (t["acc"], t["acc_norm"]) if t else ""
print("%-44s %8.4f%s%s" % (sys.argv[1], ev["perplexity"], bits, acc))
PY
}
