#!/bin/bash
# sobolev alone with the grid's own count: 9 trials (run.sh + run-b.sh tried 9 lr x lam cells for sobolev), the
# same settings as tune.sh otherwise. One worker, about 60 minutes on a core shared with other runs.
# Outputs as committed in results/fmnist-tune/optuna-sobolev9/ (without the trials' checkpoints).
source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo tune sgd+sobolev \
  --train-size 5000 --val-size 5000 --batch-size 32 --epochs 15 --seed 0 --trials 9 --startup-trials 4 \
  --lr-range 0.02 0.8 \
  --out runs/fmnist-tune-sobolev9
