"""Workloads beyond classification behind one comparison: ``classify``, ``segment`` and ``gan``.

A :class:`Task` bundles what differs between workloads: its configuration class, its training function (one
resumable run of :func:`gradgeo.engine.fit`), the data its runs share, and the final metrics a comparison
reports, each with its direction. :func:`compare_task` runs optimizer specs x seeds through the same
resumable :func:`gradgeo.compare.run_grid` as a classification comparison and summarizes with the same
statistics (:func:`gradgeo.stats.mean_ci`, :func:`gradgeo.stats.paired_test`): ``classify`` is exactly
:func:`gradgeo.compare.compare`; the other tasks write, in the comparison folder::

    OUT/plan.json, OUT/runs/<spec>/seed-<k>/...     as for classification
    OUT/summary.json, OUT/summary.csv               every metric: mean ± 95% CI, paired test against the first spec
    OUT/curves.png                                  every metric and the training loss per epoch
    OUT/samples.png                                 (gan) a grid of samples per spec, first seed

Headline metrics: ``segment`` the test mean IoU (then pixel accuracy), ``gan`` the Frechet distance to the
test images (lower is better; then the confidence score). A paired difference is ``spec - baseline`` in the
metric's own units; the verdict column reads it with the metric's direction.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from gradgeo import ddp
from gradgeo.compare import TEST_ACC, Metric, compare, load_histories, plot_curves, run_dir, run_grid
from gradgeo.data import DatasetSplits
from gradgeo.engine import TrainConfig, load_splits, train
from gradgeo.factory import parse_spec
from gradgeo.gan.training import SAMPLES_PT, GANConfig, config_classifier, save_samples_figure, train_gan
from gradgeo.models import ANYTIME_MODELS, GAN_MODELS, MODELS, SEGMENTATION_MODELS
from gradgeo.segment.training import SegmentConfig, load_scene_splits, train_segment
from gradgeo.stats import mean_ci, paired_test

__all__ = ["TASKS", "Metric", "Task", "compare_task", "format_task_table", "get_task", "summarize_task"]


@dataclasses.dataclass(frozen=True)
class Task:
    """A workload the comparison harness can run (see the module docstring).

    Attributes:
        name: what ``--task`` says.
        config_class: the run's hyper-parameters, a :class:`~gradgeo.engine.TrainConfig` subclass.
        train: ``train(config, out_dir, *, resume, progress, log, splits, stop_after)``, a module-level
            function (parallel runs pickle it).
        load: ``config -> splits``, the data sequential runs share.
        metrics: the final metrics of a comparison, headline first.
        prepare: ``prepare(config, log)``, called once with the shared configuration before any run (``None``:
            nothing), e.g. to train the GAN's feature classifier before parallel runs would each do it.
        outputs: what a finished run writes, for the CLI's closing line.
        models: the model names the task accepts (``None``: its config class checks them).
        loss_label: what the rows' ``train_loss`` is, for the curves.
    """

    name: str
    config_class: type[TrainConfig]
    train: Callable[..., list[dict[str, Any]]]
    load: Callable[[TrainConfig], DatasetSplits]
    metrics: tuple[Metric, ...]
    prepare: Callable[[TrainConfig, Callable[[str], None]], Any] | None = None
    outputs: str = "metrics.jsonl, checkpoint.pt and result.json"
    models: tuple[str, ...] | None = None
    loss_label: str = "training loss"

    def make_config(self, **fields: Any) -> TrainConfig:
        """The task's configuration from keyword fields, validated; a field the task lacks is an error that
        names the tasks that have it."""
        foreign = sorted(set(fields) - _field_names(self.config_class))
        if foreign:
            owners = {name: [t.name for t in TASKS.values() if name in _field_names(t.config_class)]
                      for name in foreign}
            raise ValueError("; ".join(f"--{name.replace('_', '-')} is an option of --task {' and '.join(owners[name])}"
                                       f", not of --task {self.name}" for name in foreign))
        config = self.config_class(**fields).validate()
        if self.models is not None and config.model not in self.models:
            hint = next((f" ({kind}: {where})" for names, kind, where in (
                (SEGMENTATION_MODELS, "a segmentation model", "--task segment"), (GAN_MODELS, "a GAN", "--task gan"),
                (ANYTIME_MODELS, "an anytime model", "gradgeo anytime")) if config.model in names), "")
            raise ValueError(f"unknown model {config.model!r} for the {self.name} task{hint}; it takes: "
                             f"{', '.join(self.models)}")
        return config


def _field_names(config_class: type[TrainConfig]) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class)}


TASKS: dict[str, Task] = {
    "classify": Task("classify", TrainConfig, train, load_splits, (TEST_ACC,),
                     models=MODELS),
    "segment": Task("segment", SegmentConfig, train_segment, load_scene_splits,
                    (Metric("test_miou", "test mIoU %"), Metric("test_acc", "test pixel acc %"))),
    "gan": Task("gan", GANConfig, train_gan, load_splits,
                (Metric("test_fd", "Frechet distance", higher_is_better=False, scale=1.0, digits=3),
                 Metric("test_score", "classifier score", scale=1.0, digits=3)),
                prepare=config_classifier, outputs="metrics.jsonl, checkpoint.pt, result.json and samples.png",
                loss_label="discriminator loss"),
}


def get_task(name: str) -> Task:
    """The task called ``name``, with a clear error for an unknown one."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def compare_task(
    task: str | Task,
    specs: Sequence[str],
    seeds: Sequence[int],
    base: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    jobs: int = 1,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
    tensorboard: bool = False,
) -> dict[str, Any]:
    """Train every optimizer spec with every seed on a task (skipping finished runs), then summarize.

    The first spec is the baseline of the paired tests; runs with the same seed share the initialization
    and the data order. ``classify`` is :func:`gradgeo.compare.compare`.

    Args:
        task: a task name (``"classify"``, ``"segment"``, ``"gan"``) or a :class:`Task`.
        specs: optimizer spec strings (see :func:`gradgeo.factory.parse_spec`).
        seeds: the seeds; every spec runs with each.
        base: the shared configuration, an instance of the task's ``config_class`` (its ``optimizer`` and
            ``seed`` are replaced per run).
        out_dir: the comparison folder.
        jobs: runs in parallel processes (each gets ``cores // jobs`` threads).
        log: receives progress lines and the final table.
        progress: tqdm bars for sequential runs; default only on a terminal.
        tensorboard: every run also writes TensorBoard events to its folder (see :func:`gradgeo.engine.train`).

    Returns:
        The summary (also written to ``summary.json``), see :func:`summarize_task`.

    Example:
        >>> base = SegmentConfig(epochs=10, train_size=2000)
        >>> compare_task("segment", ["adam", "adam+sobolev:lam=0.1"], [0, 1, 2], base, "runs/seg")  # doctest: +SKIP
    """
    task = get_task(task) if isinstance(task, str) else task
    if type(base) is not task.config_class:
        raise ValueError(f"the {task.name} task needs a {task.config_class.__name__}, got a {type(base).__name__}")
    if task.name == "classify":
        return compare(specs, seeds, base, out_dir, jobs=jobs, log=log, progress=progress, tensorboard=tensorboard)
    if not specs:
        raise ValueError("compare needs at least one optimizer spec")
    if len(set(specs)) != len(specs):
        raise ValueError(f"duplicate optimizer specs in {list(specs)}")
    for spec in specs:
        parse_spec(spec)
    base.validate()
    ctx = ddp.setup(base.resolved_device())
    out = Path(out_dir)
    if task.prepare is not None and ctx.is_main:
        task.prepare(base, log)
    plan = {"task": task.name, "specs": list(specs), "seeds": list(seeds), "config": dataclasses.asdict(base)}
    run_grid(out, specs, seeds, lambda spec, seed: dataclasses.replace(base, optimizer=spec, seed=seed), task.train,
             plan, jobs=jobs, log=log, progress=progress, context=ctx, load=task.load, tensorboard=tensorboard,
             describe=lambda result: ", ".join(f"{m.label} = {m.scale * result['history'][-1][m.key]:.{m.digits}f}"
                                               for m in task.metrics))
    summary = None
    if ctx.is_main:
        summary = summarize_task(task, out, specs, seeds)
        log(format_task_table(summary))
    return ctx.from_main(summary)


