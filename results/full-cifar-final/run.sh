#!/bin/bash
# Full CIFAR-10 (JPEG q75), the finals: the setup of results/full-cifar-tune at 20 epochs, fresh seeds 1-3
# (SEEDS="1 2 3 4 5" adds seeds 4 and 5 and tables all five), paired by seed. Specs, picked from the tuning summary by final validation accuracy
# only: the best SGD cell (the baseline), the best h0 cell, and the best cell of h1 and sobolev together.
set -euo pipefail
source .venv/bin/activate  # from the repository root
TUNE=${RESULTS:-results}/full-cifar-tune/summary.json  # RESULTS: where the campaign lands results (its checkout)
SPECS=$(python scripts/pick_tuned.py "$TUNE")
echo "finals: $SPECS"
OMP_NUM_THREADS=1 gradgeo compare $SPECS \
  --dataset cifar10 --data-dir "${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" --model resnet20 \
  --val-size 5000 --augment --batch-size 128 --weight-decay 5e-4 --epochs 20 \
  --channels-last --precision bf16 --seed-list ${SEEDS:-1 2 3} --jobs "${JOBS:-2}" --quiet --out runs/full-cifar-final
