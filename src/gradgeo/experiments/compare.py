"""Compare labels x seeds on any task: the one experiment path behind ``gradgeo compare --task ...``.

A comparison trains every label (an optimizer spec; for ``anytime``, a multi-exit strategy) with every seed
through the resumable grid (:func:`gradgeo.experiments.grid.run_grid`), then summarizes with the same
statistics for every task (:func:`gradgeo.experiments.summarize`). The comparison folder:

    OUT/plan.json                       what was asked (task, labels, seeds, the shared configuration)
    OUT/runs/<label>/seed-<k>/...       one training run each (metrics.jsonl, checkpoint.pt, result.json)
    OUT/summary.json, OUT/summary.csv   final metrics: mean ± 95% CI, paired tests against the first label
    OUT/curves.png                      the task's curves and the training loss per epoch: the mean over the
                                        seeds, with its 95% CI band from 3 seeds on, each seed's line with 2
                                        (gradgeo.experiments.plots)
    OUT/samples.png                     (gan) a grid of samples per spec, first seed
    OUT/accuracy_vs_flops.png           (anytime) test accuracy against FLOPs: each exit, and early exit

Running the same comparison again skips finished runs and resumes interrupted ones from their checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from gradgeo.experiments.grid import run_grid
from gradgeo.experiments.summary import format_table, summarize
from gradgeo.tasks import Task, get_task
from gradgeo.training import ddp
from gradgeo.training.config import TrainConfig

__all__ = ["compare_task", "describe_row"]


def describe_row(task: Task, row: dict[str, Any]) -> str:
    """An epoch's metrics as the lines logged after each epoch and each run show them (every exit's, for a
    per-exit metric)."""
    parts = []
    for m in task.metrics:
        values = row[m.key] if m.per_exit else [row[m.key]]
        parts.append(f"{m.label} = {' / '.join(f'{m.scale * v:.{m.digits}f}' for v in values)}")
    return ", ".join(parts)


def compare_task(
    task: str | Task,
    labels: Sequence[str],
    seeds: Sequence[int],
    base: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    jobs: int = 1,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
    storage: str | None = None,
    study: str | None = None,
    heartbeat: int = 30,
    tensorboard: bool = False,
) -> dict[str, Any]:
    """Train every label with every seed on a task (skipping finished runs), then write and return the summary.

    The first label is the baseline of the paired tests; runs with the same seed share the initialization and
    the data order, so differences are paired. Under torchrun every run is trained by all ranks together (see
    :mod:`gradgeo.training.engine`); rank 0 alone logs and writes the summary, every rank returns it, and
    ``jobs`` must be 1.

    Args:
        task: a task name (``"classify"``, ``"segment"``, ``"gan"``, ``"anytime"``) or a :class:`~gradgeo.tasks.Task`.
        labels: what is compared, the values of the task's ``compared`` field: optimizer spec strings (see
            :func:`gradgeo.channel.factory.parse_spec`), or for ``anytime`` strategy specs (``"sum"``, ``"osgd"``,
            ``"osgd:granularity=tensor"`` ...).
        seeds: the seeds; every label runs with each.
        base: the shared configuration, an instance of the task's ``config_class`` (its compared field and
            ``seed`` are replaced per run).
        out_dir: the comparison folder.
        jobs: runs in parallel processes (each gets ``cores // jobs`` threads).
        log: receives progress lines (one per finished run and, unless ``progress`` is False, one per finished
            epoch of every run) and the final table.
        progress: False: no per-epoch lines and no bars; otherwise per-epoch lines, and for sequential runs tqdm
            bars over each epoch's training steps and evaluation (None: bars only on a terminal).
        storage, study, heartbeat: run the grid as queued trials of an Optuna study shared by any number of
            workers (see :func:`gradgeo.experiments.grid.run_grid`).
        tensorboard: every run also writes TensorBoard events to its folder (see :func:`gradgeo.training.engine.train`).

    Returns:
        The summary (also written to ``summary.json``), in the task's layout (:mod:`gradgeo.experiments.layouts`).

    Example:
        >>> from gradgeo.segment import SegmentConfig
        >>> base = SegmentConfig(epochs=10, train_size=2000)
        >>> compare_task("segment", ["adam", "adam+sobolev:lam=0.1"], [0, 1, 2], base, "runs/seg")  # doctest: +SKIP
    """
    task = get_task(task)
    if type(base) is not task.config_class:
        raise ValueError(f"the {task.name} task needs a {task.config_class.__name__}, got a {type(base).__name__}")
    noun = "optimizer spec" if task.compared == "optimizer" else "method"
    if not labels:
        raise ValueError(f"compare needs at least one {noun}")
    base.validate()
    same = "build the same optimizer" if task.compared == "optimizer" else "are the same method"
    seen: dict[Any, str] = {}
    for label in labels:  # every label makes a valid configuration, and no two mean the same, before any run
        key = task.run_config(base, label, base.seed).validate().canonical(task.compared, label)
        if key in seen:
            raise ValueError(f"duplicate {noun}s in {list(labels)}: {seen[key]!r} and {label!r} {same}")
        seen[key] = label
    ctx = ddp.setup(base.resolved_device())
    out = Path(out_dir)
    if task.prepare is not None and ctx.is_main:
        task.prepare(base, log)
    plan = {"task": task.name, f"{task.label_name}s": list(labels), "seeds": list(seeds),
            "config": dataclasses.asdict(base)}
    run_grid(out, labels, seeds, partial(task.run_config, base), task.train, plan, jobs=jobs, log=log,
             progress=progress, context=ctx, load=task.load, describe=partial(describe_row, task),
             storage=storage, study=study, heartbeat=heartbeat, tensorboard=tensorboard)
    summary = None
    if ctx.is_main:  # the rank that wrote the results summarizes them; every rank returns its summary
        summary = summarize(task, out, labels, seeds)
        log(format_table(task, summary))
    return ctx.from_main(summary)
