#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing, builds, then runs the example
# recipe with `squeezectl run` (an embedded coordinator and worker over a local state directory):
# evaluate the example teacher, quantize it to 4 bits, evaluate again against a retention gate,
# and print the report. The compressed model and report.json land in build/demo/output.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build=${SQUEEZE_BUILD_DIR:-$root/build}
"$build/services/cli/squeezectl" run "$root/deploy/recipes/fortunes-rtn.yaml" \
  --state-dir "$build/demo/state" --output "$build/demo/output"
