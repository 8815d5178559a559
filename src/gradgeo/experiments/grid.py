"""The grid of runs behind every comparison: labels x seeds, resumable, in parallel processes or under torchrun.

Layout of a comparison folder:

    OUT/plan.json                       what was asked (the task, labels, seeds, the shared configuration)
    OUT/runs/<label>/seed-<k>/...       one training run each (metrics.jsonl, checkpoint.pt, result.json)

Running the same grid again skips finished runs and resumes interrupted ones from their checkpoint.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import functools
import json
import multiprocessing
import os
import re
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from gradgeo.data import DatasetSplits
from gradgeo.training import ddp
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import RESULT, _atomic_save, load_splits
from gradgeo.training.extras import check
from gradgeo.training.run_folder import hold_folder

__all__ = ["load_histories", "load_results", "read_json", "run_dir", "run_grid"]


def _slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+=-]", "_", spec)


def run_dir(out: Path, spec: str, seed: int) -> Path:
    """Where the run of ``spec`` with ``seed`` lives inside a comparison folder."""
    return out / "runs" / _slug(spec) / f"seed-{seed}"


def read_json(path: Path) -> Any:
    """A JSON file of a comparison folder (``plan.json``, a run's ``result.json``); a ValueError names a file
    that is cut short or corrupt."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path}: it is cut short or corrupt ({error}); delete it and run the same "
                         "command again (a run without result.json is resumed or trained again)") from None


