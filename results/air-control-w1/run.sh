#!/bin/bash
# Positive control at the published width (issue 26): results/air-control/run.sh with the airbench net at width 1
# (blocks 64/256/256, as published) instead of 0.5, seeds 1-2: does the tuned-width workload reach 90% test
# accuracy in 10 epochs, and does Muon beat SGD (or reach its accuracy sooner) there too?
set -euo pipefail
source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo compare sgd muon:lr=0.1,momentum=0.6 \
  --dataset cifar10 --data-dir "${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" --model airbench --width 1 \
  --val-size 5000 --augment --crop-padding 2 --batch-size 1024 --lr 1.5 --momentum 0.85 --nesterov \
  --weight-decay 1.33e-3 --label-smoothing 0.2 --schedule triangle --tta flip --epochs 10 --channels-last \
  --seed-list ${SEEDS:-1 2} --jobs "${JOBS:-2}" --quiet --out runs/air-control-w1
