#!/usr/bin/env bash
# The full-scale evidence campaign (issue 11), from its own clone pinned to one commit, so that work on the
# main tree cannot change the code under a running campaign. Every stage is a `gradgeo compare` that resumes
# where it stopped: after a kill or a new session, run this script again. Each finished stage's tables and
# plots, and each finished run's result.json and metrics.jsonl, are copied to $DEST/results/<stage>/ (default:
# this checkout) for committing, each run within two minutes of its end; a new machine starts from the
# committed runs.
#   bash scripts/campaign-full.sh [CLONE_DIR]     (default /root/gradgeo-campaign-<commit>; COMMIT=<sha> pins
#                                                 another commit; JOBS=2;
#                                                 STAGES="..." runs only these results/<stage>/run.sh, in order;
#                                                 STAGE@1,2,3,4,5 with those seeds; a stage whose run.sh has
#                                                 the line "# needs: bf16" or the flag --precision bf16 is
#                                                 skipped on a CPU without bfloat16)
set -euo pipefail
here=${CAMPAIGN_HERE:-$(cd "$(dirname "$0")/.." && pwd)}
if [ -z "${CAMPAIGN_HERE:-}" ]; then  # run from a copy: bash reads a script as it goes, so an edit of this file
  copy=$(mktemp)                      # during a campaign of many hours would otherwise change the running one
  cp "$0" "$copy"
  CAMPAIGN_HERE=$here exec bash "$copy" "$@"
fi
# the commit the campaign runs at: daabfd5 ran the stages up to full-cifar-final@1,2,3,4,5 (2026-12-02); the
# Laplacian stages at 57dfade (2026-12-03); the nested network's stage runs at this one (2026-12-03). Issue 26's
# airbench stages run at their own commits, named in results/REPORT.md (COMMIT=... STAGES="air-...")
COMMIT=${COMMIT:-673e236da5ef5bd342650cb4b534a1ecd27db328}
CLONE=${1:-/root/gradgeo-campaign-${COMMIT:0:7}}
DEST=${DEST:-$here}
export CIFAR_DIR=${CIFAR_DIR:-$(cd "$here/../shared/data/cifar10-jpeg75" && pwd)}
if [ ! -d "$CLONE/.git" ]; then
  git clone -q --no-checkout "$here" "$CLONE"
  git -C "$CLONE" checkout -q "$COMMIT"
fi
at=$(git -C "$CLONE" rev-parse HEAD)
if [ "$at" != "$(git -C "$CLONE" rev-parse "$COMMIT^{commit}")" ]; then
  echo "campaign-full.sh: $CLONE is at ${at:0:7}, not at COMMIT ${COMMIT:0:7}; pass another CLONE_DIR (or COMMIT=${at:0:7})" >&2
  exit 2
fi
echo "campaign in $CLONE at ${at:0:7}; data $CIFAR_DIR"
cd "$CLONE"
mkdir -p runs
[ -x .venv/bin/gradgeo ] && .venv/bin/python -c "import optuna" 2>/dev/null || EXTRAS=harness,tune bash scripts/setup.sh  # tune: the tuning stages
land() {  # copy a stage's outputs next to its run.sh in $DEST: tables, plots, each finished run's results
  mkdir -p "$DEST/results/$1"
  find "runs/$1" -maxdepth 1 -type f \( -name '*.txt' -o -name '*.json' -o -name '*.csv' -o -name '*.png' \) \
    -exec cp {} "$DEST/results/$1/" \;
  if [ -f "runs/$1/study.db" ]; then  # a tuning stage's study, copied consistently while workers write to it
    python3 -c 'import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))' \
      "runs/$1/study.db" "$DEST/results/$1/study.db"
  fi
  for run in "runs/$1"/runs/*/seed-*; do
    [ -f "$run/result.json" ] || continue
    mkdir -p "$DEST/results/$1/${run#runs/$1/}"
    cp "$run/result.json" "$run/metrics.jsonl" "$DEST/results/$1/${run#runs/$1/}/"
  done
}
seed() {  # runs finished in an earlier session (committed by land) count as finished here too, and so do the
  # trials of a tuning stage's committed study (a trial that was running is taken for dead and trained again)
  if [ -d "$DEST/results/$1/runs" ]; then mkdir -p "runs/$1" && cp -rn "$DEST/results/$1/runs" "runs/$1/"; fi
  if [ -f "$DEST/results/$1/study.db" ] && [ ! -f "runs/$1/study.db" ]; then
    mkdir -p "runs/$1" && cp "$DEST/results/$1/study.db" "runs/$1/study.db"
  fi
}
# STAGE@SEEDS (comma-separated) runs a stage with those seeds: the committed runs of the others are reused, so
# full-cifar-final@1,2,3,4,5 adds seeds 4 and 5 to the 3-seed finals and lands the 5-seed table
for entry in ${STAGES:-full-cifar-tune full-cifar-final full-cifar-analyze full-anytime-branched full-cifar-final@1,2,3,4,5 \
    full-cifar-laplacian-tune full-cifar-laplacian full-anytime-nested}; do
  stage=${entry%@*} asked=""
  if [ "$entry" != "$stage" ]; then asked=${entry#*@}; asked=${asked//,/ }; fi
  # a stage whose results are committed (with the seeds asked, if any) is done (analyze needs checkpoints a
  # new machine does not have); naming it in STAGES runs it again
  committed=$DEST/results/$stage
  if [ -z "${STAGES:-}" ] && { [ -s "$committed/analyze.txt" ] || { [ -f "$committed/summary.json" ] && { [ -z "$asked" ] ||
      python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["seeds"] != [int(s) for s in sys.argv[2:]])' \
        "$committed/summary.json" $asked; }; }; }; then
    echo "== $entry: done (results/$stage is committed; STAGES=$entry runs it again)"
    continue
  fi
  # the marker, or the flag itself: a stage pinned to a commit older than the marker (full-anytime-nested) has no marker
  if grep -qE '^# needs: bf16|--precision bf16' "results/$stage/run.sh" && ! grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
    echo "== $entry: skipped: it trains in bf16, and this CPU has no bfloat16 instructions (avx512_bf16, amx_bf16),"
    echo "   where bf16 runs 15-50x slower than fp32; it runs on a machine that has them"
    continue
  fi
  echo "== $entry ($(date -u +%FT%TZ))"
  if [ "$stage" = full-cifar-analyze ]; then  # needs the finals' checkpoints
    bash "results/$stage/run.sh" > "runs/$stage.txt"
    mkdir -p "$DEST/results/$stage" && cp "runs/$stage.txt" "$DEST/results/$stage/analyze.txt"
    continue
  fi
  seed "$stage"
  # land each run as it finishes, not only at the stage's end: a session that stops mid-stage keeps them
  (while sleep "${LAND_EVERY:-120}"; do land "$stage" 2>/dev/null || true; done) &
  lander=$!
  trap 'kill "$lander" 2>/dev/null || true' EXIT  # a stage that fails must not leave its lander behind
  SEEDS=${asked:-${SEEDS:-}} RESULTS="$DEST/results" bash "results/$stage/run.sh" |
    tee "runs/$stage.log"
  kill "$lander" 2>/dev/null || true
  cp "runs/$stage.log" "runs/$stage/table.txt"
  land "$stage"
done
echo "== done ($(date -u +%FT%TZ))"