def _die_with_parent(parent: int) -> None:
    """A worker process ends when the comparison that started it does, however it ends (Linux: the kernel
    sends SIGTERM when the parent dies; elsewhere nothing is set up)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


#: in a worker process of a parallel grid: where its runs send each finished epoch's row (None: nowhere)
_finished_epochs: Any = None


def _start_worker(parent: int, finished_epochs: Any) -> None:
    """A worker's setup: end with the parent, and keep the queue of finished epochs (a queue reaches a worker
    only when the worker starts)."""
    global _finished_epochs
    _die_with_parent(parent)
    _finished_epochs = finished_epochs


def _worker(train_fn: Callable[..., Any], config: TrainConfig, directory: str, threads: int, run: tuple[str, int]
            ) -> str:
    torch.set_num_threads(threads)
    queue = _finished_epochs
    train_fn(config, directory, resume=True, progress=False, log=None,
             on_epoch=None if queue is None else lambda row: queue.put((run, row)))
    return directory


def _epoch_line(label: str, seed: int, epochs: int, describe: Callable[[dict[str, Any]], str],
                row: dict[str, Any]) -> str:
    """The line logged after each finished epoch of a run."""
    return f"  {label} seed {seed}: epoch {row['epoch']}/{epochs}, {describe(row)} ({row['time']:.0f} s)"


def run_grid(
    out: Path,
    labels: Sequence[str],
    seeds: Sequence[int],
    make_config: Callable[[str, int], TrainConfig],
    train_fn: Callable[..., Any],
    plan: dict[str, Any],
    *,
    jobs: int = 1,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
    context: ddp.Context | None = None,
    load: Callable[[TrainConfig], DatasetSplits] = load_splits,
    describe: Callable[[dict[str, Any]], str] = str,
    storage: str | None = None,
    study: str | None = None,
    heartbeat: int = 30,
    tensorboard: bool = False,
) -> None:
    """Train every ``(label, seed)`` run of a comparison folder that has no ``result.json`` yet.

    Writes ``plan.json`` first, refusing a folder whose plan has another ``"config"``; unfinished runs
    resume from their checkpoints (the one grid of :func:`gradgeo.experiments.compare_task`, for every task).
    Under torchrun every rank calls this and all ranks train each run together (``train_fn`` joins them,
    see :mod:`gradgeo.training.engine`; ``jobs`` must be 1); rank 0 alone writes ``plan.json`` and logs.

    Args:
        out: the comparison folder; run ``(label, seed)`` lives in :func:`run_dir`.
        labels: what is compared (optimizer specs, training methods ...).
        seeds: the seeds; every label runs with each (distinct).
        make_config: ``(label, seed) -> config`` of that run.
        train_fn: ``train_fn(config, directory, resume=True, progress=..., log=None, on_epoch=..., [splits=...])``,
            a module-level function or a task's bound :meth:`~gradgeo.tasks.Task.train` (parallel runs pickle it).
        plan: what was asked, with the shared configuration under ``"config"``.
        jobs: runs in parallel processes (each gets ``cores // jobs`` threads).
        log: receives one line per finished run and, unless ``progress`` is False, one per finished epoch of every
            run (parallel runs send theirs to this process, which logs them as they come).
        progress: False: no per-epoch lines and no bars; otherwise per-epoch lines, and for sequential runs tqdm
            bars over each epoch's training steps and evaluation (None: bars only on a terminal).
        context: the data-parallel ranks (:func:`gradgeo.training.ddp.setup`); None: one process.
        load: ``config -> splits``, loads the data that sequential runs share (a task with its own data, e.g.
            :func:`gradgeo.segment.load_scene_splits`, passes its loader).
        describe: ``row -> text``: an epoch's metrics, for the lines logged after each epoch and each run.
        storage: a database URL (``postgresql+psycopg://...``, ``sqlite:///FILE``), or ``""`` for the SQLite file
            ``out/study.db``: the runs become queued trials of an Optuna study there
            (:func:`gradgeo.experiments.queue.run_queue`), which any number of workers calling this with the same
            arguments and a shared ``out`` take one at a time; returns when every run is done.
        study: the study's name (default: ``out``'s name).
        heartbeat: seconds between a running run's heartbeats (see :mod:`gradgeo.experiments.storage`).
        tensorboard: pass ``tensorboard=True`` to every ``train_fn`` call (TensorBoard events in each run folder).
    """
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"compare needs distinct seeds, got {list(seeds)}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1 (runs side by side), got {jobs!r}")
    # the summary after the runs needs these: say so before the runs, not after
    check("harness", "a comparison's summary (statistics and plots)", ("scipy", "matplotlib"))
    train_fn = functools.partial(train_fn, tensorboard=True) if tensorboard else train_fn
    context = context or ddp.Context()
    if context.distributed and jobs > 1:
        raise ValueError("--jobs > 1 trains runs side by side in separate processes; under torchrun all ranks "
                         "train each run together: use --jobs 1")
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        if storage is None and context.is_main:  # one comparison per folder (--storage: many workers, by design)
            held.enter_context(hold_folder(out, "a comparison"))
        plan_path = out / "plan.json"
        if plan_path.exists():
            previous = read_json(plan_path)
            if not isinstance(previous, dict) or not isinstance(previous.get("config"), dict):
                raise ValueError(f"{plan_path} is not the plan.json of a comparison; pick a new --out folder")
            base = type(make_config(labels[0], seeds[0]))(**plan["config"])
            changed = base.describe_changes(previous["config"], "plan.json")
            if changed and any((out / "runs").glob("*/seed-*")):  # a plan no run was started under may change
                raise ValueError(f"{out} holds a comparison with another configuration (it differs in {changed}); "
                                 "pick a new --out folder")
        for label, seed in ((label, seed) for seed in seeds for label in labels):
            path = run_dir(out, label, seed) / RESULT
            if path.exists():  # a corrupt result, or one of another configuration, is named before anything changes
                recorded = read_json(path)
                if not isinstance(recorded, dict) or not isinstance(recorded.get("config"), dict):
                    raise ValueError(f"{path} is not the result.json of a finished run; delete it and run the same "
                                     "command again (a run without result.json is resumed or trained again)")
                changed = make_config(label, seed).describe_changes(recorded["config"], str(path))
                if changed:
                    raise ValueError(f"{path} was trained with another configuration ({changed}); it would be "
                                     "reported as this one: pick a new --out folder, or run the command it was "
                                     "trained with")
        if context.is_main:
            _atomic_save(plan, plan_path)  # atomic: the other ranks may be reading it

        def train_one(label: str, seed: int, splits: DatasetSplits | None,
                      still_running: Callable[[], None] | None = None) -> None:
            """Train one run in this process, logging its epochs (rank 0, unless progress is False); after each,
            ``still_running()`` may stop it (a queued run that another worker took back)."""
            config = make_config(label, seed)
            report = progress is not False and context.is_main

            def on_epoch(row: dict[str, Any]) -> None:
                if still_running is not None:
                    still_running()
                if report:
                    log(_epoch_line(label, seed, config.epochs, describe, row))

            train_fn(config, run_dir(out, label, seed), resume=True, progress=progress, log=None, splits=splits,
                     on_epoch=on_epoch if report or still_running is not None else None)

        def finished(label: str, seed: int) -> str:
            """What the line after a finished run says of it."""
            return f"final {describe(load_results(out, label, [seed])[0]['history'][-1])}"

        total = len(labels) * len(seeds)
        todo = [(label, seed) for seed in seeds for label in labels
                if not (run_dir(out, label, seed) / RESULT).exists()]
        todo = context.from_main(todo)  # every rank trains the same runs
        done = total - len(todo)
        if context.is_main:  # rank 0 alone logs (and reads the result.json files it writes)
            log(f"{len(labels)} x {len(seeds)} seeds: {done} runs finished, {len(todo)} to go -> {out}")
        if storage is not None:  # the grid as queued trials that any number of workers take
            from gradgeo.experiments.queue import run_queue

            if context.distributed or jobs > 1:
                raise ValueError("--storage takes runs one at a time per process: start more workers (the same "
                                 "command) instead of --jobs or torchrun")
            loaded: dict[str, DatasetSplits] = {}

            def run_one(label: str, seed: int, still_running: Callable[[], None]) -> str:
                if "splits" not in loaded:
                    loaded["splits"] = load(make_config(label, seed))
                train_one(label, seed, loaded["splits"], still_running)
                return finished(label, seed)

            run_queue([(label, seed) for seed in seeds for label in labels], run_one, storage=storage or None, out=out,
                      study=study or out.resolve().name, settings=plan, heartbeat=heartbeat, log=log)
            return
        if jobs > 1 and len(todo) > 1:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            spawn = multiprocessing.get_context("spawn")
            finished_epochs = spawn.SimpleQueue() if progress is not False else None
            with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=spawn, initializer=_start_worker,
                                                        initargs=(os.getpid(), finished_epochs)) as pool:
                futures = {pool.submit(_worker, train_fn, make_config(label, seed), str(run_dir(out, label, seed)),
                                       threads, (label, seed)): (label, seed) for label, seed in todo}
                pending = set(futures)
                while pending:
                    ended, pending = concurrent.futures.wait(pending, timeout=1.0,
                                                             return_when=concurrent.futures.FIRST_COMPLETED)
                    # a run's epochs were sent before its future ended: log them first
                    while finished_epochs is not None and not finished_epochs.empty():
                        (label, seed), row = finished_epochs.get()
                        log(_epoch_line(label, seed, make_config(label, seed).epochs, describe, row))
                    for future in ended:
                        future.result()
                        label, seed = futures[future]
                        done += 1
                        log(f"[{done}/{total}] {label} seed {seed}: {finished(label, seed)}")
        else:
            splits = load(make_config(*todo[0])) if todo else None
            for label, seed in todo:
                train_one(label, seed, splits)
                done += 1
                if context.is_main:
                    log(f"[{done}/{total}] {label} seed {seed}: {finished(label, seed)}")


def load_results(out: Path, label: str, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The ``result.json`` of each finished run of ``label`` in the comparison folder ``out``, in seed order."""
    results = []
    for seed in seeds:
        path = run_dir(out, label, seed) / RESULT
        result = read_json(path)
        if not isinstance(result, dict) or not result.get("history"):
            raise ValueError(f"{path} is not the result.json of a finished run; delete it and run the same command "
                             "again")
        results.append(result)
    return results


def load_histories(out: Path, spec: str, seeds: Sequence[int]) -> list[list[dict[str, Any]]]:
    """The per-epoch rows of each finished run of ``spec`` in the comparison folder ``out``."""
    return [result["history"] for result in load_results(out, spec, seeds)]
