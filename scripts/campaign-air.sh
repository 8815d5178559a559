#!/usr/bin/env bash
# What is left of issue 26's campaign, in its order, each stage at its pinned commit (results/REPORT.md, "Issue
# 26", has the plan): on a CPU with bfloat16 instructions first the stages that train in bf16 (the finals, then
# the nested network's runs), which cannot run elsewhere; then, on any CPU, the fp32 stages. Each stage resumes
# where it stopped and lands its runs in results/<stage>/ (scripts/campaign-full.sh); a stage whose runs are all
# in finishes at once with its table. After a stop, or on a new machine, run this again:
#   nohup bash scripts/campaign-air.sh > /tmp/air-campaign.log 2>&1 &
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${CAMPAIGN_AIR_COPY:-}" ]; then  # run from a copy: an edit of this file must not change a running campaign
  copy=$(mktemp)
  cp "$0" "$copy"
  CAMPAIGN_AIR_COPY=1 exec bash "$copy" "$here"
fi
here=$1
stage() { COMMIT=$1 STAGES=$2 JOBS=${JOBS:-2} bash "$here/campaign-full.sh"; }
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
  stage b680c77 air-final
  stage 673e236 full-anytime-nested@1,2,3
fi
stage 924aa5f air-control-short
stage b680c77 air-tune-more
