#!/bin/bash
# muon tuned again (issue 26): in results/air-tune-muon its best lr, 0.399 (85.82% validation accuracy), sat in the
# outer tenth of [0.01, 0.5] (the 0.496 trial was pruned at epoch 4 with 82.52%, so the optimum is probably inside,
# but the search did not show it); `gradgeo tune` suggested the same-sized range centred on it, [0.0564, 2.82]. The
# same budget (8 trials) and the recipe of results/air-tune-muon/run.sh otherwise.
set -euo pipefail
source .venv/bin/activate  # from the repository root
source results/air-recipe.sh
tune_two_workers "${OUT:-runs/air-retune-muon}" muon:momentum=0.6 --lr-range 0.0564 2.82 "${recipe[@]}" "${tuning[@]}"
