#!/usr/bin/env bash
# squeezectl as a user runs it: bad input gets one line on stderr and exit code 2; good input works.
set -u
ctl=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

# expect CODE PATTERN -- ARGS...: runs squeezectl, checks the exit code and that stderr matches.
expect() {
  local code=$1 pattern=$2
  shift 3
  "$ctl" "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [ "$rc" -ne "$code" ] || ! grep -qE -- "$pattern" "$work/err" "$work/out"; then
    echo "FAIL: squeezectl $* -> rc $rc (want $code), output:"; cat "$work/err" "$work/out"
    failures=$((failures + 1))
  elif [ "$code" -eq 2 ] && [ "$(wc -l < "$work/err")" -ne 1 ]; then
    echo "FAIL: squeezectl $* -> want exactly one line on stderr, got:"; cat "$work/err"
    failures=$((failures + 1))
  else
    echo "ok: squeezectl $*"
  fi
}

# A tiny byte-level model to run against.
"$ctl" train --data "$src/deploy/data/fortunes/calibration.jsonl" --out "$work/model" \
  --hidden 32 --intermediate 64 --layers 1 --heads 2 --kv-heads 1 --steps 3 --batch-size 2 \
  --seq-len 32 --warmup 1 --checkpoint-dir "$work/ckpt" >/dev/null 2>&1 || { echo "FAIL: train"; exit 1; }
printf '{"text": "a fortune", "category": "x"}\n{"text": "another one"}\n' > "$work/good.jsonl"
printf '{"text": "fine"}\n{"text": oops}\n' > "$work/bad.jsonl"

expect 2 'unknown command "frobnicate"' -- frobnicate
expect 2 'unknown command "sumbit" \(did you mean "submit"\?\)' -- sumbit
expect 0 '^usage: squeezectl submit RECIPE \[--request-id ID\]' -- submit --help
expect 0 '^usage: squeezectl eval --model DIR --data FILE' -- help eval
expect 2 'unknown flag --modle \(did you mean --model\?\)' -- eval --modle "$work/model"
expect 2 'unknown flag --bogus' -- eval --model "$work/model" --data "$work/good.jsonl" --bogus 1
expect 2 '--model is required' -- eval --data "$work/good.jsonl"
expect 2 'missing.jsonl: cannot open' -- eval --model "$work/model" --data "$work/missing.jsonl"
expect 2 'bad.jsonl:2: not valid JSON' -- eval --model "$work/model" --data "$work/bad.jsonl"
expect 2 'nomodel" is not a directory' -- eval --model "$work/nomodel" --data "$work/good.jsonl"
expect 2 '--window: expected an integer' -- eval --model "$work/model" --data "$work/good.jsonl" --window big
expect 2 'bits: must be one of 2, 3, 4, 8' -- compress --model "$work/model" --data "$work/good.jsonl" --bits 5
expect 2 'config.json: cannot open' -- inspect "$work/nomodel"
# compress checks its flags before the baseline evaluation, and never replaces a directory of
# other files.
mkdir -p "$work/precious" && echo keep > "$work/precious/notes.txt"
start=$(date +%s)
expect 2 '--out: .*precious is a directory with other files in it' -- compress --model "$work/model" --data "$work/good.jsonl" --group-size 32 --out "$work/precious"
[ "$(cat "$work/precious/notes.txt")" = keep ] || { echo "FAIL: --out lost a file"; failures=$((failures + 1)); }
expect 2 'data.evaluation\[0\]' -- compress --model "$work/model" --data "$work/missing.jsonl" --group-size 32 --out "$work/q2"
expect 2 '--sym and --asym: choose one' -- compress --model "$work/model" --data "$work/good.jsonl" --sym --asym
[ $(($(date +%s) - start)) -lt 20 ] || { echo "FAIL: compress took its time before refusing"; failures=$((failures + 1)); }
expect 0 'perplexity' -- eval --model "$work/model" --data "$work/good.jsonl"
expect 0 '"categories"' -- eval --model "$work/model" --data "$work/good.jsonl" --json
expect 2 '--top-p: must be in \(0, 1\]' -- generate --model "$work/model" --prompt "a" --top-p 0
expect 2 '--prompt is required' -- generate --model "$work/model"
expect 0 '"stop_reason"' -- generate --model "$work/model" --prompt "The " --max-new-tokens 8 --json
expect 0 'model.layers.0.self_attn.q_proj.weight' -- inspect "$work/model"
expect 0 'retention' -- compress --model "$work/model" --data "$work/good.jsonl" --bits 4 --group-size 32 --out "$work/q"
[ -f "$work/q/squeeze_report.json" ] || { echo "FAIL: compress wrote no report"; failures=$((failures + 1)); }

echo "$failures failures"
[ "$failures" -eq 0 ]
