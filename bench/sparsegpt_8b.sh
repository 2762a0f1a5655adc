#!/bin/bash
# SparseGPT's prune stage at real scale on one GPU: a Llama-3-8B-shaped checkpoint (random bf16
# weights) pruned to 50% unstructured (or 2:4, written in the sparse-24-bitmask layout) with
# 128 x 2048 calibration tokens, through the real path (`squeezectl run`, embedded coordinator and
# worker, output in the file store). The stage streams one decoder layer at a time: peak host
# memory is printed against the checkpoint's size, which an in-memory pass would hold whole.
#
# usage: bench/sparsegpt_8b.sh BUILD_DIR WORK_DIR [--layers 32] [--pattern unstructured|2:4]
set -euo pipefail
build=${1:?build directory}
work=${2:?work directory (needs about 35 GB)}
shift 2
layers=32
pattern=unstructured
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) layers=$2; shift 2 ;;
    --pattern) pattern=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
case "$pattern" in
  unstructured) target="pattern: unstructured, sparsity: 0.5" ;;
  2:4) target="pattern: \"2:4\", format: sparse_24_bitmask" ;;
  *) echo "--pattern: expected unstructured or 2:4, got $pattern" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
source "$here/llama_8b_job.sh"
run_8b_stage "$build" "$work" "$layers" \
  "prune: {method: sparsegpt, $target, calibration_samples: 128, calibration_seq_len: 2048}"
python3 - "$gen" "$work" "$start" "$end" "$store_bytes" "$layers" <<'PY'
import glob, json, sys
gen, work, start, end, store_bytes, layers = json.loads(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
report = json.load(open(glob.glob(work + "/state/store/jobs/*/report.json")[0]))
stage = [s for s in report["stages"] if s["kind"] == "prune"][0]["result"]
gib = 2**30
print("\n== SparseGPT %s, %d layers, 128 x 2048 calibration tokens, format %s ==" % (stage["pattern"], layers, stage["format"]))
print("%-44s %10.1f s" % ("wall, squeezectl run (submit to report)", end - start))
print("%-44s %10.1f s" % ("prune task", stage["seconds"]))
print("%-44s %10.4f" % ("sparsity achieved", stage["sparsity"]))
print("%-44s %10.2f GiB" % ("peak GPU memory", stage["peak_device_memory_bytes"] / gib))
print("%-44s %10.2f GiB (%.2fx the checkpoint)" % ("peak host memory (RSS)", stage["peak_host_memory_bytes"] / gib, stage["peak_host_memory_bytes"] / gen["checkpoint_bytes"]))
print("%-44s %10.2f GiB" % ("checkpoint", gen["checkpoint_bytes"] / gib))
print("%-44s %10.2f GiB" % ("store on disk after the job (output)", store_bytes / gib))
PY
