# The airbench-class recipe of issue 26, sourced by the results/air-*/run.sh written after the first tunings (the
# earlier ones spell it out; it is the same): CIFAR-10 (JPEG q75), 45,000 train / 5,000 validation, the airbench
# net, batch 1024, Nesterov SGD momentum 0.85 at lr 1.5 and weight decay 1.33e-3 (the published lr 11.5 per 1024
# examples and decay 0.0153, written for a mean loss), the triangle schedule, label smoothing 0.2, crops of
# 2-pixel padding + flips, flip test-time augmentation, channels-last. A stage adds its width, epochs, seeds and
# precision. `tuning` is the tuning stages' budget (8 trials a spec, 4 random then TPE, median pruning from epoch
# 3, 5-epoch trials at width 0.5, seed 101); `tune_two_workers OUT ARGS...` runs two workers on one study.
recipe=(--dataset cifar10 --data-dir "${CIFAR_DIR:-../shared/data/cifar10-jpeg75}" --model airbench
        --val-size 5000 --augment --crop-padding 2 --batch-size 1024 --lr 1.5 --momentum 0.85 --nesterov
        --weight-decay 1.33e-3 --label-smoothing 0.2 --schedule triangle --tta flip --channels-last)
tuning=(--width 0.5 --epochs 5 --seed 101 --trials 8 --startup-trials 4 --prune-after 3)
tune_two_workers() {
  local out=$1
  shift
  OMP_NUM_THREADS=1 gradgeo tune "$@" --out "$out" > "$out.worker2.log" 2>&1 &
  OMP_NUM_THREADS=1 gradgeo tune "$@" --out "$out"
  wait
}
