"""The anytime task's extra artefact of a comparison: test accuracy against FLOPs per image."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gradgeo.training.run_folder import save_figure

__all__ = ["BAR_SEEDS", "plot_accuracy_vs_flops", "write_accuracy_vs_flops"]

#: the fewest seeds whose mean gets 95% CI error bars, as the curves' bands
#: (:data:`gradgeo.experiments.plots.BAND_SEEDS`): from two seeds a 95% CI is 12.7 standard errors wide
BAR_SEEDS = 3


def write_accuracy_vs_flops(out: Path, runs: Mapping[str, Mapping[int, Path]], summary: dict[str, Any]) -> None:
    """``accuracy_vs_flops.png`` of a comparison's summary (the ``"exits"`` layout)."""
    plot_accuracy_vs_flops(summary, out / "accuracy_vs_flops.png")


def plot_accuracy_vs_flops(summary: dict[str, Any], path: Path) -> None:
    """Test accuracy against FLOPs per image, mean over the seeds: each exit (markers; from :data:`BAR_SEEDS` seeds
    on with 95% CI bars) and early exit (dashed); the title says which."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    mflops = [f / 1e6 for f in summary["exit_flops"]]
    seeds = len(summary["seeds"])
    for r in summary["rows"]:
        means = [a["mean"] * 100 for a in r["exit_test_acc"]]
        errors = [a["half_width"] * 100 for a in r["exit_test_acc"]] if seeds >= BAR_SEEDS else None
        line = ax.errorbar(mflops, means, yerr=errors, marker="o", capsize=3, label=f"{r['method']} (exits)")
        if "early_exit" in r:
            ax.plot([e["test_flops"] / 1e6 for e in r["early_exit"]],
                    [e["test_acc"]["mean"] * 100 for e in r["early_exit"]], linestyle="--",
                    color=line[0].get_color(), label=f"{r['method']} (early exit)")
    bars = "; bars: 95% CI of the mean" if seeds >= BAR_SEEDS else f" (CI bars from {BAR_SEEDS} seeds)"
    ax.set(xlabel="MFLOPs per image", ylabel="test accuracy (%)",
           title=f"accuracy vs compute, mean over {seeds} seed{'s' if seeds > 1 else ''}{bars}")
    ax.ticklabel_format(axis="y", useOffset=False)  # the accuracies themselves on the ticks, not an offset
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
