#!/bin/bash
# Full CIFAR-10 (JPEG q75): 45,000 train / 5,000 validation, crop + flip, ResNet-20 (width 1.0), batch 128,
# SGD momentum 0.9, weight decay 5e-4, cosine, 8 epochs (the finals run 20). lr x lam on the validation
# split only, seed 101 (never used by the finals). The finals take, per metric, the cell with the best final
# validation accuracy (scripts/campaign-full.sh). --channels-last --precision bf16: this machine has AVX512-BF16.
set -euo pipefail
source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo compare sgd:lr=0.1 sgd:lr=0.05 sgd:lr=0.2 \
  sgd:lr=0.1+h0:lam=1.5 sgd:lr=0.2+h0:lam=1.5 sgd:lr=0.3+h0:lam=3 \
  sgd:lr=0.1+h1:lam=0.001 sgd:lr=0.2+h1:lam=0.001 sgd:lr=0.1+h1:lam=0.01 \
  sgd:lr=0.1+sobolev:lam=0.03 sgd:lr=0.1+sobolev:lam=0.1 \
  --dataset cifar10 --data-dir "${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" --model resnet20 \
  --val-size 5000 --augment --batch-size 128 --weight-decay 5e-4 --epochs 8 \
  --channels-last --precision bf16 --seed-list 101 --jobs "${JOBS:-2}" --quiet --out runs/full-cifar-tune
