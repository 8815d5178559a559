source .venv/bin/activate  # from the repository root
OMP_NUM_THREADS=1 gradgeo anytime compare sum sdn adaloss pcgrad osgd osgd:granularity=tensor --model nested_depth --width 0.5 \
  --train-size 5000 --val-size 2000 --batch-size 32 --lr 0.05 --epochs 8 --seeds 3 --jobs 2 --quiet --out runs/anytime-fmnist-nested
