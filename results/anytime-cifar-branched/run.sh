source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo anytime compare sum pcgrad osgd osgd:granularity=tensor --dataset cifar10 --model branched_resnet10 \
  --train-size 5000 --val-size 2000 --batch-size 32 --lr 0.05 --epochs 8 --seeds 3 --jobs 2 --quiet --out runs/anytime-cifar-branched
