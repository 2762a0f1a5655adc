#!/bin/bash
# GPTQ at real scale on one GPU: a Llama-3-8B-shaped checkpoint (random bf16 weights) quantized to
# 4 bits, group 128, with 128 x 2048 calibration tokens, through the real path (`squeezectl run`,
# embedded coordinator and worker, output in the file store). Then the solve alone on the same
# layer shapes, ours against the plain PyTorch per-column reference on the same weights and
# Hessians. Prints a table last.
#
# With --method awq the same job runs AWQ (4-bit g128, AutoAWQ's gemm layout) instead, and the
# solver comparison is skipped (it is GPTQ's).
#
# With --activations static|dynamic (and --smoothquant ALPHA) it runs W8A8 instead: GPTQ 8-bit
# per channel with int8 inputs, written as compressed-tensors.
#
# With --average-bits B it runs mixed precision: every linear's GPTQ error measured at 2, 3, 4 and
# 8 bits, and the widths averaging B bits with the least error (group 128).
#
# With --prune 0.5 (or --prune 2:4) SparseGPT prunes in the same GPTQ pass (joint sparsity and
# quantization).
#
# With --method nf4 it runs NF4 (block 64, double quantization, bitsandbytes' layout; no
# calibration).
#
# usage: bench/gptq_8b.sh BUILD_DIR WORK_DIR [--layers 32] [--method gptq|awq]
#            [--activations static|dynamic] [--smoothquant ALPHA] [--average-bits B]
#            [--prune SPARSITY|2:4]   (--method nf4 takes none of the options after it)
set -euo pipefail
build=${1:?build directory}
work=${2:?work directory (needs about 25 GB)}
shift 2
layers=32
method=gptq
w8a8=""
mixed=""
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) layers=$2; shift 2 ;;
    --method) method=$2; shift 2 ;;
    --activations) w8a8="$w8a8, activations: $2"; shift 2 ;;
    --smoothquant) w8a8="$w8a8, smoothquant_alpha: $2"; shift 2 ;;
    --average-bits) mixed=", mixed_precision: {average_bits: $2}"; shift 2 ;;
    --prune) case "$2" in *:*) mixed="$mixed, prune: {pattern: \"$2\"}" ;;
               *) mixed="$mixed, prune: {sparsity: $2}" ;; esac; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
case "$method" in gptq|awq|nf4) ;; *) echo "--method: expected gptq, awq or nf4, got $method" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
source "$here/llama_8b_job.sh"
if [ "$method" = nf4 ]; then
  stage="quantize: {method: nf4}"
else
  stage="quantize: {method: $method$( [ -z "$w8a8" ] && echo ", bits: 4, group_size: 128" )$w8a8$mixed, calibration_samples: 128, calibration_seq_len: 2048}"
fi
run_8b_stage "$build" "$work" "$layers" "$stage"
rm -f "$work/ours.jsonl" "$work/reference.jsonl"
if [ "$method" = gptq ] && [ -z "$w8a8" ] && [ -z "$mixed" ]; then
  "$build/bench/gptq_solver_bench" --device cuda --out "$work/cases.safetensors" > "$work/ours.jsonl"
  python3 "$here/gptq_reference.py" "$work/cases.safetensors" > "$work/reference.jsonl"
fi
python3 - "$gen" "$work" "$start" "$end" "$store_bytes" <<'PY'
import glob, json, os, sys
gen, work, start, end, store_bytes = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
report = json.load(open(glob.glob(work + "/state/store/jobs/*/report.json")[0]))
stage = [s for s in report["stages"] if s["kind"] == "quantize"][0]["result"]
ours = [json.loads(l) for l in open(work + "/ours.jsonl")] if os.path.exists(work + "/ours.jsonl") else []
ref = {r["case"]: r for r in map(json.loads, open(work + "/reference.jsonl"))} if ours else {}
gib = 2**30
print("\n== %s %d-bit g%d, inputs %s (%s layout), %d layers, 128 x 2048 calibration tokens ==" % (stage["method"].upper(), stage["bits"], stage["group_size"], stage.get("activations", "none"), stage["format"], stage["layers"]))
print("%-44s %10.1f s" % ("wall, squeezectl run (submit to report)", end - start))
print("%-44s %10.1f s" % ("quantize task", stage["seconds"]))
if stage.get("bits_by_module"):
    counts = {}
    for b in stage["bits_by_module"].values(): counts[b] = counts.get(b, 0) + 1
    print("%-44s %10.3f bits (%s)" % ("mixed precision: average", stage["average_bits"], ", ".join("%d at %d bits" % (n, b) for b, n in sorted(counts.items()))))
for phase, s in sorted(stage["phase_seconds"].items(), key=lambda kv: -kv[1]):
    print("  %-42s %10.2f s" % (phase, s))
print("%-44s %10.2f GiB" % ("peak GPU memory", stage["peak_device_memory_bytes"] / gib))
print("%-44s %10.2f GiB (%.2fx the checkpoint)" % ("peak host memory (RSS)", stage["peak_host_memory_bytes"] / gib, stage["peak_host_memory_bytes"] / gen["checkpoint_bytes"]))
print("%-44s %10.2f GiB" % ("checkpoint", gen["checkpoint_bytes"] / gib))
print("%-44s %10.2f GiB" % ("output", stage["output_bytes"] / gib))
print("%-44s %10.2f GiB (%.2fx the output)" % ("bytes written by the task", stage["bytes_written"] / gib, stage["bytes_written"] / stage["output_bytes"]))
print("%-44s %10.2f GiB" % ("store on disk after the job", store_bytes / gib))
by_linear = {}
for l in stage["linears"]:
    by_linear.setdefault(l["linear"], []).append(l["loss"])
print("per-linear loss (mean over layers / max):")
for name, losses in by_linear.items():
    print("  %-20s %12.4g %12.4g" % (name, sum(losses) / len(losses), max(losses)))
if not ours:
    sys.exit(0)
print("\n== solve alone, same weights and Hessian (bf16 inputs, fp32 accumulation) ==")
print("%-18s %-12s %10s %10s %8s %12s %12s %9s" % ("linear", "shape", "ours s", "ref s", "ratio", "ours loss", "ref loss", "loss diff"))
for o in ours:
    r = ref[o["case"]]
    print("%-18s %-12s %10.4f %10.3f %7.1fx %12.5g %12.5g %8.3f%%" % (o["case"], "%dx%d" % (o["out"], o["in"]), o["solve_seconds"], r["seconds"], r["seconds"] / o["solve_seconds"], o["loss"], r["loss"], 100 * (o["loss"] - r["loss"]) / r["loss"]))
print("\nHessian input precision: reconstruction error tr((W-Q) H (W-Q)^T) on the fp32 Hessian")
for o in ours:
    print("  %-18s bf16-input H: %.5g   fp32 H: %.5g   (%+.3f%%)" % (o["case"], o["error_bf16_hessian"], o["error_fp32_hessian"], 100 * (o["error_bf16_hessian"] / o["error_fp32_hessian"] - 1)))
PY
