"""The one summary of a comparison, for every task: ``summary.json``, ``summary.csv``, ``curves.png`` and the
task's extra artefacts, in the layout the task names (:mod:`gradgeo.experiments.layouts`)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gradgeo.experiments.grid import load_results, run_dir
from gradgeo.experiments.layouts import LAYOUTS
from gradgeo.experiments.plots import plot_curves
from gradgeo.tasks import Task, get_task
from gradgeo.training.engine import _atomic_save
from gradgeo.training.run_folder import write_file

__all__ = ["format_table", "summarize"]


def summarize(task: str | Task, out_dir: str | os.PathLike[str], labels: Sequence[str],
              seeds: Sequence[int]) -> dict[str, Any]:
    """Summarize the finished runs of a comparison folder: per label the final metrics as mean ± 95% CI over
    seeds and the paired tests against the first label. Writes ``summary.json``, ``summary.csv``, ``curves.png``
    (the task's ``curves`` and the training loss per epoch) and the task's artefacts (``samples.png`` for gan,
    ``accuracy_vs_flops.png`` for anytime).

    Returns:
        The summary, in the task's layout (:mod:`gradgeo.experiments.layouts`).
    """
    task = get_task(task)
    out = Path(out_dir)
    layout = LAYOUTS[task.summary]
    summary = layout.build(task, labels, seeds, {label: load_results(out, label, seeds) for label in labels})
    _atomic_save(summary, out / "summary.json")
    text = io.StringIO()
    csv.writer(text).writerows(layout.csv_rows(summary))
    write_file(out / "summary.csv", text.getvalue().encode())
    plot_curves(out, labels, seeds, out / "curves.png", task.curves or task.metrics, task.loss_label)
    if task.artefacts is not None:
        task.artefacts(out, {label: {seed: run_dir(out, label, seed) for seed in seeds} for label in labels}, summary)
    return summary


def format_table(task: str | Task, summary: dict[str, Any]) -> str:
    """A summary of :func:`summarize` as the fixed-width table of its task's layout."""
    return LAYOUTS[get_task(task).summary].table(summary)
