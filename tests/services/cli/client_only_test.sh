#!/usr/bin/env bash
# The client-only squeezectl (SQUEEZE_WITH_TORCH=OFF) against a real coordinator of the same
# build: submit, list, get, cancel and the store commands work; local compute commands say which
# build they need.  Usage: client_only_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd)
ctl=$build/services/cli/squeezectl
work=$(mktemp -d)
trap 'kill "$coordinator" 2>/dev/null || true; rm -rf "$work"' EXIT
fail() { echo "client_only_test: $*" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$build/services/coordinator/squeeze-coordinator" --listen "127.0.0.1:$port" \
  --state-dir "$work/state" > "$work/coordinator.log" 2>&1 &
coordinator=$!
export SQUEEZE_COORDINATOR=127.0.0.1:$port
for _ in $(seq 100); do "$ctl" list > /dev/null 2>&1 && break; sleep 0.1; done

cat > "$work/recipe.yaml" <<YAML
model: $src/deploy/models/fortunes-teacher
stages:
  - quantize: {method: rtn, bits: 8}
YAML
job=$("$ctl" submit "$work/recipe.yaml" --request-id laptop-1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
[ -n "$job" ] || fail "no job id"
again=$("$ctl" submit "$work/recipe.yaml" --request-id laptop-1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
[ "$job" = "$again" ] || fail "the same request id made a second job"
"$ctl" list | grep -q "$job" || fail "list does not show $job"
"$ctl" get "$job" | grep -q QUEUED || fail "get: $job is not QUEUED (no worker)"
"$ctl" cancel "$job" > /dev/null
"$ctl" get "$job" | grep -q CANCELLED || fail "cancel did not cancel $job"

# Store commands need no libtorch either.
mkdir -p "$work/model" && echo '{}' > "$work/model/config.json"
"$ctl" store-put "$work/model" "file://$work/store/models/m" --store "file://$work/store" > /dev/null
[ -f "$work/store/models/m/manifest.json" ] || fail "store-put wrote no manifest"
# store-rm deletes it, after which its blob goes at the next collection; a second rm is an error.
"$ctl" store-rm "file://$work/store/models/m" --store "file://$work/store" > /dev/null
[ ! -e "$work/store/models/m/manifest.json" ] || fail "store-rm left the manifest"
"$ctl" store-gc --store "file://$work/store" --grace-hours 0 --json | grep -q '"blobs_deleted":1' \
  || fail "store-gc did not free the deleted artifact's blob"
set +e
out=$("$ctl" store-rm "file://$work/store/models/m" --store "file://$work/store" 2>&1); code=$?
set -e
[ "$code" = 2 ] || fail "store-rm of a missing artifact exited $code"
echo "$out" | grep -q "no such artifact" || fail "store-rm: $out"

# Local compute says which build it needs, and exits 2.
set +e
out=$("$ctl" run "$work/recipe.yaml" 2>&1); code=$?
set -e
[ "$code" = 2 ] || fail "run in the client-only build exited $code"
echo "$out" | grep -q "needs the build with libtorch" || fail "run: $out"
echo "client_only_test: passed"
