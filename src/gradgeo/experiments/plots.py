"""The plots of the experiments: a comparison's curves (every metric and the training loss per epoch, one panel
each) and a tuning study's history and learning rate x strength plane.

What a panel draws depends on the number of seeds, and its legend says which: one seed, its line; two seeds,
their mean and each seed's own line (a 95% CI from two values is 12.7 standard errors wide: it would cover the
panel and say nothing); from :data:`BAND_SEEDS` seeds on, the mean and the band of its 95% confidence interval
(Student t). Every axis fits everything drawn on it, the first epochs included; the training loss is on a log
axis when it spans at least :data:`LOG_SPAN` (a factor), with labelled ticks as plain numbers (:func:`log_ticks`);
a linear axis is ticked with the values themselves, never an offset.
A run of one epoch is a point, not a line: its values are markers and its confidence interval an error bar, the
specs side by side around the epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradgeo.experiments.grid import load_histories
from gradgeo.experiments.stats import mean_ci
from gradgeo.tasks.base import Metric
from gradgeo.training.run_folder import save_figure

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

__all__ = ["BAND_SEEDS", "LOG_SPAN", "curves_figure", "history_figure", "log_ticks", "lr_strength_figure",
           "plot_curves", "plot_tuning"]

#: the fewest seeds whose mean gets a 95% CI band (with fewer, each seed's line is drawn)
BAND_SEEDS = 3
#: the training loss goes on a log axis when its largest value drawn is at least this many times its smallest
LOG_SPAN = 10.0


def log_ticks(axis: Axis) -> None:
    """Labelled ticks on a log axis, as many as stay readable: at 1, 2 and 5 times each power of 10 over up to
    1.5 decades, at 1 and 3 times over up to 3, at the powers alone beyond; written as plain numbers (0.2, 0.5,
    1, 2), with unlabelled minor ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    low, high = sorted(axis.get_view_interval())
    decades = math.log10(high / low)
    subs = (1.0, 2.0, 5.0) if decades <= 1.5 else (1.0, 3.0) if decades <= 3 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def curves_figure(histories: Mapping[str, Sequence[Sequence[dict[str, Any]]]], metrics: Sequence[Metric],
                  loss_label: str = "training loss") -> Figure:
    """One panel per metric (scaled as it is shown) and one for the training loss (``train_loss``, called
    ``loss_label``), by epoch; ``histories[label]`` holds each seed's rows (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    panels = [*metrics, Metric("train_loss", loss_label, higher_is_better=False, scale=1.0)]
    seeds = len(next(iter(histories.values())))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(11.0, 4.6 * len(panels)), 4))
    cmap = plt.get_cmap("tab10" if len(histories) <= 10 else "tab20")
    colors = [cmap(i) for i in range(cmap.N)]  # the qualitative map's own colors (integer lookups)
    drawn: dict[str, list[float]] = {m.key: [] for m in panels}  # every y value drawn, per panel
    all_epochs = {r["epoch"] for runs in histories.values() for r in runs[0]}
    point = len(all_epochs) == 1  # one epoch: a line of one point draws nothing, a marker does
    for index, (label, runs) in enumerate(histories.items()):
        epochs = [r["epoch"] for r in runs[0]]
        if point:  # side by side around the epoch, so that the error bars do not cover each other
            epochs = [e + 0.6 * (index + 0.5) / len(histories) - 0.3 for e in epochs]
        style = {"color": colors[index % len(colors)], "linestyle": ("-", "--", ":")[index // len(colors) % 3]}
        for ax, metric in zip(axes, panels):
            values = [[run[i][metric.key] * metric.scale for run in runs] for i in range(len(epochs))]
            means = [sum(v) / len(v) for v in values]
            ax.plot(epochs, means, label=label if ax is axes[0] else None, linewidth=1.8,
                    marker="o" if point else None, markersize=6, **style)
            drawn[metric.key] += means
            if seeds >= BAND_SEEDS:
                widths = [mean_ci(v).half_width for v in values]
                # the band stays within what the metric can be: a percentage in [0, 100], a loss >= 0
                floor = 0.0 if min(min(v) for v in values) >= 0 else -math.inf
                ceiling = 100.0 if metric.scale == 100.0 else math.inf
                low = [max(floor, m - w) for m, w in zip(means, widths)]
                high = [min(ceiling, m + w) for m, w in zip(means, widths)]
                if point:
                    ax.errorbar(epochs, means, yerr=[[m - lo for m, lo in zip(means, low)],
                                                     [hi - m for m, hi in zip(means, high)]],
                                fmt="none", ecolor=style["color"], elinewidth=6, alpha=0.3)
                else:
                    ax.fill_between(epochs, low, high, alpha=0.2, color=style["color"], linewidth=0)
                drawn[metric.key] += low + high
            elif seeds > 1:
                for seed in range(seeds):
                    line = [v[seed] for v in values]
                    ax.plot(epochs, line, linewidth=0.7, alpha=0.45, color=style["color"],
                            marker="o" if point else None, markersize=3)
                    drawn[metric.key] += line
    for ax, metric in zip(axes, panels):
        ax.set(xlabel="epoch", ylabel=metric.label, title=metric.label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if point:  # else matplotlib widens the single epoch by 5% each side and ticks it in hundredths
            epoch = next(iter(all_epochs))
            ax.set_xlim(epoch - 0.5, epoch + 0.5)
            ax.set_xticks([epoch])
        bottom, top = min(drawn[metric.key]), max(drawn[metric.key])
        if metric.key == "train_loss" and bottom > 0 and top >= LOG_SPAN * bottom:
            ax.set_yscale("log")
            ax.set_ylim(bottom / 1.15, top * 1.15)
            log_ticks(ax.yaxis)
        else:
            margin = 0.05 * (top - bottom) or 0.05 * abs(top) or 0.05
            ax.set_ylim(bottom - margin, top + margin)
            # the values themselves on the ticks: a narrow range (a GAN's classifier score, 1.00013 .. 1.00019)
            # was ticked 3 .. 9 under an offset "1e-5+1.0001"
            ax.ticklabel_format(axis="y", useOffset=False)
    grey = "0.45"
    key: list[Artist]
    if point:
        def marker(label: str, size: float = 6, alpha: float = 1.0) -> Line2D:
            return Line2D([], [], color=grey, marker="o", markersize=size, linestyle="none", alpha=alpha,
                          label=label)

        if seeds >= BAND_SEEDS:
            key = [marker(f"marker: mean over {seeds} seeds"),
                   Line2D([], [], color=grey, linewidth=6, alpha=0.3,
                          label=f"bar: 95% CI of the mean over {seeds} seeds (Student t)")]
        elif seeds == 2:
            key = [marker("large marker: mean of the 2 seeds"),
                   marker(f"small markers: each seed (a CI bar needs {BAND_SEEDS} seeds)", size=3, alpha=0.6)]
        else:
            key = [marker("each marker: 1 seed")]
    elif seeds >= BAND_SEEDS:
        key = [Line2D([], [], color=grey, linewidth=1.8, label=f"line: mean over {seeds} seeds"),
               Patch(color=grey, alpha=0.3, label=f"band: 95% CI of the mean over {seeds} seeds (Student t)")]
    elif seeds == 2:
        key = [Line2D([], [], color=grey, linewidth=1.8, label="thick line: mean of the 2 seeds"),
               Line2D([], [], color=grey, linewidth=0.7, alpha=0.6,
                      label=f"thin lines: each seed (a CI band needs {BAND_SEEDS} seeds)")]
    else:
        key = [Line2D([], [], color=grey, linewidth=1.8, label="each line: 1 seed")]
    handles = [*axes[0].get_legend_handles_labels()[0], *key]
    ncol = min(len(handles), 4 if len(handles) > 8 else 3)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, min(0.6, 0.045 * -(-len(handles) // ncol) + 0.02), 1, 1))
    return fig


def plot_curves(out: Path, specs: Sequence[str], seeds: Sequence[int], path: Path,
                metrics: Sequence[Metric], loss_label: str = "training loss") -> None:
    """:func:`curves_figure` of the finished runs of a comparison folder, written to ``path``."""
    fig = curves_figure({spec: load_histories(out, spec, seeds) for spec in specs}, metrics, loss_label)
    save_figure(fig, path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)


def plot_tuning(summary: dict[str, Any], out: Path) -> None:
    """``history.png`` (:func:`history_figure`) and, when a spec searches a learning rate and a strength,
    ``lr_strength.png`` (:func:`lr_strength_figure`)."""
    figures = {"history.png": history_figure(summary), "lr_strength.png": lr_strength_figure(summary)}
    import matplotlib.pyplot as plt

    for name, fig in figures.items():
        if fig is not None:
            save_figure(fig, out / name, dpi=120)
            plt.close(fig)


def history_figure(summary: dict[str, Any]) -> Figure:
    """Each counted trial's validation metric by trial number (pruned: at its last epoch) and the best so far,
    per spec; the trial axis has whole-number ticks, the legend says what the markers and the lines are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    metric = Metric(**summary["metric"])
    better = max if metric.higher_is_better else min
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    palette = plt.get_cmap("tab10")
    for index, row in enumerate(summary["rows"]):
        color = palette(index % 10)
        shown = [r for r in row["trials"] if r["counted"] and r["value"] is not None]
        complete = [r for r in shown if r["state"] == "complete"]
        ax.scatter([r["number"] for r in complete], [r["value"] * metric.scale for r in complete], color=color, s=18)
        pruned = [r for r in shown if r["state"] == "pruned"]
        ax.scatter([r["number"] for r in pruned], [r["value"] * metric.scale for r in pruned], color=color, s=18,
                   marker="x", alpha=0.6)
        best_so_far: list[float] = []
        steps: list[int] = []
        for r in complete:
            best_so_far.append(better([*best_so_far[-1:], r["value"] * metric.scale]))
            steps.append(r["number"])
        ax.step(steps, best_so_far, where="post", color=color, label=f"{row['spec']} ({row['counted']} trials)")
    ax.set(xlabel="trial", ylabel=metric.label, title="optimization history")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.ticklabel_format(axis="y", useOffset=False)  # the values themselves on the ticks, not an offset
    grey = "0.45"
    key = [Line2D([], [], color=grey, marker="o", markersize=4, linestyle="none", label="dot: a trial"),
           Line2D([], [], color=grey, marker="x", markersize=5, linestyle="none", alpha=0.6,
                  label="x: a pruned trial, at its last epoch"),
           Line2D([], [], color=grey, label="line: the best so far")]
    # beside the axes, where it covers no trial
    ax.legend(handles=[*ax.get_legend_handles_labels()[0], *key], fontsize=8, frameon=False, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def lr_strength_figure(summary: dict[str, Any]) -> Figure | None:
    """The trials of each spec that searches a learning rate and a strength, in that plane (log scales, the
    whole search range shown), coloured by the validation metric; None when no spec searches both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = Metric(**summary["metric"])
    planes = [row for row in summary["rows"] if len(row["search_space"]) >= 2 and row["search_space"][0][0] == "lr"]
    if not planes:
        return None
    fig, axes = plt.subplots(1, len(planes), figsize=(4.6 * len(planes), 4.2), squeeze=False)
    for ax, row in zip(axes[0], planes):
        strength = row["search_space"][1][0]
        shown = [r for r in row["trials"] if r["counted"] and strength in r["params"]]
        complete = [r for r in shown if r["state"] == "complete"]
        points = ax.scatter([r["params"]["lr"] for r in complete], [r["params"][strength] for r in complete],
                            c=[r["value"] * metric.scale for r in complete], cmap="viridis", s=30)
        pruned = [r for r in shown if r["state"] != "complete"]
        ax.scatter([r["params"]["lr"] for r in pruned], [r["params"][strength] for r in pruned], color="grey",
                   marker="x", s=24, label="pruned" if pruned else None)
        if row["best"]:
            ax.scatter([row["best"]["params"]["lr"]], [row["best"]["params"][strength]], s=160, facecolors="none",
                       edgecolors="red", label="best")
        (_, lr_low, lr_high), (_, low, high) = row["search_space"][:2]
        ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel=strength, title=row["spec"],
               xlim=(lr_low / 1.2, lr_high * 1.2), ylim=(low / 1.2, high * 1.2))  # the whole range, edges visible
        log_ticks(ax.xaxis)
        log_ticks(ax.yaxis)
        if complete:
            fig.colorbar(points, ax=ax, label=metric.label)
        if pruned or row["best"]:  # under the axes: inside, a trial can sit beside its marks and read as one
            ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    fig.tight_layout()
    return fig
