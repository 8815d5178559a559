#!/usr/bin/env bash
# The accelerator part of the full-scale evidence (issue 11), as ONE call on a lent GPU machine. First, about a
# minute: issue 16's transform benchmark on the GPU ($OUT/transforms-cuda.txt). Then full Fashion-MNIST
# (55,000 train / 5,000 validation, small CNN), several runs sharing the GPU per stage:
#   1. tune lr x lam on the validation split (seed 101, 6 epochs);
#   2. finals at batch 128: the picked specs (scripts/pick_tuned.py), 5 fresh seeds, 20 epochs;
#   3. the small-batch claim: the same specs at batch 32 (lr scaled by 32/128), 5 seeds;
#   4. Adam as a second base optimizer (lr 1e-3) with the picked metrics, 5 seeds.
# Writes $OUT/transforms-cuda.txt, $OUT/tables.txt and $OUT/device-runs.tar.gz (summaries and per-epoch metrics). The device carries
# only the working tree, so the data travel in an ignored folder named in `carry` (data/fashion-mnist):
#   mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion-mnist/
#   device run: bash scripts/device-evidence.sh        (carry: data/fashion-mnist)
# On a CPU, TINY=1 PY=.venv/bin/python OUT=/tmp/dev bash scripts/device-evidence.sh checks the script end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:?set OUT to the folder for the tables}
DATA=${DATA:-data/fashion-mnist}
RUNS=${RUNS:-runs/device}
if [ -n "${TINY:-}" ]; then
  size=(--train-size 1000 --val-size 500); tune_epochs=1; epochs=1; seeds=(1 2); jobs=2
  speed=(--device cpu --repeats 1)
else
  size=(--val-size 5000); tune_epochs=6; epochs=20; seeds=(1 2 3 4 5); jobs=${JOBS:-15}
  speed=(--device cuda --repeats 30)
fi
common=(--dataset fashion-mnist --data-dir "$DATA" --model small_cnn "${size[@]}" --weight-decay 5e-4 --quiet)
gg() { PYTHONPATH=src "$PY" -m gradgeo.cli "$@"; }
stage() {  # name, then compare's arguments; the table goes to $OUT/tables.txt
  echo "== $1 ($(date -u +%FT%TZ))" | tee -a "$OUT/tables.txt"
  local name=$1; shift
  gg compare "$@" "${common[@]}" --jobs "$jobs" --out "$RUNS/$name" | tee -a "$OUT/tables.txt"
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$OUT/tables.txt" || true
PYTHONPATH=src "$PY" benchmarks/transforms.py "${speed[@]}" | tee "$OUT/transforms-cuda.txt"
stage tune sgd:lr=0.05 sgd:lr=0.1 sgd:lr=0.2 sgd:lr=0.1+h0:lam=1.5 sgd:lr=0.2+h0:lam=1.5 sgd:lr=0.4+h0:lam=1.5 \
  sgd:lr=0.1+h1:lam=0.001 sgd:lr=0.2+h1:lam=0.001 sgd:lr=0.05+sobolev:lam=0.03 sgd:lr=0.1+sobolev:lam=0.03 \
  --batch-size 128 --epochs "$tune_epochs" --seed-list 101
read -r -a picked <<< "$(PYTHONPATH=src "$PY" scripts/pick_tuned.py "$RUNS/tune/summary.json")"
stage final-b128 "${picked[@]}" --batch-size 128 --epochs "$epochs" --seed-list "${seeds[@]}"
scaled=()  # linear scaling: a quarter of the batch, a quarter of the learning rate
for spec in "${picked[@]}"; do
  lr=${spec#*lr=}; lr=${lr%%[+,]*}
  scaled+=("${spec/lr=$lr/lr=$("$PY" -c "print($lr / 4)")}")
done
stage final-b32 "${scaled[@]}" --batch-size 32 --epochs "$epochs" --seed-list "${seeds[@]}"
stage adam adam:lr=1e-3 "adam:lr=1e-3+${picked[1]#*+}" "adam:lr=1e-3+${picked[2]#*+}" \
  --batch-size 128 --epochs "$epochs" --seed-list "${seeds[@]}"
tar -czf "$OUT/device-runs.tar.gz" --exclude=checkpoint.pt "$RUNS"
echo "== done ($(date -u +%FT%TZ))" | tee -a "$OUT/tables.txt"
