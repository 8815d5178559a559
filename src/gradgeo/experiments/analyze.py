"""What a trained network looks like along its channel axes, what a metric does to gradient noise, and how well
a checkpoint classifies under another test-time augmentation."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from gradgeo.channel.optim import DEFAULT_LAM, layer_kinds
from gradgeo.channel.transforms import LayerKind, h1, laplacian_smooth, reweighted_h0, smoothing_view, sobolev
from gradgeo.data import DatasetSplits
from gradgeo.models import build_model
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import load_splits, read_checkpoint
from gradgeo.training.objective import TTA_LEVELS, evaluate
from gradgeo.training.run_folder import restore

__all__ = ["analyze_checkpoint", "channel_correlation", "evaluate_checkpoints", "format_evaluation", "format_report",
           "gradient_noise", "load_checkpoint"]


_CLASSIFY_ONLY = "analyze and evaluate read the checkpoint.pt of gradgeo train (or compare) --task classify"


def _load(path: str | os.PathLike[str]) -> tuple[nn.Module, TrainConfig, list[dict[str, Any]]]:
    state = read_checkpoint(path)
    foreign = sorted(set(state["config"]) - {f.name for f in dataclasses.fields(TrainConfig)})
    if foreign:
        raise ValueError(f"{path} is not the checkpoint of a classification run (its configuration has "
                         f"{', '.join(map(str, foreign))}); {_CLASSIFY_ONLY}")
    config = TrainConfig(**state["config"])
    try:
        model = build_model(config.model, width=config.width, **state["model_args"])
    except ValueError as error:
        raise ValueError(f"{path}: its config or model_args do not build a model ({error})") from None
    restore(Path(path), state, {"model": model}, _CLASSIFY_ONLY)
    return model, config, state["history"]


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[nn.Module, TrainConfig]:
    """The model and configuration stored in a ``gradgeo train`` checkpoint."""
    model, config, _ = _load(path)
    return model, config


def evaluate_checkpoints(
    paths: Sequence[str | os.PathLike[str]],
    split: str = "test",
    tta: str | None = None,
    data_dir: str | None = None,
) -> list[dict[str, Any]]:
    """Accuracy and loss of each checkpoint's model on a split of its own dataset (the validation split and
    subsets of its config), under the test-time augmentation ``tta`` (one of :data:`TTA_LEVELS`; None: each
    run's own).

    Each row also holds what the run recorded for that split after its last epoch, under its own ``tta``
    (``recorded_acc``, None for the training split, whose recorded accuracy is the running one of the epoch): so
    evaluating a finished run with another ``tta`` measures what that augmentation adds. ``data_dir`` replaces
    the runs' data folder (a checkpoint from another machine). Runs with the same data share one load.

    Example:
        >>> rows = evaluate_checkpoints(["runs/a/checkpoint.pt"], tta="flip-translate")  # doctest: +SKIP
        >>> rows[0]["acc"] - rows[0]["recorded_acc"]  # what the translated views add  # doctest: +SKIP
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"unknown split {split!r}; expected train, val or test")
    if tta is not None and tta not in TTA_LEVELS:
        raise ValueError(f"unknown tta {tta!r}; expected one of {TTA_LEVELS}")
    loaded: dict[tuple[Any, ...], DatasetSplits] = {}
    rows = []
    for path in paths:
        model, config, history = _load(path)
        if data_dir is not None:
            config = dataclasses.replace(config, data_dir=data_dir)
        if split == "val" and not config.val_size:
            raise ValueError(f"{path}: its run has no validation split (val_size {config.val_size}); evaluate "
                             "--split test or train")
        key = (config.dataset, config.data_dir, config.val_size, config.train_size, config.test_size)
        if key not in loaded:
            loaded[key] = load_splits(config)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # as in training
        level = config.tta if tta is None else tta
        metrics = evaluate(model, loaded[key], split, tta=level)
        last = history[-1] if history else {}
        rows.append({"checkpoint": str(path), "epoch": len(history), "split": split, "tta": level,
                     "acc": metrics["acc"], "loss": metrics["loss"], "run_tta": config.tta,
                     "recorded_acc": last.get(f"{split}_acc") if split != "train" else None})
    return rows


