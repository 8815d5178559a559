"""The layouts of a comparison's summary: ``summary.json``, ``summary.csv`` and the printed table.

One summary path (:func:`gradgeo.experiments.summarize`) loads the runs of a comparison and hands them to the
layout its task names (:attr:`gradgeo.tasks.Task.summary`); every layout reports each label's final values as
mean ± 95% CI over seeds (:func:`~gradgeo.experiments.stats.mean_ci`) and the paired test against the first
label (:func:`~gradgeo.experiments.stats.paired_test`), read from the task's :class:`~gradgeo.tasks.Metric`:

* ``"metrics"``: every metric, with a verdict per paired test read with the metric's direction. The general
  layout, and the one a new task takes (segment, gan).
* ``"classify"``: the headline metric's final and best value (and the final validation accuracy), one paired
  test; the layout of the committed classification results, which scripts read (``final_per_seed``,
  ``final_val_acc``).
* ``"exits"``: a per-exit metric, one paired test per exit, plus the FLOPs per exit and the early-exit rows of
  the runs' ``result.json``; the layout of the committed anytime results.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gradgeo.experiments.stats import Summary, holm, mean_ci, minimum_detectable_effect, paired_test
from gradgeo.tasks.base import Metric, Task

__all__ = ["LAYOUTS", "Layout"]

#: a label's runs: the ``result.json`` of each seed, in seed order
Results = Mapping[str, Sequence[dict[str, Any]]]


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one kind of summary is built and shown.

    Attributes:
        build: ``build(task, labels, seeds, results) -> summary`` (what ``summary.json`` holds).
        csv_rows: ``summary -> rows`` of ``summary.csv``, the header first.
        table: ``summary -> text``, the fixed-width table a comparison prints.
    """

    build: Callable[[Task, Sequence[str], Sequence[int], Results], dict[str, Any]]
    csv_rows: Callable[[dict[str, Any]], list[list[Any]]]
    table: Callable[[dict[str, Any]], str]


def _stats(values: Sequence[float]) -> dict[str, Any]:
    return dataclasses.asdict(mean_ci(values))


def _paired(values: Sequence[float], baseline: Sequence[float]) -> dict[str, Any]:
    """The paired test, and the minimum detectable effect: the true difference that this many pairs with this
    spread of differences would detect with 80% power at the 5% level (``nan`` with one pair)."""
    test = paired_test(values, baseline)
    differences = [a - b for a, b in zip(values, baseline)]
    n = len(differences)
    sd = math.sqrt(sum((d - test.difference.mean) ** 2 for d in differences) / (n - 1)) if n > 1 else math.nan
    return {"difference": dataclasses.asdict(test.difference), "p_value": test.p_value,
            "mde": minimum_detectable_effect(sd, n)}


def _fmt(stats: dict[str, Any], scale: float = 100.0, digits: int = 2) -> str:
    return Summary(**stats).format(scale, digits)


def _finals(results: Results, label: str, key: str) -> list[Any]:
    return [result["history"][-1][key] for result in results[label]]


# ------------------------------------------------------------------------------------------------ metrics


def _verdict(metric: Metric, difference: float, p_value: float) -> str:
    if not p_value < 0.05:  # nan (one seed) included
        return "no significant difference"
    return "better" if (difference > 0) == metric.higher_is_better else "worse"


def _build_metrics(task: Task, labels: Sequence[str], seeds: Sequence[int], results: Results) -> dict[str, Any]:
    """``{"task", "baseline", "seeds", "metrics", "rows"}``; each row has the label, ``n`` and per metric key
    ``{mean, half_width, n}``, ``per_seed[key]`` and, except for the baseline, ``vs_baseline[key]`` with the
    ``difference`` (label - baseline, mean ± CI), ``p_value`` and ``verdict``."""
    finals = {label: {m.key: _finals(results, label, m.key) for m in task.metrics} for label in labels}
    rows = []
    for label in labels:
        row: dict[str, Any] = {task.label_name: label, "n": len(seeds), "per_seed": finals[label]}
        row.update({m.key: _stats(finals[label][m.key]) for m in task.metrics})
        if label != labels[0]:
            row["vs_baseline"] = {}
            for m in task.metrics:
                paired = _paired(finals[label][m.key], finals[labels[0]][m.key])
                paired["verdict"] = _verdict(m, paired["difference"]["mean"], paired["p_value"])
                row["vs_baseline"][m.key] = paired
        rows.append(row)
    return {"task": task.name, "baseline": labels[0], "seeds": list(seeds),
            "metrics": [m.record() for m in task.metrics], "rows": rows}


