"""The curves of a comparison: every metric and the training loss per epoch, mean over seeds with a 95% CI band."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gradgeo.experiments.grid import load_histories
from gradgeo.experiments.stats import mean_ci
from gradgeo.tasks.base import Metric
from gradgeo.training.run_folder import save_figure

__all__ = ["plot_curves"]


def plot_curves(out: Path, specs: Sequence[str], seeds: Sequence[int], path: Path,
                metrics: Sequence[Metric], loss_label: str = "training loss") -> None:
    """Each metric (scaled as it is shown) and the training loss (``train_loss``, called ``loss_label``) per
    epoch: mean over seeds with a 95% CI band, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = [*metrics, Metric("train_loss", loss_label, higher_is_better=False, scale=1.0)]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(11.0, 4.6 * len(panels)), 4))
    cmap = plt.get_cmap("tab10" if len(specs) <= 10 else "tab20")
    colors = [cmap(i) for i in range(cmap.N)]  # the qualitative map's own colors (integer lookups)
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
    save_figure(fig, path, dpi=120)
    plt.close(fig)
