#!/bin/bash
# RTN, GPTQ and AWQ on the example teacher, evaluation split; prints one line per config.
cd "$(dirname "$0")/.."
ctl=${SQUEEZECTL:-build/services/cli/squeezectl}
m=deploy/models/fortunes-teacher; d=deploy/data/fortunes/evaluation.jsonl; c=deploy/data/fortunes/calibration.jsonl
for bits in 8 4 3; do
  for cfg in "rtn" "gptq" "gptq --act-order" "awq"; do
    extra=""; [ "${cfg%% *}" != rtn ] && extra="--calibration $c"
    $ctl compress --model $m --data $d --method $cfg $extra --bits $bits --group-size 128 --json 2>/dev/null \
      | python3 -c "import json,sys; r=json.load(sys.stdin); print('%-28s %8.4f %8.4f %7.4f' % (r['method'], r['baseline']['perplexity'], r['compressed']['perplexity'], r['retention']))"
  done
done
