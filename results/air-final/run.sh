#!/bin/bash
# needs: bf16
# The finals of issue 26 on the airbench-class workload at the published width 1: the tuned specs, picked from the
# tuning studies by validation accuracy only (scripts/pick_tuned.py: each spec's best trial; it refuses a spec
# whose optimum sits on an edge of its range, which must be tuned again first): SGD (the baseline), sgd+h0,
# sgd+h1 and Muon, 10 epochs (the tuning ran 5 at width 0.5), paired seeds 1-5 (SEEDS="1 2 ... 10" adds seeds;
# the finished runs are reused). The table has the 95% CIs, paired differences, Holm-adjusted p-values, the
# minimum detectable effect of each comparison and the time each spec needs to reach SGD's final val acc.
# In bf16 (the training forward under bfloat16 autocast; evaluation in fp32): about 2x faster than fp32 on a CPU
# with bfloat16 instructions; results/air-bf16-check measures what it changes against fp32 (paired seeds), and the
# campaign skips this stage on a CPU without them.
set -euo pipefail
source .venv/bin/activate  # from the repository root
tuned=${RESULTS:-results}  # RESULTS: where the campaign lands results (its checkout)
# sgd+h1 from its second tuning, muon from its third (their earlier optima sat on an edge of their ranges).
# h1's second optimum sat on the low edge of lam again (1.21e-5: 84.70% against SGD's 84.68%): lam -> 0 turns h1
# into plain SGD, whose optimum is tuned beside it, so that edge is a hard limit and the finals run h1's weakest
# tuned cell.
SPECS="$(python scripts/pick_tuned.py "$tuned/air-tune-sgd/summary.json" none h0) $(python scripts/pick_tuned.py \
  "$tuned/air-retune-h1/summary.json" --hard-limit lam=low) $(python scripts/pick_tuned.py \
  "$tuned/air-retune2-muon/summary.json")"
echo "finals: $SPECS"
source results/air-recipe.sh
OMP_NUM_THREADS=1 gradgeo compare $SPECS "${recipe[@]}" --width 1 --epochs 10 --precision bf16 \
  --seed-list ${SEEDS:-1 2 3 4 5} --jobs "${JOBS:-2}" --quiet --out runs/air-final
