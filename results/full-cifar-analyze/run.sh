#!/bin/bash
# The observation behind the method: gradgeo analyze on the seed-1 final checkpoint of each spec of
# results/full-cifar-final (output- vs input-channel correlation of the trained weights, gradient noise per metric).
set -euo pipefail
source .venv/bin/activate  # from the repository root
for ckpt in runs/full-cifar-final/runs/*/seed-1/checkpoint.pt; do
  echo "== gradgeo analyze $ckpt"
  OMP_NUM_THREADS=1 gradgeo analyze "$ckpt"
  echo
done
