#!/bin/bash
# QLoRA-style recovery on the example teacher: NF4 (block 64, double quantization), then rank-16
# adapters on every linear trained on the frozen NF4 base, with the original model teaching (kd)
# or from the labels alone (ce). Perplexity on the first 200 evaluation examples and accuracy on the
# example task file; the first row is the teacher, the second the NF4 model whose gap to it the
# adapters should close. DEVICE=cuda runs the jobs on a GPU. STEPS sets the training steps.
source "$(dirname "$0")/quality_rows.sh"
export TASKS=1
steps=${STEPS:-200}
train="  train: $bench_root/deploy/data/fortunes/train.jsonl"
nf4="  - quantize: {method: nf4}"
lora="targets: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj], rank: 16, alpha: 32, dropout: 0.05"
run="steps: $steps, batch_size: 16, seq_len: 128, lr: 0.0005, warmup_steps: 10, eval_examples: 50"
quality_row "teacher" "$train" ""
quality_row "nf4 g64, double quantization" "$train" "$nf4"
quality_row "nf4 + lora r16, kd from the teacher" "$train" "$nf4
  - distill: {lora: {$lora}, alpha: 0.9, temperature: 1.0, $run}"
quality_row "nf4 + lora r16, ce" "$train" "$nf4
  - distill: {lora: {$lora, loss: ce}, $run}"
