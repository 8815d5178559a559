#!/bin/bash
# GAN (DCGAN on Fashion-MNIST): Adam vs Adam+h0 vs Adam+sobolev on both players, untuned lam (the README defaults)
source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo compare --task gan adam "adam+h0:lam=2" "adam+sobolev:lam=0.1" --train-size 10000 --epochs 20 \
  --seeds 3 --jobs 2 --quiet --out runs/gan
