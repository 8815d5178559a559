"""Compare multi-exit training methods over several seeds: per-exit accuracy, FLOPs and early exit.

Layout of a comparison folder (the same as :mod:`gradgeo.compare`, with methods in place of optimizers)::

    OUT/plan.json                         what was asked (methods, seeds, the shared configuration)
    OUT/runs/<method>/seed-<k>/...        one run each (metrics.jsonl, checkpoint.pt, result.json)
    OUT/summary.json, OUT/summary.csv     per-exit and early-exit accuracy, mean ± 95% CI, paired tests
    OUT/accuracy_vs_flops.png             test accuracy against FLOPs per image: each exit, and early exit
    OUT/curves.png                        the last exit's test accuracy and training loss per epoch

Running the same command again skips finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gradgeo import ddp
from gradgeo.anytime.training import AnytimeConfig, parse_strategy, train_anytime
from gradgeo.compare import plot_curves, run_dir, run_grid
from gradgeo.engine import RESULT
from gradgeo.stats import Summary, mean_ci, paired_test

__all__ = ["compare_anytime", "format_anytime_table", "summarize_anytime"]


def _run_config(base: AnytimeConfig, method: str, seed: int) -> AnytimeConfig:
    return dataclasses.replace(base, strategy=method, seed=seed)


def compare_anytime(
    methods: Sequence[str],
    seeds: Sequence[int],
    base: AnytimeConfig,
    out_dir: str | os.PathLike[str],
    *,
    jobs: int = 1,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
    tensorboard: bool = False,
) -> dict[str, Any]:
    """Train every multi-exit method with every seed (skipping finished runs), then summarize.

    The first method is the baseline of the paired comparisons. Runs with the same seed share the
    initialization and the data order, so per-exit differences are paired.

    Args:
        methods: strategy specs (``"sum"``, ``"sdn"``, ``"adaloss"``, ``"pcgrad"``, ``"osgd"``,
            ``"osgd:granularity=tensor"`` ...), see :func:`gradgeo.anytime.parse_strategy`.
        seeds: the seeds; every method runs with each.
        base: the shared configuration (its ``strategy`` and ``seed`` are replaced per run); its optimizer
            spec applies to every method.
        out_dir: the comparison folder.
        jobs: runs in parallel processes.
        log: receives progress lines and the final tables.
        progress: tqdm bars for sequential runs; default only on a terminal.
        tensorboard: every run also writes TensorBoard events to its folder (see :func:`gradgeo.engine.train`).

    Under torchrun every run is trained by all ranks together, as in :func:`gradgeo.compare.compare`.

    Returns:
        The summary (also written to ``summary.json``), see :func:`summarize_anytime`.

    Example:
        >>> base = AnytimeConfig(model="nested_depth", epochs=10, val_size=5000)
        >>> compare_anytime(["sum", "sdn", "osgd"], [0, 1, 2], base, "runs/anytime")  # doctest: +SKIP
    """
    if not methods:
        raise ValueError("compare_anytime needs at least one method")
    if len(set(methods)) != len(methods):
        raise ValueError(f"duplicate methods in {list(methods)}")
    for method in methods:
        parse_strategy(method)
    base.validate()
    ctx = ddp.setup(base.resolved_device())
    out = Path(out_dir)
    plan = {"methods": list(methods), "seeds": list(seeds), "config": dataclasses.asdict(base)}
    run_grid(out, methods, seeds, lambda method, seed: _run_config(base, method, seed), train_anytime, plan,
             jobs=jobs, log=log, progress=progress, context=ctx, tensorboard=tensorboard)
    summary = None
    if ctx.is_main:  # the rank that wrote the results summarizes them; every rank returns its summary
        summary = summarize_anytime(out, methods, seeds)
        log(format_anytime_table(summary))
    return ctx.from_main(summary)


def summarize_anytime(out_dir: str | os.PathLike[str], methods: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """Per method: each exit's final test accuracy and, where the runs have a validation split, the early-exit
    test accuracy at each budget, as mean ± 95% CI over seeds, with paired tests against the first method.
    Writes ``summary.json``, ``summary.csv``, ``accuracy_vs_flops.png`` and ``curves.png``.

    Returns:
        ``{"baseline", "seeds", "exit_flops", "rows"}``; each row has ``method``, ``n``, ``exit_test_acc`` (one
        ``{mean, half_width, n}`` per exit), ``per_seed`` and, except for the baseline, ``vs_baseline`` (per
        exit: the paired difference and its p-value); with early exit also ``early_exit``, one entry per budget:
        ``budget``, ``test_acc`` (mean ± CI) and ``test_flops`` (mean over seeds).
    """
    out = Path(out_dir)
    results = {m: [json.loads((run_dir(out, m, seed) / RESULT).read_text()) for seed in seeds] for m in methods}
    flops = results[methods[0]][0]["exit_flops"]
    finals = {m: [[r["history"][-1]["test_exit_acc"][k] for r in results[m]] for k in range(len(flops))]
              for m in methods}
    rows = []
    for method in methods:
        row: dict[str, Any] = {"method": method, "n": len(seeds),
                               "exit_test_acc": [dataclasses.asdict(mean_ci(acc)) for acc in finals[method]],
                               "per_seed": finals[method]}
        if method != methods[0]:
            tests = [paired_test(a, b) for a, b in zip(finals[method], finals[methods[0]])]
            row["vs_baseline"] = [{"difference": dataclasses.asdict(t.difference), "p_value": t.p_value} for t in tests]
        if all("early_exit" in r for r in results[method]):
            budgets = zip(*(r["early_exit"] for r in results[method]))  # per budget, one entry per seed
            row["early_exit"] = [{"budget": runs[0]["budget"],
                                  "test_acc": dataclasses.asdict(mean_ci([e["test_acc"] for e in runs])),
                                  "test_flops": sum(e["test_flops"] for e in runs) / len(runs)} for runs in budgets]
        rows.append(row)
    summary = {"baseline": methods[0], "seeds": list(seeds), "exit_flops": flops, "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _write_csv(out / "summary.csv", summary)
    plot_accuracy_vs_flops(summary, out / "accuracy_vs_flops.png")
    plot_curves(out, methods, seeds, out / "curves.png")
    return summary


def _write_csv(path: Path, summary: dict[str, Any]) -> None:
    """One line per method and exit, then per method and early-exit budget."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "kind", "index", "flops", "test_acc_mean", "test_acc_ci95", "diff_vs_baseline",
                         "diff_ci95", "p_value"])
        for r in summary["rows"]:
            for k, acc in enumerate(r["exit_test_acc"]):
                vs = r["vs_baseline"][k] if "vs_baseline" in r else None
                writer.writerow([r["method"], "exit", k + 1, summary["exit_flops"][k], acc["mean"], acc["half_width"],
                                 vs["difference"]["mean"] if vs else "", vs["difference"]["half_width"] if vs else "",
                                 vs["p_value"] if vs else ""])
            for i, e in enumerate(r.get("early_exit", [])):
                writer.writerow([r["method"], "early_exit", i + 1, e["test_flops"], e["test_acc"]["mean"],
                                 e["test_acc"]["half_width"], "", "", ""])


