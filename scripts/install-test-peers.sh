#!/usr/bin/env bash
# Installs the independent servers the tests run against that Debian does not package (s3rver, a
# second S3 implementation beside moto_server) from npm into tests/peers/node_modules. Idempotent.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
peers="$root/tests/peers"
if [ -x "$peers/node_modules/.bin/s3rver" ]; then
  echo "install-test-peers: present"
  exit 0
fi
command -v npm >/dev/null || { echo "install-test-peers: npm is missing (install-deps.sh installs it)" >&2; exit 1; }
(cd "$peers" && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
