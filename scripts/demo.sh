#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing, builds, then compresses the
# example teacher (a byte-level Llama trained on the fortunes corpus) with 4-bit round-to-nearest
# quantization and prints the before/after table.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build=${SQUEEZE_BUILD_DIR:-$root/build}
"$build/services/cli/squeezectl" compress \
  --model "$root/deploy/models/fortunes-teacher" \
  --data "$root/deploy/data/fortunes/evaluation.jsonl" \
  --bits 4 --group-size 128 --out "${SQUEEZE_DEMO_OUT:-$build/demo/fortunes-teacher-rtn-w4g128}"
