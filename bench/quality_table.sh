#!/bin/bash
# RTN, GPTQ, AWQ and W8A8 on the example teacher, evaluation split; prints one line per config.
# DEVICE=cuda runs the jobs on a GPU. W8A8_ONLY=1 prints only the W8A8 rows, MIXED_ONLY=1 only
# the mixed-precision rows (with uniform 3- and 4-bit GPTQ beside them).
cd "$(dirname "$0")/.."
ctl=${SQUEEZECTL:-build/services/cli/squeezectl}
m=deploy/models/fortunes-teacher; d=deploy/data/fortunes/evaluation.jsonl; c=deploy/data/fortunes/calibration.jsonl
row() { python3 -c "import json,sys; r=json.load(sys.stdin); print('%-28s %8.4f %8.4f %7.4f' % (r['method'], r['baseline']['perplexity'], r['compressed']['perplexity'], r['retention']))"; }
if [ -n "${MIXED_ONLY:-}" ]; then
  # Mixed precision at 3.5 bits on average (widths from 2, 3, 4, 8 by measured error) against
  # uniform 3 and 4 bits, all g128.
  for cfg in "gptq --bits 3" "gptq --bits 4" "gptq --average-bits 3.5" "rtn --bits 3" "rtn --bits 4" \
             "rtn --average-bits 3.5"; do
    $ctl compress --model $m --data $d --method $cfg --calibration $c --group-size 128 --device ${DEVICE:-cpu} --json 2>/dev/null | row
  done
  exit 0
fi
[ -n "${W8A8_ONLY:-}" ] || for bits in 8 4 3; do
  for cfg in "rtn" "gptq" "gptq --act-order" "awq"; do
    extra=""; [ "${cfg%% *}" != rtn ] && extra="--calibration $c"
    $ctl compress --model $m --data $d --method $cfg $extra --bits $bits --group-size 128 --device ${DEVICE:-cpu} --json 2>/dev/null \
      | python3 -c "import json,sys; r=json.load(sys.stdin); print('%-28s %8.4f %8.4f %7.4f' % (r['method'], r['baseline']['perplexity'], r['compressed']['perplexity'], r['retention']))"
  done
done
# W8A8: int8 weights per channel with int8 inputs (dynamic per token, or static per tensor),
# with and without SmoothQuant; W8A16 (the same weights, float inputs) for reference.
for cfg in "rtn --format compressed_tensors --bits 8 --group-size -1 --sym" \
           "rtn --activations dynamic" "rtn --activations static --calibration $c" \
           "rtn --activations dynamic --smoothquant-alpha 0.5 --calibration $c" \
           "gptq --activations dynamic --calibration $c" \
           "gptq --activations static --smoothquant-alpha 0.5 --calibration $c"; do
  $ctl compress --model $m --data $d --method $cfg --device ${DEVICE:-cpu} --json 2>/dev/null \
    | python3 -c "import json,sys; r=json.load(sys.stdin); print('%-28s %8.4f %8.4f %7.4f' % (r['method'], r['baseline']['perplexity'], r['compressed']['perplexity'], r['retention']))"
done
