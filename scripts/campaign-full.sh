#!/usr/bin/env bash
# The full-scale evidence campaign (issue 11), from its own clone pinned to one commit, so that work on the
# main tree cannot change the code under a running campaign. Every stage is a `gradgeo compare` that resumes
# where it stopped: after a kill or a new session, run this script again. Each finished stage's tables and
# plots, and each finished run's result.json and metrics.jsonl, are copied to $DEST/results/<stage>/ (default:
# this checkout) for committing, each run within two minutes of its end; a new machine starts from the
# committed runs.
#   bash scripts/campaign-full.sh [CLONE_DIR]     (COMMIT=<sha> pins another commit for a new campaign; JOBS=2;
#                                                 STAGES="..." runs only these results/<stage>/run.sh, in order)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
CLONE=${1:-/root/gradgeo-campaign}
COMMIT=${COMMIT:-daabfd52eacdb3aa0f35e59272ad14335388d2a4}  # the commit the campaign started from (2026-12-02)
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
land() {  # copy a stage's outputs next to its run.sh in $DEST: tables, plots, each finished run's results
  mkdir -p "$DEST/results/$1"
  find "runs/$1" -maxdepth 1 -type f \( -name '*.txt' -o -name '*.json' -o -name '*.csv' -o -name '*.png' \) \
    -exec cp {} "$DEST/results/$1/" \;
  for run in "runs/$1"/runs/*/seed-*; do
    [ -f "$run/result.json" ] || continue
    mkdir -p "$DEST/results/$1/${run#runs/$1/}"
    cp "$run/result.json" "$run/metrics.jsonl" "$DEST/results/$1/${run#runs/$1/}/"
  done
}
seed() {  # runs finished in an earlier session (committed by land) count as finished here too
  if [ -d "$DEST/results/$1/runs" ]; then mkdir -p "runs/$1" && cp -rn "$DEST/results/$1/runs" "runs/$1/"; fi
}
for stage in ${STAGES:-full-cifar-tune full-cifar-final full-cifar-analyze full-anytime-branched}; do
  # a stage whose results are committed is done (analyze needs checkpoints a new machine does not have);
  # naming it in STAGES runs it again (e.g. STAGES=full-cifar-final SEEDS="4 5")
  if [ -z "${STAGES:-}" ] && { [ -f "$DEST/results/$stage/summary.json" ] || [ -s "$DEST/results/$stage/analyze.txt" ]; }; then
    echo "== $stage: done (results/$stage is committed; STAGES=$stage runs it again)"
    continue
  fi
  echo "== $stage ($(date -u +%FT%TZ))"
  if [ "$stage" = full-cifar-analyze ]; then  # needs the finals' checkpoints
    bash "results/$stage/run.sh" > "runs/$stage.txt"
    mkdir -p "$DEST/results/$stage" && cp "runs/$stage.txt" "$DEST/results/$stage/analyze.txt"
    continue
  fi
  seed "$stage"
  # land each run as it finishes, not only at the stage's end: a session that stops mid-stage keeps them
  (while sleep "${LAND_EVERY:-120}"; do land "$stage" 2>/dev/null || true; done) &
  lander=$!
  TUNE_SUMMARY="$DEST/results/full-cifar-tune/summary.json" bash "results/$stage/run.sh" | tee "runs/$stage.log"
  kill "$lander" 2>/dev/null || true
  cp "runs/$stage.log" "runs/$stage/table.txt"
  land "$stage"
done
echo "== done ($(date -u +%FT%TZ))"
