#!/bin/bash
# The positive control at the tuning's schedule (issue 26): the tuned SGD against the tuned Muon, each spec's best
# trial (scripts/pick_tuned.py, by validation accuracy), at the schedule they were tuned on (width 0.5, 5 epochs),
# on fresh paired seeds 1-5 and the test set (the tuning ran one seed, 101, on the validation split). Where
# air-control (10 epochs, untuned) and the finals (10 epochs, width 1) ask whether Muon is ahead at the end of a
# full schedule, this asks whether the harness sees Muon's published advantage, the same accuracy in fewer steps,
# when the budget is short; and whether the tuning's ranking holds on fresh seeds. fp32: it runs on any CPU.
set -euo pipefail
source .venv/bin/activate  # from the repository root
tuned=${RESULTS:-results}  # RESULTS: where the campaign lands results (its checkout)
SPECS="$(python scripts/pick_tuned.py "$tuned/air-tune-sgd/summary.json" none) $(python scripts/pick_tuned.py \
  "$tuned/air-retune2-muon/summary.json")"
echo "specs: $SPECS"
source results/air-recipe.sh
OMP_NUM_THREADS=1 gradgeo compare $SPECS "${recipe[@]}" --width 0.5 --epochs 5 \
  --seed-list ${SEEDS:-1 2 3 4 5} --jobs "${JOBS:-2}" --quiet --out runs/air-control-short
