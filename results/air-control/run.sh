#!/bin/bash
# Positive control on the airbench-class workload (issue 26): plain SGD against Muon at the published recipe's
# settings, before any tuning. CIFAR-10 (JPEG q75), 45,000 train / 5,000 validation, airbench net at width 0.5
# (blocks 32/128/128), batch 1024, 10 epochs, triangle schedule, label smoothing 0.2, crops of 2-pixel padding
# + flips, flip test-time augmentation. SGD: Nesterov, momentum 0.85, lr 1.5 and weight decay 1.33e-3 (the
# published lr 11.5 per 1024 examples and decay 0.0153, written for a mean loss), 64x lr on BatchNorm shifts.
# Muon: torch.optim.Muon on the hidden convs at lr 0.1, momentum 0.6, with that SGD on the whitening bias, the
# BatchNorm shifts and the head. Seeds 1-3.
set -euo pipefail
source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo compare sgd muon:lr=0.1,momentum=0.6 \
  --dataset cifar10 --data-dir "${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" --model airbench --width 0.5 \
  --val-size 5000 --augment --crop-padding 2 --batch-size 1024 --lr 1.5 --momentum 0.85 --nesterov \
  --weight-decay 1.33e-3 --label-smoothing 0.2 --schedule triangle --tta flip --epochs 10 --channels-last \
  --seed-list ${SEEDS:-1 2 3} --jobs "${JOBS:-2}" --quiet --out runs/air-control