def _fmt(stats: dict[str, Any]) -> str:
    return Summary(**stats).format()


def format_anytime_table(summary: dict[str, Any]) -> str:
    """The summary as fixed-width tables: per-exit accuracy (with paired differences), then early exit."""
    rows, flops = summary["rows"], summary["exit_flops"]
    width = max(16, *(len(r["method"]) + 4 for r in rows))
    n = rows[0]["n"]
    lines = [f"test accuracy (%) per exit, mean ± 95% CI over {n} seed(s); paired difference to {summary['baseline']}",
             f"{'method':<{width}}" + "".join(f"{'exit ' + str(k + 1):>22}" for k in range(len(flops))),
             f"{'MFLOPs per image':<{width}}" + "".join(f"{f / 1e6:>22.2f}" for f in flops)]
    lines.append("-" * len(lines[1]))
    for r in rows:
        lines.append(f"{r['method']:<{width}}" + "".join(f"{_fmt(acc):>22}" for acc in r["exit_test_acc"]))
        if "vs_baseline" in r:
            differences = (f"{_fmt(v['difference'])} p={v['p_value']:.2f}" for v in r["vs_baseline"])
            lines.append(f"{'  difference':<{width}}" + "".join(f"{d:>22}" for d in differences))
    early = [r for r in rows if "early_exit" in r]
    if early:
        budgets = [e["budget"] for e in early[0]["early_exit"]]
        lines += ["", "early exit, thresholds chosen on validation: test accuracy (%) at average MFLOPs <= budget",
                  f"{'budget (MFLOPs)':<{width}}" + "".join(f"{b / 1e6:>15.2f}" for b in budgets)]
        lines.append("-" * len(lines[-1]))
        for r in early:
            lines.append(f"{r['method']:<{width}}" + "".join(f"{_fmt(e['test_acc']):>15}" for e in r["early_exit"]))
    return "\n".join(lines)


def plot_accuracy_vs_flops(summary: dict[str, Any], path: Path) -> None:
    """Test accuracy against FLOPs per image: each exit (markers, 95% CI bars) and early exit (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    mflops = [f / 1e6 for f in summary["exit_flops"]]
    for r in summary["rows"]:
        means = [a["mean"] * 100 for a in r["exit_test_acc"]]
        errors = [a["half_width"] * 100 if a["n"] > 1 else 0.0 for a in r["exit_test_acc"]]
        line = ax.errorbar(mflops, means, yerr=errors, marker="o", capsize=3, label=f"{r['method']} (exits)")
        if "early_exit" in r:
            ax.plot([e["test_flops"] / 1e6 for e in r["early_exit"]],
                    [e["test_acc"]["mean"] * 100 for e in r["early_exit"]], linestyle="--",
                    color=line[0].get_color(), label=f"{r['method']} (early exit)")
    ax.set(xlabel="MFLOPs per image", ylabel="test accuracy (%)",
           title=f"accuracy vs compute, mean over {len(summary['seeds'])} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
