source .venv/bin/activate  # from the repository root
common="--train-size 5000 --val-size 5000 --batch-size 32 --epochs 15 --jobs 2 --quiet"
# the direction=out runs are those of the final comparison (same configuration and seeds): reuse them
for spec in "sgd_lr=0.4+h0_lam=1.5" "sgd_lr=0.1+sobolev_lam=0.03"; do
  for seed in 1 2 3 4 5; do
    src=runs/fmnist-final/runs/$spec/seed-$seed
    [ -f $src/result.json ] || continue
    case $spec in *h0*) dst=runs/fmnist-directions-h0;; *) dst=runs/fmnist-directions-sobolev;; esac
    mkdir -p $dst/runs/$spec && cp -rn $src $dst/runs/$spec/
  done
done
OMP_NUM_THREADS=1 gradgeo compare sgd:lr=0.4+h0:lam=1.5 sgd:lr=0.4+h0:lam=1.5,direction=in sgd:lr=0.4+h0:lam=1.5,direction=spatial \
  sgd:lr=0.4+h0:lam=1.5,direction=flat $common --seed-list 1 2 3 4 5 --out runs/fmnist-directions-h0
OMP_NUM_THREADS=1 gradgeo compare sgd:lr=0.1+sobolev:lam=0.03 sgd:lr=0.1+sobolev:lam=0.03,direction=in \
  sgd:lr=0.1+sobolev:lam=0.03,direction=spatial sgd:lr=0.1+sobolev:lam=0.03,direction=flat $common --seed-list 1 2 3 \
  --out runs/fmnist-directions-sobolev
