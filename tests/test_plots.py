"""The plots the CLI writes, drawn from made-up histories and summaries (no training): every axis fits all it
draws, the legend says what a band is, few seeds get no band, one epoch is visible, log axes and trial axes have
readable ticks."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("matplotlib", reason="the harness extra is not installed: pip install 'gradgeo[harness]'")

from matplotlib.collections import PolyCollection  # noqa: E402

from gradgeo.experiments.plots import BAND_SEEDS, curves_figure, history_figure, lr_strength_figure  # noqa: E402
from gradgeo.tasks.anytime.report import BAR_SEEDS  # noqa: E402
from gradgeo.tasks.base import Metric  # noqa: E402
from gradgeo.tasks.classify import TEST_ACC  # noqa: E402


def histories(seeds: int, epochs: int = 6, loss_drop: float = 3.0) -> dict[str, list[list[dict]]]:
    """Two specs whose first epoch sits near chance (10%) and whose loss falls by ``loss_drop`` decades."""
    def run(spec: int, seed: int) -> list[dict]:
        return [{"epoch": e + 1,
                 "test_acc": 0.1 + 0.8 * (1 - math.exp(-e)) + 0.01 * ((seed * 7 + spec * 3 + e) % 5 - 2),
                 "train_loss": 2.3 * 10 ** (-loss_drop * e / (epochs - 1)) * (1 + 0.05 * seed)}
                for e in range(epochs)]

    return {f"spec{k}": [run(k, s) for s in range(seeds)] for k in range(2)}


def drawn_y(ax) -> list[float]:
    """Every y value drawn on ``ax``: its lines' points and its bands' outlines."""
    values = [y for line in ax.get_lines() for y in line.get_ydata()]
    values += [y for band in ax.collections if isinstance(band, PolyCollection)
               for path in band.get_paths() for _, y in path.vertices]
    return values


def legend_texts(fig) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


@pytest.mark.parametrize("seeds", [1, 2, 3, 5])
def test_every_panel_fits_all_it_draws_and_the_legend_says_what_is_drawn(seeds):
    fig = curves_figure(histories(seeds), [TEST_ACC])
    for ax in fig.axes:
        low, high = ax.get_ylim()
        values = drawn_y(ax)
        assert low <= min(values) and max(values) <= high, (ax.get_ylabel(), (low, high), min(values), max(values))
    accuracy = fig.axes[0]
    assert min(drawn_y(accuracy)) < 15  # the near-chance first epoch is on the chart
    bands = [c for c in accuracy.collections if isinstance(c, PolyCollection)]
    texts = " | ".join(legend_texts(fig))
    if seeds >= BAND_SEEDS:
        assert len(bands) == 2 and f"band: 95% CI of the mean over {seeds} seeds" in texts
        assert max(drawn_y(accuracy)) <= 100  # a band stays within what a percentage can be
    else:  # no band: each seed's own line beside the mean (two seeds), or the line (one)
        assert not bands and "95% CI" not in texts
        assert len(accuracy.get_lines()) == 2 * (1 + (seeds if seeds > 1 else 0))
        assert ("thin lines: each seed" in texts) == (seeds == 2) and ("1 seed" in texts) == (seeds == 1)
    assert BAR_SEEDS == BAND_SEEDS  # the anytime error bars follow the same rule


@pytest.mark.parametrize("seeds", [1, 2, 3])
def test_a_run_of_one_epoch_is_drawn_as_markers_on_a_whole_epoch(seeds):
    """A line through one point draws nothing: one epoch is a marker per spec (and per seed, with two), its CI an
    error bar, the epoch axis one whole-number tick."""
    runs = {f"spec{k}": [[{"epoch": 1, "test_acc": 0.15 + 0.01 * s + 0.02 * k, "train_loss": 2.2 - 0.01 * s}]
                         for s in range(seeds)] for k in range(2)}
    fig = curves_figure(runs, [TEST_ACC])
    fig.canvas.draw()
    for ax in fig.axes:
        points = [line for line in ax.get_lines()
                  if len(line.get_xdata()) == 1 and line.get_marker() not in ("", "None")]
        assert len(points) == 2 * (1 + (seeds if seeds == 2 else 0)), ax.get_ylabel()
        low, high = ax.get_xlim()
        assert [t for t in ax.get_xticks() if low <= t <= high] == [1]
        values = drawn_y(ax)
        assert ax.get_ylim()[0] <= min(values) and max(values) <= ax.get_ylim()[1]
    texts = " | ".join(legend_texts(fig))
    assert ("bar: 95% CI" in texts) == (seeds >= BAND_SEEDS) and "line" not in texts and "band" not in texts


@pytest.mark.parametrize("decades,log", [(0.2, False), (1.5, True), (4.0, True)])
def test_the_training_loss_axis_has_readable_ticks(decades, log):
    """Linear within a factor 10, else log with at least three labelled ticks inside the axis, plain numbers."""
    fig = curves_figure(histories(3, loss_drop=decades), [TEST_ACC])
    loss = fig.axes[-1]
    fig.canvas.draw()
    assert (loss.get_yscale() == "log") == log
    low, high = loss.get_ylim()
    labels = [t.get_text() for t, value in zip(loss.get_yticklabels(), loss.get_yticks())
              if low <= value <= high and t.get_text()]
    assert len(labels) >= 3, labels
    if log:
        assert all("10^" not in label and "times" not in label for label in labels), labels


def trial(number: int, lr: float, lam: float, value: float, state: str = "complete") -> dict:
    return {"number": number, "state": state, "counted": True, "value": value, "params": {"lr": lr, "lam": lam}}


SUMMARY = {"metric": {"key": "val_acc", "label": "val acc %", "higher_is_better": True, "scale": 100.0, "digits": 2},
           "rows": [{"spec": "sgd+h0", "counted": 3, "search_space": [["lr", 0.005, 0.5], ["lam", 1.0, 100.0]],
                     "best": {"params": {"lr": 0.05, "lam": 3.0}},
                     "trials": [trial(0, 0.01, 2.0, 0.81), trial(1, 0.05, 3.0, 0.86),
                                trial(2, 0.3, 50.0, 0.4, "pruned")]}]}


def test_the_tuning_history_counts_trials_in_whole_numbers():
    fig = history_figure(SUMMARY)
    ax = fig.axes[0]
    fig.canvas.draw()
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_the_tuning_history_says_what_its_marks_are_beside_the_trials():
    fig = history_figure(SUMMARY)
    ax = fig.axes[0]
    fig.canvas.draw()
    legend = ax.get_legend()
    texts = [text.get_text() for text in legend.get_texts()]
    assert texts[0] == "sgd+h0 (3 trials)" and {"dot: a trial", "x: a pruned trial, at its last epoch",
                                                  "line: the best so far"} <= set(texts)
    renderer = fig.canvas.get_renderer()
    assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))  # covers no trial


def test_the_lr_strength_plane_names_only_what_it_draws_beside_the_trials():
    no_pruned = {**SUMMARY, "rows": [{**SUMMARY["rows"][0], "trials": SUMMARY["rows"][0]["trials"][:2]}]}
    texts = [t.get_text() for t in lr_strength_figure(no_pruned).axes[0].get_legend().get_texts()]
    assert texts == ["best"]
    fig = lr_strength_figure(SUMMARY)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    assert not ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))


def test_the_lr_strength_plane_labels_its_log_axes_without_overlap():
    fig = lr_strength_figure(SUMMARY)
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for axis, labels in ((ax.xaxis, ax.get_xticklabels()), (ax.yaxis, ax.get_yticklabels())):
        low, high = axis.get_view_interval()
        shown = [label for label, value in zip(labels, axis.get_majorticklocs())
                 if low <= value <= high and label.get_text()]
        assert len(shown) >= 3, [label.get_text() for label in shown]
        boxes = [label.get_window_extent(renderer) for label in shown]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), \
            [label.get_text() for label in shown]
    assert not [t for t in ax.get_xticklabels(minor=True) if t.get_text()]  # no minor labels to crowd them


def test_the_anytime_curves_say_they_are_the_last_exits():
    """An anytime run's rows hold test_acc and train_loss of its last exit (per exit: the test_exit_* lists)."""
    from gradgeo.tasks.anytime.training import ANYTIME

    assert [m.key for m in ANYTIME.curves] == ["test_acc"]
    assert all("last exit" in label for label in [*(m.label for m in ANYTIME.curves), ANYTIME.loss_label])


def test_a_narrow_range_is_ticked_with_its_values_not_an_offset():
    """A GAN's classifier score early in training varies in its fifth decimal: the ticks say 1.00013, not 3 under
    an offset '1e-5+1.0001'."""
    score = Metric("test_score", "classifier score", scale=1.0, digits=3)
    runs = {"adam": [[{"epoch": e, "test_score": 1.00013 + 0.00002 * e + 0.00001 * s, "train_loss": 1.3 - 0.1 * e}
                      for e in (1, 2, 3)] for s in range(2)]}
    fig = curves_figure(runs, [score])
    fig.canvas.draw()
    for ax in fig.axes:
        assert ax.yaxis.get_offset_text().get_text() == "", ax.get_ylabel()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_text()]
    assert labels and all(label.startswith("1.000") for label in labels), labels
