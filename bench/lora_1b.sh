#!/bin/bash
# Adapter training on a frozen NF4 base against full distillation, on a Llama-3.2-1B-shaped
# checkpoint (random bf16 weights) on a GPU: peak GPU memory and training tokens/s of the distill
# stage, each row a job on the embedded service. The first row, full distillation (float32 master
# weights and AdamW state, bf16 autocast, the model teaching a copy of itself), is the reference
# the others are read against. The LoRA rows quantize to NF4 first, then train rank-16 adapters on
# all seven linears of every layer; "kd" runs the bf16 original as the teacher, "ce" no teacher.
# tokens/s is the median of the logged training steps' (the stage's wall time also holds loading
# and the final checkpoint, which for full distillation is the whole float32 optimizer state).
#
# usage: [BATCH=8] [SEQ=1024] bench/lora_1b.sh BUILD_DIR WORK_DIR [STEPS]
set -euo pipefail
build=$1 work=$2 steps=${3:-12}
batch=${BATCH:-8} seq=${SEQ:-1024}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
if ! grep -qs '"hidden_size": 2048' "$work/model/config.json"; then
  rm -rf "$work/model"
  python3 "$here/make_llama_checkpoint.py" "$work/model" --shape 1b --samples 256 --seq-len 1024 \
    > "$work/gen.json"
fi
train="batch_size: $batch, seq_len: $seq, steps: $steps, warmup_steps: 2, lr: 0.0002, log_every: 2,
              checkpoint_every: 0"
lora="targets: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj], rank: 16, alpha: 32"
job() {
  local label=$1 stages=$2
  cat > "$work/recipe.yaml" <<YAML
model: $work/model
data: {train: $work/calibration.jsonl}
stages:
$stages
YAML
  rm -rf "$work/state"
  "$build/services/cli/squeezectl" run "$work/recipe.yaml" --device cuda --state-dir "$work/state" \
    --json > "$work/report.json" 2> "$work/run.log" || { echo "$label: failed"; tail -20 "$work/run.log"; return; }
  python3 - "$label" "$work/state" "$work/reference.json" <<'PY'
import glob, json, os, sys
label, state, ref_path = sys.argv[1:]
r = json.load(open(glob.glob(state + "/store/jobs/*/report.json")[0]))
d = [s for s in r["stages"] if s["kind"] == "distill"][-1]["result"]
gib = d.get("peak_device_memory_bytes", 0) / 2**30
steps = sorted(p["tokens_per_second"] for p in d["loss_curve"][1:])
tps = steps[len(steps) // 2]
if not os.path.exists(ref_path):
    json.dump({"gib": gib, "tps": tps}, open(ref_path, "w"))
ref = json.load(open(ref_path))
print("%-40s %7.2f GiB GPU (%5.3fx)  %8.0f tokens/s (%5.2fx)  loss %.3f" %
      (label, gib, gib / ref["gib"], tps, tps / ref["tps"], d.get("final_loss", float("nan"))))
PY
}
rm -f "$work/reference.json"
echo "batch $batch x $seq tokens, $steps steps"
job "full distillation, bf16 autocast" \
  "  - distill: {student: {keep_every: 1}, $train}"
job "lora r16 on nf4, kd (bf16 teacher)" \
  "  - quantize: {method: nf4}
  - distill: {lora: {$lora}, $train}"
job "lora r16 on nf4, ce (no teacher)" \
  "  - quantize: {method: nf4}
  - distill: {lora: {$lora, loss: ce}, $train}"
job "lora r16 on nf4, ce, no checkpointing" \
  "  - quantize: {method: nf4}
  - distill: {lora: {$lora, loss: ce, gradient_checkpointing: false}, $train}"
job "lora r16 on bf16 (freeze_base), ce" \
  "  - distill: {lora: {$lora, loss: ce, freeze_base: true}, $train}"
