#!/bin/bash
# Full CIFAR-10 (JPEG q75), the Laplacian-smoothing baseline (LS-SGD, Osher et al.) tuned like the channel
# metrics in results/full-cifar-tune: the same split, augmentation, network, batch, schedule (8 epochs) and
# seed 101 (never used by the finals); sigma around LS-SGD's 1.0 at the tuned SGD learning rate, and sigma 1.0
# at twice that rate (the smoothing lowers the gradient's variance). results/full-cifar-laplacian takes the cell
# with the best final validation accuracy.
set -euo pipefail
source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo compare sgd:lr=0.1+laplacian:sigma=0.3 sgd:lr=0.1+laplacian:sigma=1 \
  sgd:lr=0.1+laplacian:sigma=3 sgd:lr=0.2+laplacian:sigma=1 \
  --dataset cifar10 --data-dir "${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" --model resnet20 \
  --val-size 5000 --augment --batch-size 128 --weight-decay 5e-4 --epochs 8 \
  --channels-last --precision bf16 --seed-list 101 --jobs "${JOBS:-2}" --quiet --out runs/full-cifar-laplacian-tune