def _label_key(summary: dict[str, Any]) -> str:
    return "method" if "method" in summary["rows"][0] else "spec"


def _csv_metrics(summary: dict[str, Any]) -> list[list[Any]]:
    """One line per label and metric (raw values, not scaled)."""
    key = _label_key(summary)
    lines: list[list[Any]] = [[key, "metric", "higher_is_better", "n", "mean", "ci95", "diff_vs_baseline",
                               "diff_ci95", "p_value", "verdict"]]
    for r in summary["rows"]:
        for m in summary["metrics"]:
            stats, vs = r[m["key"]], r.get("vs_baseline", {}).get(m["key"])
            lines.append([r[key], m["key"], m["higher_is_better"], r["n"], stats["mean"], stats["half_width"],
                          vs["difference"]["mean"] if vs else "", vs["difference"]["half_width"] if vs else "",
                          vs["p_value"] if vs else "", vs["verdict"] if vs else "(baseline)"])
    return lines


def _table_metrics(summary: dict[str, Any]) -> str:
    """Each metric (mean ± 95% CI, arrows give its direction), then per metric the paired difference to the
    baseline, its p-value and the verdict."""
    metrics = [Metric(**m) for m in summary["metrics"]]
    rows, key = summary["rows"], _label_key(summary)
    name = "optimizer" if key == "spec" else key
    width = max(24, *(len(r[key]) for r in rows))
    arrow = {True: "(higher better)", False: "(lower better)"}
    columns = [max(20, len(m.label) + 2) for m in metrics]
    lines = [f"{summary['task']}: final epoch, mean ± 95% CI over {rows[0]['n']} seed(s); paired difference = "
             f"{key} - {summary['baseline']}"]
    header = f"{name:<{width}} {'n':>2}" + "".join(f" {m.label:>{c}}" for m, c in zip(metrics, columns))
    lines += [header, f"{'':<{width}}   " + "".join(f" {arrow[m.higher_is_better]:>{c}}"
                                                     for m, c in zip(metrics, columns))]
    lines.append("-" * len(header))
    for r in rows:
        lines.append(f"{r[key]:<{width}} {r['n']:>2}" + "".join(f" {_fmt(r[m.key], m.scale, m.digits):>{c}}"
                                                                for m, c in zip(metrics, columns)))
    for m in metrics:
        lines += ["", f"{m.label}: difference to {summary['baseline']}",
                  f"{name:<{width}} {'difference':>20} {'p':>7}  verdict"]
        lines.append("-" * len(lines[-1]))
        for r in rows:
            if "vs_baseline" not in r:
                lines.append(f"{r[key]:<{width}} {'(baseline)':>20}")
                continue
            d = r["vs_baseline"][m.key]
            lines.append(f"{r[key]:<{width}} {_fmt(d['difference'], m.scale, m.digits):>20} {d['p_value']:>7.3f}  "
                         f"{d['verdict']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- classify


def _to_target(history: Sequence[dict[str, Any]], target: float) -> tuple[int, float] | None:
    """The first epoch whose validation accuracy reaches ``target``, and the training time up to its end."""
    for index, row in enumerate(history):
        if row["val_acc"] >= target:
            return index + 1, sum(r["time"] for r in history[:index + 1])
    return None


def _time_to_target(histories: Sequence[Sequence[dict[str, Any]]], target: float) -> dict[str, Any]:
    """Epochs and seconds to ``target`` per seed (None where a seed never reaches it), and their means over
    the seeds that do."""
    reached = [_to_target(h, target) for h in histories]
    hits = [r for r in reached if r is not None]
    return {"target": target, "reached": len(hits), "epochs_per_seed": [r[0] if r else None for r in reached],
            "epochs": sum(r[0] for r in hits) / len(hits) if hits else None,
            "seconds": sum(r[1] for r in hits) / len(hits) if hits else None}


def _build_classify(task: Task, labels: Sequence[str], seeds: Sequence[int], results: Results) -> dict[str, Any]:
    """``{"baseline", "seeds", "rows"}``; per label the headline metric's final value and (with a validation
    split) the final and best validation accuracy as mean ± 95% CI (an epoch is never picked by its test
    accuracy), ``final_per_seed`` and, except for the baseline, the paired difference of the final values to
    the baseline with its minimum detectable effect. With a validation split, ``time_to_target``: the epochs
    and training seconds each label needs to reach the baseline's mean final validation accuracy."""
    key = task.metrics[0].key
    rows: list[dict[str, Any]] = []
    baseline_histories = [result["history"] for result in results[labels[0]]]
    has_val = baseline_histories[0][-1].get("val_acc") is not None
    target = sum(h[-1]["val_acc"] for h in baseline_histories) / len(baseline_histories) if has_val else None
    for label in labels:
        histories = [result["history"] for result in results[label]]
        final = [h[-1][key] for h in histories]
        row: dict[str, Any] = {task.label_name: label, "n": len(final), f"final_{key}": _stats(final),
                               "final_per_seed": final}
        if target is not None:
            row["final_val_acc"] = _stats([h[-1]["val_acc"] for h in histories])
            row["best_val_acc"] = _stats([max(r["val_acc"] for r in h) for h in histories])
            if all("time" in r for h in histories for r in h):
                row["time_to_target"] = _time_to_target(histories, target)
        if histories[0][-1].get("train_acc") is not None:
            row["final_train_acc"] = _stats([h[-1]["train_acc"] for h in histories])
        if label != labels[0]:
            row["vs_baseline"] = _paired(final, rows[0]["final_per_seed"])
        rows.append(row)
    # several specs against one baseline: Holm's adjustment of their p-values (family-wise error rate)
    for row, p_holm in zip(rows[1:], holm([r["vs_baseline"]["p_value"] for r in rows[1:]])):
        row["vs_baseline"]["p_holm"] = p_holm
    return {"baseline": labels[0], "seeds": list(seeds), "rows": rows}


def _csv_classify(summary: dict[str, Any]) -> list[list[Any]]:
    lines: list[list[Any]] = [["spec", "n", "final_test_acc_mean", "final_test_acc_ci95", "best_val_acc_mean",
                               "best_val_acc_ci95", "diff_vs_baseline", "diff_ci95", "p_value", "p_holm", "mde",
                               "epochs_to_target", "seconds_to_target", "seeds_reaching_target"]]
    for r in summary["rows"]:
        vs = r.get("vs_baseline", {"difference": {"mean": 0.0, "half_width": 0.0}, "p_value": ""})
        best = r.get("best_val_acc", {"mean": "", "half_width": ""})
        to_target = r.get("time_to_target", {"epochs": "", "seconds": "", "reached": ""})
        lines.append([r["spec"], r["n"], r["final_test_acc"]["mean"], r["final_test_acc"]["half_width"],
                      best["mean"], best["half_width"], vs["difference"]["mean"], vs["difference"]["half_width"],
                      vs["p_value"], vs.get("p_holm", ""), vs.get("mde", ""),
                      *("" if v is None else v for v in (to_target["epochs"], to_target["seconds"],
                                                         to_target["reached"]))])
    return lines


def _table_classify(summary: dict[str, Any]) -> str:
    """Accuracies in %, ± the 95% CI half-width, and the paired difference to the baseline."""
    has_val = any("final_val_acc" in r for r in summary["rows"])
    has_best = any("best_val_acc" in r for r in summary["rows"])  # older summaries: best_test_acc, not shown
    width = max(28, *(len(r["spec"]) for r in summary["rows"]))
    header = f"{'optimizer':<{width}} {'n':>2} {'final test acc':>15}"
    header += f" {'best val acc':>15}" if has_best else ""
    header += f" {'final val acc':>15}" if has_val else ""
    header += f" {'diff vs ' + summary['baseline']:>20} {'p':>7}"
    has_holm = sum("vs_baseline" in r for r in summary["rows"]) > 1  # older summaries have no p_holm: shown as -
    header += f" {'p Holm':>7}" if has_holm else ""
    has_mde = any("mde" in r.get("vs_baseline", {}) for r in summary["rows"])
    header += f" {'MDE':>6}" if has_mde else ""
    lines = [header, "-" * len(header)]
    for r in summary["rows"]:
        line = f"{r['spec']:<{width}} {r['n']:>2} {_fmt(r['final_test_acc']):>15}"
        line += f" {_fmt(r['best_val_acc']):>15}" if has_best else ""
        line += f" {_fmt(r['final_val_acc']):>15}" if has_val else ""
        if "vs_baseline" in r:
            d = r["vs_baseline"]
            line += f" {_fmt(d['difference']):>20} {d['p_value']:>7.3f}"
            line += f" {d.get('p_holm', math.nan):>7.3f}" if has_holm else ""
            line += f" {d.get('mde', math.nan) * 100:>6.2f}" if has_mde else ""
        else:
            line += f" {'(baseline)':>20} {'':>7}" + (f" {'':>7}" if has_holm else "")
            line += f" {'':>6}" if has_mde else ""
        lines.append(line)
    if has_mde:
        lines.append("MDE: the difference (points) these seeds would detect with 80% power at p < 0.05, from the "
                     "measured spread of the paired differences")
    timed = [r for r in summary["rows"] if "time_to_target" in r]
    if timed:
        target = timed[0]["time_to_target"]["target"]
        parts = [f"{r['spec']} " + (f"{t['epochs']:.1f} epochs, {t['seconds'] / 60:.1f} min" if t["epochs"] is not None
                                    else "never") + f" ({t['reached']}/{r['n']} seeds)"
                 for r in timed for t in (r["time_to_target"],)]
        lines.append(f"time to the baseline's final val acc ({target * 100:.2f}%): " + "; ".join(parts))
    trained = [r for r in summary["rows"] if "final_train_acc" in r]  # how far each spec fits its training set
    if trained:
        lines.append("final train acc: " + ", ".join(f"{r['spec']} {_fmt(r['final_train_acc'])}" for r in trained))
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- exits


def _build_exits(task: Task, labels: Sequence[str], seeds: Sequence[int], results: Results) -> dict[str, Any]:
    """``{"baseline", "seeds", "exit_flops", "rows"}``; each row has the label, ``n``, ``exit_test_acc`` (one
    ``{mean, half_width, n}`` per exit), ``per_seed`` and, except for the baseline, ``vs_baseline`` (per exit:
    the paired difference and its p-value); with early exit also ``early_exit``, one entry per budget:
    ``budget``, ``test_acc`` (mean ± CI) and ``test_flops`` (mean over seeds)."""
    key = task.metrics[0].key
    flops = results[labels[0]][0]["exit_flops"]
    finals = {label: [list(seed_values) for seed_values in zip(*_finals(results, label, key))] for label in labels}
    rows = []
    for label in labels:
        row: dict[str, Any] = {task.label_name: label, "n": len(seeds),
                               "exit_test_acc": [_stats(acc) for acc in finals[label]], "per_seed": finals[label]}
        if label != labels[0]:
            row["vs_baseline"] = [_paired(a, b) for a, b in zip(finals[label], finals[labels[0]])]
        if all("early_exit" in r for r in results[label]):
            budgets = zip(*(r["early_exit"] for r in results[label]))  # per budget, one entry per seed
            row["early_exit"] = [{"budget": runs[0]["budget"], "test_acc": _stats([e["test_acc"] for e in runs]),
                                  "test_flops": sum(e["test_flops"] for e in runs) / len(runs)} for runs in budgets]
        rows.append(row)
    return {"baseline": labels[0], "seeds": list(seeds), "exit_flops": flops, "rows": rows}


def _csv_exits(summary: dict[str, Any]) -> list[list[Any]]:
    """One line per label and exit, then per label and early-exit budget."""
    lines: list[list[Any]] = [["method", "kind", "index", "flops", "test_acc_mean", "test_acc_ci95",
                               "diff_vs_baseline", "diff_ci95", "p_value"]]
    for r in summary["rows"]:
        for k, acc in enumerate(r["exit_test_acc"]):
            vs = r["vs_baseline"][k] if "vs_baseline" in r else None
            lines.append([r["method"], "exit", k + 1, summary["exit_flops"][k], acc["mean"], acc["half_width"],
                          vs["difference"]["mean"] if vs else "", vs["difference"]["half_width"] if vs else "",
                          vs["p_value"] if vs else ""])
        for i, e in enumerate(r.get("early_exit", [])):
            lines.append([r["method"], "early_exit", i + 1, e["test_flops"], e["test_acc"]["mean"],
                          e["test_acc"]["half_width"], "", "", ""])
    return lines


def _table_exits(summary: dict[str, Any]) -> str:
    """Per-exit accuracy (with paired differences), then early exit."""
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


LAYOUTS: dict[str, Layout] = {
    "metrics": Layout(_build_metrics, _csv_metrics, _table_metrics),
    "classify": Layout(_build_classify, _csv_classify, _table_classify),
    "exits": Layout(_build_exits, _csv_exits, _table_exits),
}