def format_evaluation(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`evaluate_checkpoints`' rows as a table, with the mean over the checkpoints when there are several."""
    lines = [f"{'checkpoint':<48} {'epoch':>5} {'split':>5} {'tta':>14} {'acc %':>7} {'loss':>7} "
             f"{'recorded %':>10} {'(its tta)':>14} {'diff':>6}"]
    diffs = []
    for r in rows:
        recorded, diff = "-", "-"
        if r["recorded_acc"] is not None:
            recorded = f"{r['recorded_acc'] * 100:.2f}"
            diffs.append((r["acc"] - r["recorded_acc"]) * 100)
            diff = f"{diffs[-1]:+.2f}"
        lines.append(f"{r['checkpoint']:<48} {r['epoch']:>5} {r['split']:>5} {r['tta']:>14} {r['acc'] * 100:>7.2f} "
                     f"{r['loss']:>7.4f} {recorded:>10} {r['run_tta']:>14} {diff:>6}")
    if len(rows) > 1:
        mean_diff = f"{sum(diffs) / len(diffs):+.2f}" if len(diffs) == len(rows) else "-"
        lines.append(f"{'mean of ' + str(len(rows)):<48} {'':>5} {'':>5} {'':>14} "
                     f"{sum(r['acc'] for r in rows) / len(rows) * 100:>7.2f} {'':>7} {'':>10} {'':>14} {mean_diff:>6}")
    return "\n".join(lines)


def _conv_weights(model: nn.Module) -> list[tuple[str, torch.Tensor, LayerKind]]:
    kinds = layer_kinds(model)
    return [(n, p, kinds[p]) for n, p in model.named_parameters() if kinds.get(p) in ("conv", "conv_transpose")]


def _axis_correlation(w: torch.Tensor, dim: int) -> tuple[float | None, float | None]:
    """(mean correlation of adjacent slices along ``dim``, mean |correlation| over all pairs of slices), or
    ``(None, None)`` for an axis of one slice."""
    if w.shape[dim] < 2:
        return None, None
    rows = w.detach().movedim(dim, 0).reshape(w.shape[dim], -1).double()
    rows = rows - rows.mean(1, keepdim=True)
    rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    corr = rows @ rows.T
    c = len(rows)
    adjacent = corr.diagonal(1).mean().item()
    off_diagonal = corr[~torch.eye(c, dtype=torch.bool)].abs().mean().item()
    return adjacent, off_diagonal


def channel_correlation(model: nn.Module) -> list[dict[str, Any]]:
    """Per conv layer: how alike neighbouring filters are along the output- vs the input-channel axis.

    ``adjacent_*`` is the mean Pearson correlation between slices c and c+1 of the weight along that axis
    (what a smoothing metric along the axis would promote); ``all_pairs_*`` the mean absolute correlation
    over all pairs of slices (independent of channel order). Every conv layer has a row; both numbers of an
    axis with a single channel (the input axis of a first layer on one-channel images) are None.
    """
    rows = []
    for name, w, kind in _conv_weights(model):
        adj_out, all_out = _axis_correlation(w, _axis(w.shape, "out", kind))
        adj_in, all_in = _axis_correlation(w, _axis(w.shape, "in", kind))
        rows.append({"layer": name, "shape": list(w.shape), "adjacent_out": adj_out, "adjacent_in": adj_in,
                     "all_pairs_out": all_out, "all_pairs_in": all_in})
    return rows


def _axis(shape: torch.Size, direction: Literal["out", "in"], kind: LayerKind) -> int:
    view = smoothing_view(shape, direction, kind)
    if view is None:  # never for a conv weight: both of its channel axes exist
        raise ValueError(f"no {direction!r} axis for a {kind} weight of shape {tuple(shape)}")
    return view[1]


def _transform(metric: str, g: torch.Tensor, kind: LayerKind, lam: float) -> torch.Tensor:
    if metric == "none":
        return g
    if metric == "laplacian":
        return laplacian_smooth(g, lam)
    dim = _axis(g.shape, "out", kind)
    fn = {"h0": reweighted_h0, "sobolev": sobolev, "h1": h1}[metric]
    return fn(g, lam, dim)


def gradient_noise(
    model: nn.Module,
    splits: DatasetSplits,
    metrics: Sequence[tuple[str, float]] = (("none", 0.0), ("h0", DEFAULT_LAM["h0"]),
                                            ("sobolev", DEFAULT_LAM["sobolev"]), ("h1", DEFAULT_LAM["h1"])),
    batches: int = 8,
    batch_size: int = 128,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Relative variance of the stochastic conv-weight gradient, raw and under each metric.

    Over ``batches`` mini-batches, ``noise = mean_i ||g_i - mean g||^2 / ||mean g||^2`` summed over conv
    weights: scale-free, so a metric that merely shrinks the gradient does not look less noisy. For
    ``laplacian`` the number given is sigma.
    """
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 2:
        raise ValueError(f"batches must be an integer >= 2 (a variance needs two gradients), got {batches!r}")
    model.train()
    weights = _conv_weights(model)
    samples: list[list[torch.Tensor]] = [[] for _ in weights]
    loader = splits.loader("train", batch_size, shuffle=True, seed=seed)
    for b, (x, y) in enumerate(loader.epoch(0)):
        if b == batches:
            break
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        for store, (_, w, _) in zip(samples, weights):
            store.append(torch.zeros_like(w) if w.grad is None else w.grad.detach().clone())  # None: unreached
    rows = []
    for metric, lam in metrics:
        noise, signal = 0.0, 0.0
        for store, (_, _, kind) in zip(samples, weights):
            stacked = torch.stack([_transform(metric, g, kind, lam) for g in store]).double()
            mean = stacked.mean(0)
            noise += (stacked - mean).square().sum().item() / len(store)
            signal += mean.square().sum().item()
        rows.append({"metric": metric, "lam": lam, "relative_variance": noise / signal})
    return rows


#: what the columns of :func:`format_report`'s correlation table mean
_COLUMNS = """\
columns: how alike the slices of each conv weight are along its two channel axes
  out, in   the output-channel axis (a slice is one filter), the input-channel axis (a slice per input channel)
  adj corr  mean Pearson correlation of neighbouring slices c and c+1: what smoothing the gradient along that
            axis promotes (it depends on the order of the channels)
  |corr|    mean absolute correlation over all pairs of slices (independent of the order of the channels)
  -         the axis has one channel (the input of a first layer on one-channel images): nothing to correlate"""


def _number(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"


def format_report(report: dict[str, Any]) -> str:
    """The tables of :func:`analyze_checkpoint`'s report: the channel correlations of every conv layer, what
    their columns mean, and the gradient noise under each metric."""
    lines = [f"{'layer':<28} {'shape':<18} {'adj corr out':>12} {'adj corr in':>11} {'|corr| out':>10} "
             f"{'|corr| in':>9}"]
    lines += [f"{r['layer']:<28} {'x'.join(map(str, r['shape'])):<18} {_number(r['adjacent_out'], 12)} "
              f"{_number(r['adjacent_in'], 11)} {_number(r['all_pairs_out'], 10)} {_number(r['all_pairs_in'], 9)}"
              for r in report["correlation"]]
    lines += ["", _COLUMNS, "", f"stochastic gradient of the conv weights over {report['batches']} batches "
              "(relative variance, lower is less noisy)"]
    lines += [f"  {r['metric']:<10} lam {r['lam']:<6g} {r['relative_variance']:.4f}" for r in report["gradient_noise"]]
    return "\n".join(lines)


def analyze_checkpoint(path: str | os.PathLike[str], batches: int = 8) -> dict[str, Any]:
    """Both analyses for a training checkpoint."""
    model, config = load_checkpoint(path)
    splits = load_splits(dataclasses.replace(config, val_size=0, train_size=None))
    return {"checkpoint": str(path), "batches": batches, "correlation": channel_correlation(model),
            "gradient_noise": gradient_noise(model, splits, batches=batches)}
