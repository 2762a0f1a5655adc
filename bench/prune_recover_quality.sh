#!/bin/bash
# Iterative prune-and-recover against one-shot pruning on the example teacher: the whole teacher
# (keep_every: 1) pruned with Wanda to SPARSITY (default 0.6) of its linear weights, then
# distilled from the unpruned teacher for STEPS steps in total. One-shot prunes everything at
# step 0 and recovers for all steps; iterative prunes in ROUNDS equal steps, recovering between.
# Prints evaluation perplexity on the first 200 evaluation examples: the teacher's, each round's
# before and after pruning, and after recovery.
set -euo pipefail
cd "$(dirname "$0")/.."
ctl=${SQUEEZECTL:-build/services/cli/squeezectl}
steps=${STEPS:-120}
sparsity=${SPARSITY:-0.6}
rounds=${ROUNDS:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for r in 1 "$rounds"; do
  cat > "$work/recipe-$r.yaml" <<YAML
model: $PWD/deploy/models/fortunes-teacher
data:
  train: $PWD/deploy/data/fortunes/train.jsonl
  evaluation: [$PWD/deploy/data/fortunes/evaluation.jsonl]
stages:
  - distill:
      student: {keep_every: 1}
      temperature: 2.0
      alpha: 0.7
      steps: $steps
      batch_size: 8
      seq_len: 128
      lr: 0.0002
      warmup_steps: 5
      eval_examples: 200
      log_every: 20
      prune: {method: wanda, sparsity: $sparsity, rounds: $r, calibration_batches: 4}
YAML
  "$ctl" run "$work/recipe-$r.yaml" --state-dir "$work/state-$r" --json 2>/dev/null | python3 -c "
import json, sys
report = json.load(sys.stdin)
p = report['stages'][0]['result']['prune']
print('%s round(s) to %.2f sparsity (%d steps):' % ('$r', p['sparsity'], report['stages'][0]['result']['steps']))
for x in p['rounds']:
    print('  round %d at step %3d: sparsity %.2f, perplexity %.4f -> pruned %.4f -> recovered %.4f' % (
        x['round'], x['step'], x['sparsity'], x['perplexity_before_pruning'],
        x['perplexity_after_pruning'], x['perplexity_after_recovery']))"
done
