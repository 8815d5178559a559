source .venv/bin/activate  # from the repository root
# the SGD and h0 runs of results/fmnist-final (same seeds, data and hyper-parameters), in NHWC memory with the
# training forward under bfloat16 autocast
OMP_NUM_THREADS=1 gradgeo compare sgd:lr=0.4 sgd:lr=0.4+h0:lam=1.5 --channels-last --precision bf16 \
  --train-size 5000 --val-size 5000 --batch-size 32 --epochs 15 --seed-list 1 2 3 4 5 --jobs 2 --quiet --out runs/fmnist-bf16
