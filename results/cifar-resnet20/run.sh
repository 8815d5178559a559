#!/bin/bash
# CIFAR-10 (JPEG q75), ResNet-20 width 0.5; lr and lam carried over from the Fashion-MNIST tuning (not tuned on CIFAR)
source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo compare sgd:lr=0.2 sgd:lr=0.2+h0:lam=1.5 sgd:lr=0.05+sobolev:lam=0.03 \
  --dataset cifar10 --model resnet20 --width 0.5 --train-size 10000 --val-size 5000 --batch-size 32 --epochs 10 \
  --seed-list 1 2 3 --jobs 2 --quiet --out runs/cifar-resnet20
