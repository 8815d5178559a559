#!/bin/bash
# CIFAR-10 (JPEG q75), ResNet-20 width 0.5: lr x lam on the validation split, seed 11 (no augmentation, 5k train, 20 epochs)
source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo compare sgd:lr=0.2 sgd:lr=0.1 sgd:lr=0.4 sgd:lr=0.2+h0:lam=1.5 sgd:lr=0.4+h0:lam=1.5 \
  sgd:lr=0.05+sobolev:lam=0.03 sgd:lr=0.1+sobolev:lam=0.03 sgd:lr=0.1+sobolev:lam=0.01 \
  --dataset cifar10 --model resnet20 --width 0.5 --train-size 5000 --val-size 5000 --no-augment --batch-size 32 \
  --epochs 20 --seed-list 11 --jobs 2 --quiet --out runs/cifar-tune
