#!/bin/bash
# Full CIFAR-10 (JPEG q75): 45,000 train / 5,000 validation, crop + flip, recursively nested network (nested_depth,
# width 0.5), batch 128, SGD lr 0.1 momentum 0.9, weight decay 5e-4, cosine, 20 epochs; sum vs osgd vs osgd per
# tensor, seeds 1-3 (the branched stage's recipe, full-anytime-branched/run.sh, on the nested network).
set -euo pipefail
source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo anytime compare sum osgd osgd:granularity=tensor \
  --dataset cifar10 --data-dir "${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" --model nested_depth --width 0.5 \
  --val-size 5000 --augment --batch-size 128 --lr 0.1 --weight-decay 5e-4 --epochs 20 \
  --channels-last --precision bf16 --seed-list ${SEEDS:-1 2 3} --jobs "${JOBS:-2}" --quiet --out runs/full-anytime-nested
