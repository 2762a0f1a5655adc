#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (CPU; GPU tests are in tests/gpu/).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/install-test-peers.sh"
"$root/scripts/build.sh" -DSQUEEZE_WERROR=ON
(cd "${SQUEEZE_BUILD_DIR:-$root/build}" && ctest --output-on-failure -j"$(nproc)" --timeout 600)
# The parsers of untrusted input under libFuzzer, and the torch-free tests under ASan+UBSan.
"$root/scripts/fuzz.sh"
