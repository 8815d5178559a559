#!/bin/bash
# The lr x metric tuning of run.sh + run-b.sh (a hand-written grid, 4-9 runs per metric) redone with gradgeo tune:
# the same data, model and schedule (5,000 training and 5,000 validation images, batch 32, 15 epochs, seed 0),
# TPE over lr (0.02-0.8, around the grid's 0.05-0.4) and the metric's strength (the default ranges) with the same
# budget per spec. Needs the tune extra:
# .venv/bin/pip install -e '.[tune]'. 8 trials per spec (the grid: 4 to 9 runs per spec), two workers.
source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo tune sgd sgd+h0 sgd+sobolev sgd+h1 sgd+laplacian \
  --train-size 5000 --val-size 5000 --batch-size 32 --epochs 15 --seed 0 --trials 8 --startup-trials 4 \
  --lr-range 0.02 0.8 \
  --out runs/fmnist-tune-optuna
# on 2 cores, a second worker on the same study (the embedded storage in runs/fmnist-tune-optuna/study.db) halves
# the wall time: `bash results/fmnist-tune/tune.sh & bash results/fmnist-tune/tune.sh; wait` (both print the table)
