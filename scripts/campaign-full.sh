#!/usr/bin/env bash
# The full-scale evidence campaign (issue 11), from its own clone pinned to one commit, so that work on the
# main tree cannot change the code under a running campaign. Every stage is a `gradgeo compare` that resumes
# where it stopped: after a kill or a new session, run this script again. Each finished stage's tables and
# plots are copied to $DEST/results/<stage>/ (default: this checkout) for committing.
#   bash scripts/campaign-full.sh [CLONE_DIR]     (COMMIT=<sha> pins another commit; JOBS=2 runs in parallel;
#                                                 STAGES="..." runs only these results/<stage>/run.sh, in order)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
CLONE=${1:-/root/gradgeo-campaign}
COMMIT=${COMMIT:-$(git -C "$here" rev-parse HEAD)}
DEST=${DEST:-$here}
export CIFAR_DIR=${CIFAR_DIR:-$(cd "$here/../shared/data/cifar10-jpeg75" && pwd)}
if [ ! -d "$CLONE/.git" ]; then
  git clone -q --no-checkout "$here" "$CLONE"
  git -C "$CLONE" checkout -q "$COMMIT"
fi
echo "campaign in $CLONE at $(git -C "$CLONE" rev-parse --short HEAD); data $CIFAR_DIR"
cd "$CLONE"
mkdir -p runs
[ -x .venv/bin/gradgeo ] || EXTRAS=harness bash scripts/setup.sh
land() {  # copy a finished stage's outputs next to its run.sh in $DEST
  mkdir -p "$DEST/results/$1"
  find "runs/$1" -maxdepth 1 -type f \( -name '*.txt' -o -name '*.json' -o -name '*.csv' -o -name '*.png' \) \
    -exec cp {} "$DEST/results/$1/" \;
}
for stage in ${STAGES:-full-cifar-tune full-cifar-final full-cifar-analyze full-anytime-branched}; do
  echo "== $stage ($(date -u +%FT%TZ))"
  if [ "$stage" = full-cifar-analyze ]; then  # needs the finals' checkpoints
    bash "results/$stage/run.sh" > "runs/$stage.txt"
    mkdir -p "$DEST/results/$stage" && cp "runs/$stage.txt" "$DEST/results/$stage/analyze.txt"
    continue
  fi
  TUNE_SUMMARY=runs/full-cifar-tune/summary.json bash "results/$stage/run.sh" | tee "runs/$stage.log"
  cp "runs/$stage.log" "runs/$stage/table.txt"
  land "$stage"
done
echo "== done ($(date -u +%FT%TZ))"
