"""Compare optimizer specs over several seeds: resumable runs, a table with 95% CIs, a paired test, a plot.

Layout of a comparison folder::

    OUT/plan.json                       what was asked (specs, seeds, the shared configuration)
    OUT/runs/<spec>/seed-<k>/...        one training run each (metrics.jsonl, checkpoint.pt, result.json)
    OUT/summary.json, OUT/summary.csv   the table, machine-readable
    OUT/curves.png                      test accuracy and training loss per epoch, mean and 95% CI band

Running the same command again skips finished runs and resumes interrupted ones from their checkpoint.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import functools
import json
import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from gradgeo import ddp
from gradgeo.data import DatasetSplits
from gradgeo.engine import RESULT, TrainConfig, _atomic_save, load_splits, train
from gradgeo.extras import check
from gradgeo.factory import parse_spec
from gradgeo.stats import Summary, mean_ci, paired_test

__all__ = ["TEST_ACC", "Metric", "compare", "load_histories", "plot_curves", "run_dir", "run_grid", "summarize"]


@dataclasses.dataclass(frozen=True)
class Metric:
    """A number every run reports in its rows (``key``), how to show it and which way is better.

    Attributes:
        key: the field of a row of the run's history (the final metric is the last epoch's).
        label: the column header and the plot's axis label.
        higher_is_better: the direction, for the verdict of a paired test.
        scale: shown as ``value * scale`` (100: a fraction shown in %).
        digits: decimals shown.
    """

    key: str
    label: str
    higher_is_better: bool = True
    scale: float = 100.0
    digits: int = 2

    def format(self, stats: dict[str, Any]) -> str:
        return Summary(**stats).format(self.scale, self.digits)


TEST_ACC = Metric("test_acc", "test acc %")


def _slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+=-]", "_", spec)


def run_dir(out: Path, spec: str, seed: int) -> Path:
    """Where the run of ``spec`` with ``seed`` lives inside a comparison folder."""
    return out / "runs" / _slug(spec) / f"seed-{seed}"


def _run_config(base: TrainConfig, spec: str, seed: int) -> TrainConfig:
    return dataclasses.replace(base, optimizer=spec, seed=seed)


def _worker(train_fn: Callable[..., Any], config: TrainConfig, directory: str, threads: int) -> str:
    torch.set_num_threads(threads)
    train_fn(config, directory, resume=True, progress=False, log=None)
    return directory


def compare(
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
    """Train every spec with every seed (skipping finished runs), then write and return the summary.

    The first spec is the baseline of the paired comparison. Runs with the same seed share the
    initialization and the data order, so differences are paired.

    Args:
        specs: optimizer spec strings (see :func:`gradgeo.factory.parse_spec`).
        seeds: the seeds; every spec runs with each.
        base: the shared configuration (its ``optimizer`` and ``seed`` are replaced per run).
        out_dir: the comparison folder.
        jobs: runs in parallel processes (each gets ``cores // jobs`` threads).
        log: receives progress lines and the final table.
        progress: tqdm bars for sequential runs; default only on a terminal.
        tensorboard: every run also writes TensorBoard events to its folder (see :func:`gradgeo.engine.train`).

    Under torchrun every run is trained by all ranks together (see :mod:`gradgeo.engine`); rank 0 alone
    logs and writes the summary, and every rank returns it. ``jobs`` must then be 1.

    Returns:
        The summary (also written to ``summary.json``).
    """
    if not specs:
        raise ValueError("compare needs at least one optimizer spec")
    if len(set(specs)) != len(specs):
        raise ValueError(f"duplicate optimizer specs in {list(specs)}")
    for spec in specs:
        parse_spec(spec)
    base.validate()
    ctx = ddp.setup(base.resolved_device())
    out = Path(out_dir)
    plan = {"specs": list(specs), "seeds": list(seeds), "config": dataclasses.asdict(base)}
    run_grid(out, specs, seeds, lambda spec, seed: _run_config(base, spec, seed), train, plan, jobs=jobs, log=log,
             progress=progress, context=ctx, tensorboard=tensorboard)
    summary = None
    if ctx.is_main:  # the rank that wrote the results summarizes them; every rank returns its summary
        summary = summarize(out, specs, seeds)
        log(format_table(summary))
    return ctx.from_main(summary)


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
    describe: Callable[[dict[str, Any]], str] | None = None,
    tensorboard: bool = False,
) -> None:
    """Train every ``(label, seed)`` run of a comparison folder that has no ``result.json`` yet.

    Writes ``plan.json`` first, refusing a folder whose plan has another ``"config"``; unfinished runs
    resume from their checkpoints. Shared by :func:`compare` and :func:`gradgeo.anytime.compare_anytime`.
    Under torchrun every rank calls this and all ranks train each run together (``train_fn`` joins them,
    see :mod:`gradgeo.engine`; ``jobs`` must be 1); rank 0 alone writes ``plan.json`` and logs.

    Args:
        out: the comparison folder; run ``(label, seed)`` lives in :func:`run_dir`.
        labels: what is compared (optimizer specs, training methods ...).
        seeds: the seeds; every label runs with each (distinct).
        make_config: ``(label, seed) -> config`` of that run.
        train_fn: ``train_fn(config, directory, resume=True, progress=..., log=None, [splits=...])``, a
            module-level function (parallel runs pickle it), e.g. :func:`gradgeo.engine.train`.
        plan: what was asked, with the shared configuration under ``"config"``.
        jobs: runs in parallel processes (each gets ``cores // jobs`` threads).
        log: receives one line per finished run.
        progress: tqdm bars for sequential runs; default only on a terminal.
        context: the data-parallel ranks (:func:`gradgeo.ddp.setup`); None: one process.
        load: ``config -> splits``, loads the data that sequential runs share (a task with its own data, e.g.
            :func:`gradgeo.segment.load_scene_splits`, passes its loader).
        describe: ``result -> text`` for the line logged after each run (default: the final test accuracy).
        tensorboard: pass ``tensorboard=True`` to every ``train_fn`` call (TensorBoard events in each run folder).
    """
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"compare needs distinct seeds, got {list(seeds)}")
    # the summary after the runs needs these: say so before the runs, not after
    check("harness", "a comparison's summary (statistics and plots)", ("scipy", "matplotlib"))
    context = context or ddp.Context()
    train_fn = functools.partial(train_fn, tensorboard=True) if tensorboard else train_fn
    if context.distributed and jobs > 1:
        raise ValueError("--jobs > 1 trains runs side by side in separate processes; under torchrun all ranks "
                         "train each run together: use --jobs 1")
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / "plan.json"
    if plan_path.exists():
        previous = json.loads(plan_path.read_text())
        base = type(make_config(labels[0], seeds[0]))(**plan["config"])
        changed = base.changed_fields(previous["config"])
        if changed:
            raise ValueError(f"{out} holds a comparison with another configuration (it differs in "
                             f"{', '.join(changed)}); pick a new --out folder")
    if context.is_main:
        _atomic_save(plan, plan_path)  # atomic: the other ranks may be reading it

    total = len(labels) * len(seeds)
    todo = [(label, seed) for seed in seeds for label in labels if not (run_dir(out, label, seed) / RESULT).exists()]
    todo = context.from_main(todo)  # every rank trains the same runs
    done = total - len(todo)
    if context.is_main:  # rank 0 alone logs (and reads the result.json files it writes)
        log(f"{len(labels)} x {len(seeds)} seeds: {done} runs finished, {len(todo)} to go -> {out}")
    if jobs > 1 and len(todo) > 1:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=spawn) as pool:
            futures = {pool.submit(_worker, train_fn, make_config(label, seed), str(run_dir(out, label, seed)),
                                   threads): (label, seed) for label, seed in todo}
            for future in concurrent.futures.as_completed(futures):
                label, seed = futures[future]
                future.result()
                done += 1
                log(f"[{done}/{total}] {label} seed {seed}: {_final(out, label, seed, describe)}")
    else:
        splits = load(make_config(*todo[0])) if todo else None
        for label, seed in todo:
            train_fn(make_config(label, seed), run_dir(out, label, seed), resume=True, progress=progress, log=None,
                     splits=splits)
            done += 1
            if context.is_main:
                log(f"[{done}/{total}] {label} seed {seed}: {_final(out, label, seed, describe)}")


def _final(out: Path, spec: str, seed: int, describe: Callable[[dict[str, Any]], str] | None = None) -> str:
    result = json.loads((run_dir(out, spec, seed) / RESULT).read_text())
    return describe(result) if describe else f"final test acc {result['final_test_acc'] * 100:.2f}%"


def load_histories(out: Path, spec: str, seeds: Sequence[int]) -> list[list[dict[str, Any]]]:
    """The per-epoch rows of each finished run of ``spec`` in the comparison folder ``out``."""
    return [json.loads((run_dir(out, spec, seed) / RESULT).read_text())["history"] for seed in seeds]


def summarize(out_dir: str | os.PathLike[str], specs: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """Per spec: final and best test accuracy (and final validation accuracy when there is a validation
    split) as mean ± 95% CI over seeds, the paired difference to the first spec, and the curves plot."""
    out = Path(out_dir)
    rows = []
    finals: dict[str, list[float]] = {}
    for spec in specs:
        histories = load_histories(out, spec, seeds)
        final = [h[-1]["test_acc"] for h in histories]
        best = [max(r["test_acc"] for r in h) for h in histories]
        finals[spec] = final
        row: dict[str, Any] = {"spec": spec, "n": len(final), "final_test_acc": dataclasses.asdict(mean_ci(final)),
                               "best_test_acc": dataclasses.asdict(mean_ci(best)), "final_per_seed": final}
        if histories[0][-1].get("val_acc") is not None:
            row["final_val_acc"] = dataclasses.asdict(mean_ci([h[-1]["val_acc"] for h in histories]))
        if spec != specs[0]:
            test = paired_test(final, finals[specs[0]])
            row["vs_baseline"] = {"difference": dataclasses.asdict(test.difference), "p_value": test.p_value}
        rows.append(row)
    summary = {"baseline": specs[0], "seeds": list(seeds), "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["spec", "n", "final_test_acc_mean", "final_test_acc_ci95", "best_test_acc_mean",
                         "best_test_acc_ci95", "diff_vs_baseline", "diff_ci95", "p_value"])
        for r in rows:
            vs = r.get("vs_baseline", {"difference": {"mean": 0.0, "half_width": 0.0}, "p_value": ""})
            writer.writerow([r["spec"], r["n"], r["final_test_acc"]["mean"], r["final_test_acc"]["half_width"],
                             r["best_test_acc"]["mean"], r["best_test_acc"]["half_width"],
                             vs["difference"]["mean"], vs["difference"]["half_width"], vs["p_value"]])
    plot_curves(out, specs, seeds, out / "curves.png")
    return summary


def _fmt(summary: dict[str, Any]) -> str:
    return Summary(**summary).format()


def format_table(summary: dict[str, Any]) -> str:
    """The summary as a fixed-width table (accuracies in %, ± the 95% CI half-width)."""
    has_val = any("final_val_acc" in r for r in summary["rows"])
    width = max(28, *(len(r["spec"]) for r in summary["rows"]))
    header = f"{'optimizer':<{width}} {'n':>2} {'final test acc':>15} {'best test acc':>15}"
    header += f" {'final val acc':>15}" if has_val else ""
    header += f" {'diff vs ' + summary['baseline']:>20} {'p':>7}"
    lines = [header, "-" * len(header)]
    for r in summary["rows"]:
        line = f"{r['spec']:<{width}} {r['n']:>2} {_fmt(r['final_test_acc']):>15} {_fmt(r['best_test_acc']):>15}"
        line += f" {_fmt(r['final_val_acc']):>15}" if has_val else ""
        if "vs_baseline" in r:
            d = r["vs_baseline"]
            line += f" {_fmt(d['difference']):>20} {d['p_value']:>7.3f}"
        else:
            line += f" {'(baseline)':>20} {'':>7}"
        lines.append(line)
    return "\n".join(lines)


def plot_curves(out: Path, specs: Sequence[str], seeds: Sequence[int], path: Path,
                metrics: Sequence[Metric] = (TEST_ACC,), loss_label: str = "training loss") -> None:
    """Each metric (scaled as it is shown) and the training loss (``train_loss``, called ``loss_label``) per
    epoch: mean over seeds with a 95% CI band, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = [*metrics, Metric("train_loss", loss_label, higher_is_better=False, scale=1.0)]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(11.0, 4.6 * len(panels)), 4))
    colors = plt.get_cmap("tab10" if len(specs) <= 10 else "tab20").colors
    late: dict[str, list[float]] = {m.key: [] for m in panels}  # later epochs set a percentage's y-range
    for index, spec in enumerate(specs):
        histories = load_histories(out, spec, seeds)
        epochs = [r["epoch"] for r in histories[0]]
        style = {"color": colors[index % len(colors)], "linestyle": ("-", "--", ":")[index // len(colors) % 3]}
        for ax, metric in zip(axes, panels):
            stats = [mean_ci([h[i][metric.key] * metric.scale for h in histories]) for i in range(len(epochs))]
            ax.plot(epochs, [s.mean for s in stats], label=spec if ax is axes[0] else None, **style)
            if len(seeds) > 1:
                ax.fill_between(epochs, [s.mean - s.half_width for s in stats], [s.mean + s.half_width for s in stats],
                                alpha=0.2, color=style["color"])
            late[metric.key] += [s.mean for s in stats[len(stats) // 3:]]
    seeds_label = "1 seed" if len(seeds) == 1 else f"{len(seeds)} seeds, mean ± 95% CI"
    for ax, metric in zip(axes, panels):
        ax.set(xlabel="epoch", ylabel=metric.label,
               title=f"{metric.label} ({seeds_label})" if ax is axes[0] else metric.label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric.key == "train_loss":
            ax.set_yscale("log")
        elif metric.scale == 100.0:  # a percentage: early epochs are noise, zoom on the rest
            ax.set_ylim(bottom=max(0.0, min(late[metric.key]) - 2), top=min(100.0, max(late[metric.key]) + 1))
    ncol = min(len(specs), 4 if len(specs) > 8 else 3)
    fig.legend(loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, min(0.6, 0.045 * -(-len(specs) // ncol) + 0.02), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
