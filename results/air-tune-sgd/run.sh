#!/bin/bash
# Tuning on the airbench-class workload (issue 26), on the validation split, 8 trials per spec (4 random, then TPE;
# median pruning from epoch 3), 5-epoch trials (the triangle schedule compressed to 5 epochs; the finals run 10):
# sgd (lr), sgd+h0 and sgd+h1 (lr x lam; lam over the default ranges h0 1..100, h1 1e-4..1e-2). The recipe of
# results/air-control/run.sh otherwise. Two workers share the study (OUT/study.db). A spec whose best value sits
# on the edge of its range is tuned again on the range centred on it (the table says which and where).
set -euo pipefail
source .venv/bin/activate  # from the repository root
out=${OUT:-runs/air-tune-sgd}
args=(sgd sgd+h0 sgd+h1 --lr-range 0.3 6
      --dataset cifar10 --data-dir "${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" --model airbench --width 0.5
      --val-size 5000 --augment --crop-padding 2 --batch-size 1024 --lr 1.5 --momentum 0.85 --nesterov
      --weight-decay 1.33e-3 --label-smoothing 0.2 --schedule triangle --tta flip --epochs 5 --channels-last
      --seed 101 --trials 8 --startup-trials 4 --prune-after 3 --out "$out")
OMP_NUM_THREADS=1 gradgeo tune "${args[@]}" > "$out.worker2.log" 2>&1 &
OMP_NUM_THREADS=1 gradgeo tune "${args[@]}"
wait
