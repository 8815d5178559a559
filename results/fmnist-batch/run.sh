source .venv/bin/activate  # from the repository root
common="--train-size 5000 --val-size 5000 --epochs 15 --jobs 2 --quiet --seed-list 1 2 3"
# batch 8: the batch-32 learning rates scaled linearly (/4); batch 128: the batch-32 learning rates unchanged
OMP_NUM_THREADS=1 gradgeo compare sgd:lr=0.1 sgd:lr=0.1+h0:lam=1.5 sgd:lr=0.025+sobolev:lam=0.03 --batch-size 8 $common \
  --out runs/fmnist-batch8
OMP_NUM_THREADS=1 gradgeo compare sgd:lr=0.4 sgd:lr=0.4+h0:lam=1.5 --batch-size 128 $common \
  --out runs/fmnist-batch128
