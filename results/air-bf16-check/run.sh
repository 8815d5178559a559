#!/bin/bash
# needs: bf16
# Does bfloat16 training change the workload's accuracy? (issue 26) The finals run at width 1 in bf16, about 2x
# faster than fp32 on a CPU with bfloat16 instructions (AVX512-BF16 or AMX), which turns about 14 hours of finals
# into about 7. This stage is results/air-control's SGD (width 0.5, 10 epochs, seeds 1-3, fp32) again with
# --precision bf16 (the training forward under bfloat16 autocast; weights, gradients, optimizer and evaluation stay
# fp32): paired by seed with air-control's fp32 runs, same initial weights and batches. The campaign skips it (and
# every stage marked "needs: bf16") on a CPU without bfloat16 instructions, where bf16 runs 15-50x slower.
set -euo pipefail
source .venv/bin/activate  # from the repository root
source results/air-recipe.sh
OMP_NUM_THREADS=1 gradgeo compare sgd "${recipe[@]}" --width 0.5 --epochs 10 --precision bf16 \
  --seed-list ${SEEDS:-1 2 3} --jobs "${JOBS:-2}" --quiet --out runs/air-bf16-check
# paired by seed with the fp32 runs of air-control (committed in the results the campaign lands in)
python scripts/pair_folders.py "${RESULTS:-results}/air-control" runs/air-bf16-check sgd | tee runs/air-bf16-check/paired.txt
