#!/bin/bash
# CIFAR-10 (JPEG q75), ResNet-20 width 0.5: the validation-selected cell per metric (results/cifar-tune), 5 fresh seeds
source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo compare sgd:lr=0.1 sgd:lr=0.4+h0:lam=1.5 sgd:lr=0.1+sobolev:lam=0.03 \
  --dataset cifar10 --model resnet20 --width 0.5 --train-size 5000 --val-size 5000 --no-augment --batch-size 32 \
  --epochs 20 --seed-list 1 2 3 4 5 --jobs 2 --quiet --out runs/cifar-final
