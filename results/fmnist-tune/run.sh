#!/bin/bash
# E1: lr x metric tuning on the validation split (1 seed)
source .venv/bin/activate  # from the repository root
specs=()
for lr in 0.05 0.1 0.2 0.4; do
  for m in "" "+h0:lam=1.5" "+sobolev:lam=0.01" "+sobolev:lam=0.03" "+laplacian:sigma=1" "+h1:lam=0.01"; do
    specs+=("sgd:lr=$lr$m")
  done
done
OMP_NUM_THREADS=1 gradgeo compare "${specs[@]}" --train-size 5000 --val-size 5000 --batch-size 32 --epochs 15 \
  --seed-list 0 --jobs 2 --quiet --out runs/fmnist-tune
