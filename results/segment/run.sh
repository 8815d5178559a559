#!/bin/bash
# Segmentation (Fashion-MNIST scenes, U-Net): Adam vs Adam+h0 vs Adam+sobolev, untuned lam (the README defaults)
source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo compare --task segment adam "adam+h0:lam=2" "adam+sobolev:lam=0.1" --train-size 2000 --epochs 20 \
  --seeds 3 --jobs 2 --quiet --out runs/segment
