source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo compare sgd:lr=0.4 sgd:lr=0.4+h0:lam=1.5 sgd:lr=0.1+sobolev:lam=0.03 sgd:lr=0.2+h1:lam=0.001 sgd:lr=0.1+laplacian:sigma=1 \
  --train-size 5000 --val-size 5000 --batch-size 32 --epochs 15 --seed-list 1 2 3 4 5 --jobs 2 --quiet --out runs/fmnist-final
