# Sourced by the 8B benchmarks: run_8b_stage BUILD WORK LAYERS STAGE runs one stage (a YAML flow
# mapping, "quantize: {...}") on a Llama-3-8B-shaped checkpoint of LAYERS layers (random bf16
# weights, made once per WORK and reused) through `squeezectl run --device cuda`. It leaves
# gen (the checkpoint's JSON facts), start and end (wall-clock seconds) and store_bytes set, and
# the job's report under WORK/state/store.
run_8b_stage() {
  local build=$1 work=$2 layers=$3 stage=$4
  local here
  here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  mkdir -p "$work"
  rm -rf "$work/state"
  if [ ! -f "$work/gen.json" ] || ! grep -qs "\"num_hidden_layers\": $layers," "$work/model/config.json"; then
    rm -rf "$work/model"
    python3 "$here/make_llama_checkpoint.py" "$work/model" --layers "$layers" > "$work/gen.json"
  fi
  gen=$(cat "$work/gen.json")
  cat > "$work/recipe.yaml" <<YAML
model: $work/model
data: {calibration: $work/calibration.jsonl}
stages:
  - $stage
YAML
  sync
  start=$(date +%s.%N)
  "$build/services/cli/squeezectl" run "$work/recipe.yaml" --device cuda --state-dir "$work/state" \
    --json > "$work/report.json" 2> "$work/run.log" || { tail -20 "$work/run.log"; exit 1; }
  end=$(date +%s.%N)
  store_bytes=$(du -sb "$work/state/store" | cut -f1)
}
