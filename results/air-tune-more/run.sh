#!/bin/bash
# Tuning on the airbench-class workload (issue 26), on the validation split, 8 trials per spec (4 random, then TPE;
# median pruning from epoch 3), 5-epoch trials (the triangle schedule compressed to 5 epochs; the finals run 10):
# sgd+laplacian (lr x sigma, 0.1..10) and sgd+sobolev (lr x lam, 0.003..0.3), as the budget allows. The recipe of
# results/air-control/run.sh otherwise. Two workers share the study (OUT/study.db). A spec whose best value sits
# on the edge of its range is tuned again on the range centred on it (the table says which and where).
set -euo pipefail
source .venv/bin/activate  # from the repository root
source results/air-recipe.sh
tune_two_workers "${OUT:-runs/air-tune-more}" sgd+laplacian sgd+sobolev --lr-range 0.3 6 "${recipe[@]}" "${tuning[@]}"
