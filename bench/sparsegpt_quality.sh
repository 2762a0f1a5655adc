#!/bin/bash
# SparseGPT against magnitude and Wanda on the example teacher (50% unstructured and 2:4, one-shot,
# no recovery), and joint 50% + 4-bit GPTQ against Wanda 50% followed by GPTQ 4-bit. Each row is a
# job on the embedded service; perplexity on the first 200 evaluation examples (teacher 4.480).
# DEVICE=cuda runs the jobs on a GPU.
source "$(dirname "$0")/quality_rows.sh"
row() { quality_row "$1" "  calibration: $bench_root/deploy/data/fortunes/calibration.jsonl" "$2"; }
for pattern in unstructured '"2:4"'; do
  for method in magnitude wanda sparsegpt; do
    row "$method $pattern 50%" "  - prune: {method: $method, pattern: $pattern, sparsity: 0.5}"
  done
done
row "sparsegpt 4:8 50%" '  - prune: {method: sparsegpt, pattern: "4:8"}'
q="quantize: {method: gptq, bits: 4, group_size: 128"
row "gptq 4-bit g128 (dense)" "  - $q}"
row "joint: sparsegpt 50% + gptq 4-bit, one pass" "  - $q, prune: {sparsity: 0.5}}"
row "wanda 50%, then gptq 4-bit (zeros kept)" "  - prune: {method: wanda, sparsity: 0.5}
  - $q}"
row "sparsegpt 50%, then gptq 4-bit (zeros kept)" "  - prune: {method: sparsegpt, sparsity: 0.5}
  - $q}"
row "joint: sparsegpt 2:4 + gptq 4-bit, one pass" "  - $q, prune: {pattern: \"2:4\"}}"
