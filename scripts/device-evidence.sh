#!/usr/bin/env bash
# Issue 26's whole airbench-class campaign as ONE call on a lent GPU machine (the CPU campaign runs the same
# stages over days: results/air-*/run.sh). CIFAR-10 (JPEG q75), 45,000 train / 5,000 validation, the airbench
# net at full width (64/256/256), batch 1024, 10 epochs, the published recipe (triangle schedule, label
# smoothing 0.2, 2-pixel crops + flips, flip+translate test-time augmentation); bf16 autocast on the GPU.
#   0. issue 16's transform benchmark on the GPU, briefly ($OUT/transforms-cuda.txt);
#   1. the positive control: SGD vs Muon at the published settings, 10 seeds;
#   2. tuning on the validation split, the same budget per method: sgd (lr), muon (lr), sgd+h0 and sgd+h1
#      (lam x lr), sgd+laplacian (sigma x lr), sgd+sobolev (lam x lr); a method whose best value sits on the
#      edge of its range is tuned again on the range centred on it (up to two more rounds);
#   3. finals: each method's tuned spec, 10 paired seeds (the table has the paired differences, Holm's p,
#      the minimum detectable effects and the time to the baseline's final validation accuracy).
# Writes $OUT/tables.txt, $OUT/transforms-cuda.txt and $OUT/device-runs.tar.gz (summaries and per-epoch metrics).
# The device carries only the working tree, so the data travel in an ignored folder named in `carry`:
#   mkdir -p data/cifar10 && cp -r ../shared/data/cifar10-jpeg75/cifar-10-batches-py data/cifar10/
#   device run: bash scripts/device-evidence.sh        (carry: data/cifar10)
# On a CPU, TINY=1 PY=.venv/bin/python OUT=/tmp/dev DATA=../shared/data/cifar10-jpeg75 bash scripts/device-evidence.sh
# checks the script end to end (without the transform benchmark).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:?set OUT to the folder for the tables}
DATA=${DATA:-data/cifar10}
RUNS=${RUNS:-runs/device}
mkdir -p "$OUT"
if [ -n "${TINY:-}" ]; then
  size=(--train-size 2048 --val-size 1000 --width 0.25); epochs=1; trials=2; seeds=(1 2); jobs=2; device=cpu
  precision=fp32  # and no transform benchmark
else
  size=(--val-size 5000 --width 1); epochs=10; trials=8; seeds=(1 2 3 4 5 6 7 8 9 10); jobs=${JOBS:-12}; device=cuda
  speed=(--device cuda --repeats 10); precision=bf16
fi
recipe=(--dataset cifar10 --data-dir "$DATA" --model airbench "${size[@]}" --augment --crop-padding 2
        --batch-size 1024 --lr 1.5 --momentum 0.85 --nesterov --weight-decay 1.33e-3 --label-smoothing 0.2
        --schedule triangle --tta flip-translate --epochs "$epochs" --channels-last --precision "$precision"
        --device "$device")
gg() { PYTHONPATH=src "$PY" -m gradgeo.cli "$@"; }
log() { echo "== $1 ($(date -u +%FT%TZ))" | tee -a "$OUT/tables.txt"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/tables.txt" || true
[ -n "${TINY:-}" ] || PYTHONPATH=src "$PY" benchmarks/transforms.py "${speed[@]}" > "$OUT/transforms-cuda.txt" 2>&1 || true

log control
gg compare sgd muon:lr=0.1,momentum=0.6 "${recipe[@]}" --quiet --seed-list "${seeds[@]}" --jobs "$jobs" \
  --out "$RUNS/control" | tee -a "$OUT/tables.txt"

# tune one spec, then again on the suggested range while its best value sits on an edge (two more rounds at most)
tune_spec() {  # name spec [tune options...]
  local name=$1 spec=$2; shift 2
  local round=1 options=("$@")
  while :; do
    log "tune $name round $round"
    gg tune "$spec" "${recipe[@]}" --trials "$trials" --seed 101 --startup-trials 4 "${options[@]}" \
      --out "$RUNS/tune-$name-$round" | tail -n 4 | tee -a "$OUT/tables.txt"
    local extra
    read -r -a extra <<< "$("$PY" - "$RUNS/tune-$name-$round/summary.json" <<'EOF'
import json, sys
row = json.load(open(sys.argv[1]))["rows"][0]
flags = {"lr": "--lr-range", "weight_decay": "--weight-decay-range"}
print(" ".join(f"{flags.get(name, '--strength-range')} {edge['suggested'][0]:g} {edge['suggested'][1]:g}"
               for name, edge in row.get("edges", {}).items()))
EOF
)"
    [ ${#extra[@]} -gt 0 ] && [ "$round" -lt 3 ] || break
    options+=("${extra[@]}")  # a range given again overrides the earlier one (argparse: the last one counts)
    round=$((round + 1))
  done
  "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["rows"][0]["best"]["spec"])' \
    "$RUNS/tune-$name-$round/summary.json" > "$RUNS/picked-$name.txt"
}
mkdir -p "$RUNS"
# the six methods tune side by side (the GPU has room for several small runs at once), each with its own budget
tune_spec sgd sgd --lr-range 0.3 6 & tune_spec muon muon --lr-range 0.01 0.5 &
tune_spec h0 sgd+h0 --lr-range 0.3 6 & tune_spec h1 sgd+h1 --lr-range 0.3 6 &
tune_spec laplacian sgd+laplacian --lr-range 0.3 6 & tune_spec sobolev sgd+sobolev --lr-range 0.3 6 &
wait
picked=()
for name in sgd muon h0 h1 laplacian sobolev; do picked+=("$(cat "$RUNS/picked-$name.txt")"); done

log finals
gg compare "${picked[@]}" "${recipe[@]}" --quiet --seed-list "${seeds[@]}" --jobs "$jobs" --out "$RUNS/finals" |
  tee -a "$OUT/tables.txt"
tar -czf "$OUT/device-runs.tar.gz" --exclude=checkpoint.pt "$RUNS"
log done
