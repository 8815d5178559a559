#!/bin/bash
# Full CIFAR-10 (JPEG q75): the finals of results/full-cifar-final (tuned SGD, h0 and h1; 20 epochs, seeds 1-3)
# with the tuned Laplacian-smoothing baseline beside them (the best cell of results/full-cifar-laplacian-tune
# by final validation accuracy), paired by seed. The finals' committed runs are reused (copied into the output
# when absent: the same command, setup and seeds), so only the Laplacian runs are trained here.
set -euo pipefail
source .venv/bin/activate  # from the repository root
RESULTS=${RESULTS:-results}  # where the campaign lands results (its checkout)
SPECS=$(python scripts/pick_tuned.py "$RESULTS/full-cifar-tune/summary.json")
LAPLACIAN=$(python scripts/pick_tuned.py "$RESULTS/full-cifar-laplacian-tune/summary.json" laplacian)
echo "finals: $SPECS $LAPLACIAN"
mkdir -p runs/full-cifar-laplacian/runs
for run in "$RESULTS"/full-cifar-final/runs/*/seed-[123]; do
  dest=runs/full-cifar-laplacian/runs/${run#"$RESULTS"/full-cifar-final/runs/}
  [ -e "$dest" ] || { mkdir -p "$(dirname "$dest")" && cp -r "$run" "$dest"; }
done
OMP_NUM_THREADS=1 gradgeo compare $SPECS $LAPLACIAN \
  --dataset cifar10 --data-dir "${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" --model resnet20 \
  --val-size 5000 --augment --batch-size 128 --weight-decay 5e-4 --epochs 20 \
  --channels-last --precision bf16 --seed-list 1 2 3 --jobs "${JOBS:-2}" --quiet --out runs/full-cifar-laplacian
