#!/bin/bash
# muon tuned a third time (issue 26): in results/air-retune-muon its best lr, 2.25 (86.70% validation accuracy),
# sat in the outer tenth of [0.0564, 2.82] again (the trials above it, 2.44 and 2.8, were pruned at epochs 3 and
# 4, so the search did not show a decline); `gradgeo tune` suggested [0.318, 15.9]. The same budget (8 trials)
# and recipe.
set -euo pipefail
source .venv/bin/activate  # from the repository root
source results/air-recipe.sh
tune_two_workers "${OUT:-runs/air-retune2-muon}" muon:momentum=0.6 --lr-range 0.318 15.9 \
  "${recipe[@]}" "${tuning[@]}"
