#!/bin/bash
# NF4 against 4-bit integers at the same block of 64 on the example teacher (round to nearest, no
# calibration; perplexity on the first 200 evaluation examples). Each row is a job on the embedded
# service; the first row is the teacher itself, the reference every other row is read against.
# DEVICE=cuda runs the jobs on a GPU.
source "$(dirname "$0")/quality_rows.sh"
row() { quality_row "$1" "" "$2"; }
row "teacher (float)" ""
row "int4 rtn g64, symmetric" "  - quantize: {method: rtn, bits: 4, group_size: 64, sym: true}"
row "int4 rtn g64, asymmetric" "  - quantize: {method: rtn, bits: 4, group_size: 64}"
row "fp4 g64" "  - quantize: {method: fp4, group_size: 64, double_quant: false}"
row "nf4 g64" "  - quantize: {method: nf4, group_size: 64, double_quant: false}"
row "nf4 g64, double quantization" "  - quantize: {method: nf4, group_size: 64}"