def _verdict(metric: Metric, difference: float, p_value: float) -> str:
    if not p_value < 0.05:  # nan (one seed) included
        return "no significant difference"
    return "better" if (difference > 0) == metric.higher_is_better else "worse"


def summarize_task(task: str | Task, out_dir: str | os.PathLike[str], specs: Sequence[str],
                   seeds: Sequence[int]) -> dict[str, Any]:
    """Per spec and metric: the final value as mean ± 95% CI over seeds and the paired test against the first
    spec; writes ``summary.json``, ``summary.csv``, ``curves.png`` (and ``samples.png`` for ``gan``).

    Returns:
        ``{"task", "baseline", "seeds", "metrics", "rows"}``; ``metrics`` lists ``key``, ``label``,
        ``higher_is_better``, ``scale``, ``digits``; each row has ``spec``, ``n`` and per metric key
        ``{mean, half_width, n}``, ``per_seed[key]`` and, except for the baseline, ``vs_baseline[key]`` with the
        ``difference`` (spec - baseline, mean ± CI), ``p_value`` and ``verdict`` (``"better"``, ``"worse"`` or
        ``"no significant difference"`` at p < 0.05, read with the metric's direction).
    """
    task = get_task(task) if isinstance(task, str) else task
    out = Path(out_dir)
    finals = {spec: {m.key: [h[-1][m.key] for h in load_histories(out, spec, seeds)] for m in task.metrics}
              for spec in specs}
    rows = []
    for spec in specs:
        row: dict[str, Any] = {"spec": spec, "n": len(seeds), "per_seed": finals[spec]}
        row.update({m.key: dataclasses.asdict(mean_ci(finals[spec][m.key])) for m in task.metrics})
        if spec != specs[0]:
            row["vs_baseline"] = {}
            for m in task.metrics:
                test = paired_test(finals[spec][m.key], finals[specs[0]][m.key])
                row["vs_baseline"][m.key] = {"difference": dataclasses.asdict(test.difference),
                                             "p_value": test.p_value,
                                             "verdict": _verdict(m, test.difference.mean, test.p_value)}
        rows.append(row)
    summary = {"task": task.name, "baseline": specs[0], "seeds": list(seeds),
               "metrics": [dataclasses.asdict(m) for m in task.metrics], "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _write_csv(out / "summary.csv", summary)
    plot_curves(out, specs, seeds, out / "curves.png", task.metrics, task.loss_label)
    if task.name == "gan":
        panels = {f"{spec} (seed {seeds[0]})": torch.load(run_dir(out, spec, seeds[0]) / SAMPLES_PT).float() / 255
                  for spec in specs if (run_dir(out, spec, seeds[0]) / SAMPLES_PT).exists()}
        if panels:
            save_samples_figure(panels, out / "samples.png")
    return summary


def _write_csv(path: Path, summary: dict[str, Any]) -> None:
    """One line per spec and metric (raw values, not scaled)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["spec", "metric", "higher_is_better", "n", "mean", "ci95", "diff_vs_baseline", "diff_ci95",
                         "p_value", "verdict"])
        for r in summary["rows"]:
            for m in summary["metrics"]:
                stats, vs = r[m["key"]], r.get("vs_baseline", {}).get(m["key"])
                writer.writerow([r["spec"], m["key"], m["higher_is_better"], r["n"], stats["mean"],
                                 stats["half_width"], vs["difference"]["mean"] if vs else "",
                                 vs["difference"]["half_width"] if vs else "", vs["p_value"] if vs else "",
                                 vs["verdict"] if vs else "(baseline)"])


def format_task_table(summary: dict[str, Any]) -> str:
    """The summary as a fixed-width table: each metric (mean ± 95% CI, arrows give its direction), then per
    metric the paired difference to the baseline, its p-value and the verdict."""
    metrics = [Metric(**m) for m in summary["metrics"]]
    rows = summary["rows"]
    width = max(24, *(len(r["spec"]) for r in rows))
    arrow = {True: "(higher better)", False: "(lower better)"}
    columns = [max(20, len(m.label) + 2) for m in metrics]
    lines = [f"{summary['task']}: final epoch, mean ± 95% CI over {rows[0]['n']} seed(s); paired difference = "
             f"spec - {summary['baseline']}"]
    header = f"{'optimizer':<{width}} {'n':>2}" + "".join(f" {m.label:>{c}}" for m, c in zip(metrics, columns))
    lines += [header, f"{'':<{width}}   " + "".join(f" {arrow[m.higher_is_better]:>{c}}"
                                                     for m, c in zip(metrics, columns))]
    lines.append("-" * len(header))
    for r in rows:
        lines.append(f"{r['spec']:<{width}} {r['n']:>2}" + "".join(f" {m.format(r[m.key]):>{c}}"
                                                                    for m, c in zip(metrics, columns)))
    for m in metrics:
        lines += ["", f"{m.label}: difference to {summary['baseline']}",
                  f"{'optimizer':<{width}} {'difference':>20} {'p':>7}  verdict"]
        lines.append("-" * len(lines[-1]))
        for r in rows:
            if "vs_baseline" not in r:
                lines.append(f"{r['spec']:<{width}} {'(baseline)':>20}")
                continue
            d = r["vs_baseline"][m.key]
            lines.append(f"{r['spec']:<{width}} {m.format(d['difference']):>20} {d['p_value']:>7.3f}  {d['verdict']}")
    return "\n".join(lines)
