#!/bin/bash
# Distilled vs labels-only on the example teacher: the same half-depth student (every other
# teacher layer), the same steps, data and schedule; only alpha differs (0.7: soft targets at
# T=2 plus labels, 0: labels alone). Prints the teacher's and both students' evaluation
# perplexity on the first 200 evaluation examples.
set -euo pipefail
cd "$(dirname "$0")/.."
ctl=${SQUEEZECTL:-build/services/cli/squeezectl}
steps=${STEPS:-300}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for alpha in 0.7 0.0; do
  sed -e "s/alpha: 0.7/alpha: $alpha/" -e "s/steps: 200/steps: $steps/" \
      -e "s#\.\./#$PWD/deploy/#g" deploy/recipes/fortunes-distill.yaml > "$work/recipe-$alpha.yaml"
  "$ctl" run "$work/recipe-$alpha.yaml" --state-dir "$work/state-$alpha" --json 2>/dev/null \
    | python3 -c "
import json, sys
r = json.load(sys.stdin)
s = r['stages']
print('alpha %s: teacher %.4f, student %.4f (%d layers, %d steps, %.0f tokens/s)' % (
    '$alpha', s[0]['result']['perplexity'], s[2]['result']['perplexity'],
    s[1]['result']['student_layers'], s[1]['result']['steps'], s[1]['result']['tokens_per_second']))"
done
