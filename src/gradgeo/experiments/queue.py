"""A grid of runs as queued trials of one Optuna study, which any number of worker processes take one at a time.

Every worker calls :func:`run_queue` with the same runs and settings (the same ``gradgeo compare ... --storage URL``
command, on any machine that shares the output folder). Each run is one trial, queued once with the run in its user
attributes; a worker takes the next queued trial and trains it. No run trains twice: a run whose earlier trial is
queued, running or done is skipped (two workers that start together may both queue it; the later copy is dropped
when taken). A worker whose run dies (killed, machine lost) stops sending heartbeats; the run is queued again and
the next worker resumes it from its checkpoint. A worker that was only paused for three heartbeats (stopped,
suspended) finds, when it continues, that its run was queued again: it stops the run at the end of its epoch, while
the worker that took the run over (its retry, or a copy that two workers starting together both queued) waits for
the run folder, then resumes it. A run that failed with an error is queued again when a worker starts. Each worker
returns when every run is done (a worker that looks while a lost run is being queued again waits for it), so any of
them can summarize.

A trial's value is its run's training time in seconds (the study minimizes nothing: the queue is the point).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gradgeo.experiments.storage import (
    MACHINE_FIELDS,
    FrozenTrial,
    Job,
    Lost,
    Surplus,
    TrialState,
    open_storage,
    open_study,
    optuna,
    when_free,
    work,
)

__all__ = ["run_queue"]


def _run(trial: FrozenTrial) -> tuple[str, int] | None:
    """The run a trial stands for, or None for a trial asked for when the queue was empty."""
    if "label" not in trial.user_attrs:
        return None
    return str(trial.user_attrs["label"]), int(trial.user_attrs["seed"])


def run_queue(
    runs: Sequence[tuple[str, int]],
    run_one: Callable[[str, int, Callable[[], None]], str],
    *,
    storage: str | None,
    out: Path | None = None,
    study: str,
    settings: dict[str, Any],
    heartbeat: int = 30,
    log: Callable[[str], None] | None = print,
) -> None:
    """Train every ``(label, seed)`` run once across all workers of the study; return when all are done.

    Args:
        runs: the grid, in the order to queue it.
        run_one: ``run_one(label, seed, still_running)`` trains one run and returns a line about its result; it
            must resume a run that was interrupted (it may be called for a run another worker started and lost)
            and finish at once for a finished one, and call ``still_running()`` after each epoch: it raises
            :class:`~gradgeo.experiments.storage.Lost` when another worker has queued the run again meanwhile
            (this one was paused), which stops the run.
        storage: the database URL (``postgresql+psycopg://...``, ``sqlite:///FILE``); None: the SQLite file
            ``out/study.db`` (the processes of one machine, or of machines sharing ``out``).
        out: the folder of the embedded storage.
        study: the study name; every worker of one grid uses the same.
        settings: what the grid is (JSON-able, e.g. the comparison's plan); a study created with other settings is
            refused, naming the difference. Its ``config`` (if any) is compared without :data:`MACHINE_FIELDS`.
        heartbeat: seconds between a running run's heartbeats; silent for three: dead, queued again.
        log: receives a line per run this worker finishes (None: silent).

    Raises:
        ValueError: bad or duplicate runs, a storage that cannot be opened, a study with other settings, or runs
            that failed on other workers (run the command again to retry them).
    """
    runs = [(str(label), int(seed)) for label, seed in runs]
    if not runs or len(set(runs)) != len(runs):
        raise ValueError(f"run_queue needs distinct runs, got {runs}")
    if isinstance(settings.get("config"), dict):
        settings = {**settings, "config": {k: v for k, v in settings["config"].items() if k not in MACHINE_FIELDS}}
    queue = open_study(open_storage(storage, out, heartbeat), study, {"kind": "grid", "runs": runs, **settings},
                       direction="minimize")

    def owners(trials: Sequence[FrozenTrial]) -> dict[tuple[str, int], FrozenTrial]:
        """Each run's first trial that did not fail: the one that trains it."""
        first: dict[tuple[str, int], FrozenTrial] = {}
        for trial in sorted(trials, key=lambda t: t.number):
            run = _run(trial)
            if run is not None and trial.state != TrialState.FAIL and run not in first:
                first[run] = trial
        return first

    with_trial = owners(queue.get_trials(deepcopy=False))
    for label, seed in runs:  # new runs, and runs whose trials all failed
        if (label, seed) not in with_trial:
            queue.enqueue_trial({}, user_attrs={"label": label, "seed": seed})

    def objective(trial: optuna.Trial) -> float:
        frozen = next(t for t in queue.get_trials(deepcopy=False) if t.number == trial.number)
        run = _run(frozen)
        if run is None:
            trial.set_user_attr("note", "the queue was empty")
            raise Surplus("no queued run left")
        owner = owners(queue.get_trials(deepcopy=False))[run]
        if owner.number != trial.number:
            trial.set_user_attr("note", f"duplicate of trial {owner.number}")
            raise Surplus(f"{run} is trial {owner.number}'s")

        def still_running() -> None:
            now = next(t for t in queue.get_trials(deepcopy=False) if t.number == trial.number)
            if now.state != TrialState.RUNNING:
                raise Lost(f"{run[0]} seed {run[1]}: stopped, no longer running: another worker failed its trial while "
                           "this one was silent for three heartbeats (paused?) and queued it again, to resume it from "
                           "its checkpoint")

        # the run's earlier trials, all failed since this one trains it: a retry's, or a copy's that two workers
        # starting together both queued; the worker of such a trial may be alive, paused, still training the run
        before = [t.number for t in queue.get_trials(deepcopy=False) if _run(t) == run and t.number < trial.number]
        started = time.perf_counter()
        if not before:
            line = run_one(*run, still_running)
        else:
            line = when_free(lambda: run_one(*run, still_running), f"{run[0]} seed {run[1]}: waits for its run folder, "
                             f"still held by the worker of trial {before[0]} (paused or slow), to resume it from its "
                             "checkpoint", poll=min(5, heartbeat), log=log)
        lines[trial.number] = f"{run[0]} seed {run[1]}: {line}"
        return time.perf_counter() - started

    lines: dict[int, str] = {}  # each run's line, logged once its trial is recorded (a retry would log it again)

    def logged(trial: FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE and log is not None:
            done = sum(t.state == TrialState.COMPLETE for t in queue.get_trials(deepcopy=False))
            log(f"[{done}/{len(runs)}] {lines.pop(trial.number)}")

    def wants_trial(trials: Sequence[FrozenTrial]) -> bool:
        return any(t.state == TrialState.WAITING for t in trials)

    work([Job(queue, objective, wants_trial, logged)], heartbeat=heartbeat, log=log)
    done = {run for run, trial in owners(queue.get_trials(deepcopy=False)).items()
            if trial.state == TrialState.COMPLETE}
    missing = [run for run in runs if run not in done]
    if missing:
        raise ValueError(f"{len(missing)} run(s) of study {study!r} failed on other workers ("
                         f"{', '.join(f'{label} seed {seed}' for label, seed in missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}): see their output, then run the command again to "
                         "retry them")
