#!/bin/bash
# The positive control at the tuning's schedule (issue 26), and the tuned metrics beside it: each spec's best
# trial (scripts/pick_tuned.py, by validation accuracy) at the schedule it was tuned on (width 0.5, 5 epochs), on
# fresh paired seeds 1-5 and the test set (the tuning ran one seed, 101, on the validation split): the tuned SGD,
# the tuned Muon, then sgd+h0 and sgd+h1 (h1 at its hard limit, as in the finals). Where air-control (10 epochs,
# untuned) and the finals (10 epochs, width 1) ask whether a method is ahead at the end of a full schedule, this
# asks whether the harness sees Muon's published advantage, the same accuracy in fewer steps, when the budget is
# short; whether the tuning's ranking holds on fresh seeds; and what h0 and h1 do at the schedule where their
# tuned cells were found (h0's diverged in the 10-epoch finals). fp32: it runs on any CPU. SGD and Muon ran at
# a422a88, h0 and h1 were added at the next pinned commit (the same training code).
set -euo pipefail
source .venv/bin/activate  # from the repository root
tuned=${RESULTS:-results}  # RESULTS: where the campaign lands results (its checkout)
SPECS="$(python scripts/pick_tuned.py "$tuned/air-tune-sgd/summary.json" none) $(python scripts/pick_tuned.py \
  "$tuned/air-retune2-muon/summary.json") $(python scripts/pick_tuned.py "$tuned/air-tune-sgd/summary.json" h0) \
  $(python scripts/pick_tuned.py "$tuned/air-retune-h1/summary.json" --hard-limit lam=low)"
echo "specs: $SPECS"
source results/air-recipe.sh
OMP_NUM_THREADS=1 gradgeo compare $SPECS "${recipe[@]}" --width 0.5 --epochs 5 \
  --seed-list ${SEEDS:-1 2 3 4 5} --jobs "${JOBS:-2}" --quiet --out runs/air-control-short
