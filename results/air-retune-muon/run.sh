#!/bin/bash
# muon tuned again (issue 26): in results/air-tune-muon its best lr, 0.399 (85.82% validation accuracy), sat in the
# outer tenth of [0.01, 0.5] (the 0.496 trial was pruned at epoch 4 with 82.52%, so the optimum is probably inside,
# but the search did not show it); `gradgeo tune` suggested the same-sized range centred on it, [0.0564, 2.82]. The
# same budget (8 trials) and the recipe of results/air-tune-muon/run.sh otherwise.
set -euo pipefail
source .venv/bin/activate  # from the repository root
out=${OUT:-runs/air-retune-muon}
args=(muon:momentum=0.6 --lr-range 0.0564 2.82
      --dataset cifar10 --data-dir "${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" --model airbench --width 0.5
      --val-size 5000 --augment --crop-padding 2 --batch-size 1024 --lr 1.5 --momentum 0.85 --nesterov
      --weight-decay 1.33e-3 --label-smoothing 0.2 --schedule triangle --tta flip --epochs 5 --channels-last
      --seed 101 --trials 8 --startup-trials 4 --prune-after 3 --out "$out")
OMP_NUM_THREADS=1 gradgeo tune "${args[@]}" > "$out.worker2.log" 2>&1 &
OMP_NUM_THREADS=1 gradgeo tune "${args[@]}"
wait
