"""The training engine: one readable loop, one hyper-parameter record, resumable to the identical result.

The data sits in memory (on the device), batches are augmented as tensors, the optimizer comes from a
spec string (:mod:`gradgeo.factory`). Every epoch appends a line to ``metrics.jsonl`` and writes an
atomic checkpoint (and, with ``tensorboard=True``, TensorBoard events: :mod:`gradgeo.tensorboard_log`); a run
is finished when ``result.json`` exists. Randomness is derived from
``(seed, epoch)`` alone, so ``resume=True`` continues to the same numbers as an uninterrupted run.

Under ``torchrun --nproc-per-node N`` (:mod:`gradgeo.ddp`) the model is wrapped in DDP and
``batch_size`` is the *global* batch: each rank trains on its ``batch_size / N`` share of every batch
(``batch_size`` must be divisible by N), so the N ranks together see the single-process batches, in the
same order, and step on their averaged gradient. The training metrics are those of the global batches (the
:class:`Objective` sums its running sums over the ranks); rank 0 alone evaluates, logs and writes files; every
rank loads the checkpoint on resume. BatchNorm normalizes each rank's share (PyTorch's DDP default), so a
model with BatchNorm trains close to, not exactly like, one process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree

from gradgeo import ddp
from gradgeo.data import Augment, DatasetSplits, load_dataset
from gradgeo.extras import check, require
from gradgeo.factory import create_optimizer, parse_spec
from gradgeo.models import build_model
from gradgeo.optim import ChannelDirected
from gradgeo.tensorboard_log import TENSORBOARD, TensorBoardLog

__all__ = ["PRECISIONS", "SCHEDULES", "CrossEntropy", "Objective", "TrainConfig", "evaluate", "fit", "load_splits",
           "train"]

SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("fp32", "bf16")
CHECKPOINT, METRICS, RESULT = "checkpoint.pt", "metrics.jsonl", "result.json"


@dataclasses.dataclass
class TrainConfig:
    """Every hyper-parameter of a run, in one record (saved with each checkpoint and result)."""

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    model: str = "small_cnn"
    width: float = 1.0
    optimizer: str = "sgd"  # a spec: "sgd", "sgd+sobolev:lam=0.1", "adam:lr=1e-3+h0:lam=2", ...
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    epochs: int = 10
    batch_size: int = 128
    schedule: str = "cosine"  # per-iteration cosine to 0, "step" (x0.1 at 50% and 75%), or "constant"
    label_smoothing: float = 0.0
    augment: bool | None = None  # None: crop + flip for CIFAR, none for the 28x28 sets
    train_size: int | None = None  # a stratified subset of the training set, for short runs
    val_size: int = 0  # images carved from the training set for validation (tuning never sees the test set)
    seed: int = 0
    compile: bool = False
    channels_last: bool = False  # conv weights and image batches in NHWC memory (faster convolutions on CPU)
    precision: str = "fp32"  # "bf16": the training forward under bfloat16 autocast (weights, gradients stay fp32)
    device: str = "auto"  # "auto": cuda when available

    def validate(self) -> TrainConfig:
        """Raise a ValueError naming the bad field and the accepted values."""
        parse_spec(self.optimizer)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {PRECISIONS}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lr", "width"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.weight_decay < 0 or self.momentum < 0 or self.val_size < 0:
            raise ValueError("weight_decay, momentum and val_size must be >= 0")
        return self

    def changed_fields(self, saved: dict[str, Any]) -> list[str]:
        """The fields where this config differs from ``saved`` (a ``dataclasses.asdict`` record of a config of
        the same class, e.g. from a checkpoint); a field the record lacks, written before gradgeo had the
        field, counts as its default."""
        defaults, current = dataclasses.asdict(type(self)()), dataclasses.asdict(self)
        return [name for name in sorted(current.keys() | saved.keys())
                if saved.get(name, defaults.get(name)) != current.get(name)]

    def optimizer_defaults(self) -> dict[str, Any]:
        """The keyword defaults :func:`fit` gives :func:`~gradgeo.factory.create_optimizer` (options in the
        optimizer spec override them; a config for another task may add some, e.g. Adam's ``betas``)."""
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov or None,
                "weight_decay": self.weight_decay}

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def load_splits(config: TrainConfig) -> DatasetSplits:
    """The dataset of a config: subset and validation split applied (both fixed by the seed 0, not the run's
    seed, so every run of a comparison sees the same images)."""
    splits = load_dataset(config.dataset, config.data_dir)
    if config.val_size:
        splits = splits.split_validation(config.val_size, seed=0)
    if config.train_size:
        splits = splits.subset(config.train_size, seed=0)
    return splits


def _lr_lambda(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    if config.schedule == "step":
        return lambda step: 0.1 ** ((step >= total // 2) + (step >= (3 * total) // 4))
    return lambda step: 1.0


def eval_batch_size(model: nn.Module) -> int:
    """64 on CPU (small batches stay in cache: 2-3x the images/s of batch 1000 for ResNet-20 on a 2-core
    machine), 1000 on accelerators."""
    return 64 if next(model.parameters()).device.type == "cpu" else 1000


@torch.inference_mode()
def evaluate(model: nn.Module, splits: DatasetSplits, split: str, batch_size: int | None = None) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on a split (``"train"``, ``"val"``, ``"test"``); ``batch_size``
    defaults to :func:`eval_batch_size`."""
    batch_size = batch_size or eval_batch_size(model)
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    dtype = next(model.parameters()).dtype
    for x, y in splits.loader(split, batch_size, shuffle=False, dtype=dtype).epoch(0):
        logits = model(x).float()
        total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
    model.train(was_training)
    return {"loss": total_loss / count, "acc": correct / count}


def _bf16_autocast(forward: Callable[[torch.Tensor], Any], device_type: str) -> Callable[[torch.Tensor], Any]:
    """``forward`` under bfloat16 autocast, its floating outputs returned as float32: losses, OSGD's
    projections and a GAN's second player then run in float32, and backward runs outside autocast."""

    def run(x: torch.Tensor) -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            output = forward(x)
        return _pytree.tree_map_only(torch.Tensor, lambda t: t.float() if t.is_floating_point() else t, output)

    return run


def _atomic_save(obj: Any, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix == ".json":
            Path(tmp).write_text(json.dumps(obj, indent=2) + "\n")
        else:
            torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _progress(iterable, total: int, description: str, enabled: bool):
    if not enabled:
        return iterable
    tqdm = require("tqdm.auto", "harness", "progress bars (off with --quiet, or progress=False)").tqdm
    return tqdm(iterable, total=total, desc=description, leave=False, dynamic_ncols=True)


TABLE_HEADER = f"{'epoch':>5} {'train loss':>10} {'train acc':>9} {'val acc':>8} {'test loss':>9} {'test acc':>8} " \
               f"{'lr':>9} {'time s':>7}"


def format_row(row: dict[str, Any]) -> str:
    val = f"{row['val_acc'] * 100:7.2f}%" if row.get("val_acc") is not None else f"{'-':>8}"
    return (f"{row['epoch']:>5} {row['train_loss']:>10.4f} {row['train_acc'] * 100:>8.2f}% {val} "
            f"{row['test_loss']:>9.4f} {row['test_acc'] * 100:>7.2f}% {row['lr']:>9.2e} {row['time']:>7.1f}")


class Objective(ABC):
    """What a training step minimizes and what an epoch reports: the part of a run that depends on the model's
    output. :func:`fit` runs everything else (data, optimizer, schedule, checkpoints, metrics files).

    :class:`CrossEntropy` is the objective of :func:`train`; :mod:`gradgeo.anytime` has a multi-exit one.
    Every row an objective reports must hold ``train_loss``, ``train_acc``, ``val_acc`` (None without a
    validation split), ``test_loss`` and ``test_acc``, so that comparisons can read any run.

    Data-parallel training (:mod:`gradgeo.ddp`): every rank runs :meth:`backward` on its share of each batch
    and :meth:`train_metrics` after each epoch (which must sum the ranks' running sums with
    ``self.context.sum``); rank 0 alone calls :meth:`evaluate`, :meth:`state_dict` and :meth:`result_fields`.
    """

    #: the table header matching :meth:`format_row`
    header: str = TABLE_HEADER
    #: the data-parallel ranks this objective trains on; :func:`fit` sets it (one process by default)
    context: ddp.Context = ddp.Context()
    #: False: DDP averages the gradients that :meth:`backward` writes, in its backward hooks. True:
    #: :meth:`backward` averages them over ``context.group`` itself (for a rule that is not linear in the
    #: batch's gradient, e.g. OSGD), and :func:`fit` runs the step in DDP's ``no_sync``
    reduces_gradients: bool = False

    @abstractmethod
    def backward(self, output: Any, y: torch.Tensor, progress: float) -> None:
        """Compute the batch's loss from the model's ``output``, write its gradient into ``p.grad`` and add
        the batch to the running training metrics (on the device: no host synchronization).

        Args:
            output: what the model returned for the batch.
            y: the labels.
            progress: fraction of training done before this step, in [0, 1).
        """

    @abstractmethod
    def train_metrics(self) -> dict[str, Any]:
        """The training metrics of the batches since the last call (``train_loss``, ``train_acc``, ...), of
        all ranks' shares together."""

    @abstractmethod
    def evaluate(self, model: nn.Module, splits: DatasetSplits) -> dict[str, Any]:
        """The evaluation fields of an epoch's row: ``val_acc`` (None without a validation split),
        ``test_loss``, ``test_acc`` and any others."""

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Update the parameters from the gradient :meth:`backward` wrote: ``optimizer.step()``. A two-player
        objective (:class:`gradgeo.gan.GANObjective`) overrides it to update one player, then compute and apply
        the other's gradient; the schedule steps once after it."""
        optimizer.step()

    def format_row(self, row: dict[str, Any]) -> str:
        """One line of the fixed-width table printed during training."""
        return format_row(row)

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint with the model and the optimizer (none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` when a run resumes."""
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state, got state with keys {sorted(state)}")

    def result_fields(self, model: nn.Module, splits: DatasetSplits) -> dict[str, Any]:
        """Extra fields for ``result.json``, computed once from the trained model (none by default)."""
        return {}


class CrossEntropy(Objective):
    """Cross-entropy of a classifier's logits, with optional label smoothing."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing
        self._sums: tuple[torch.Tensor, torch.Tensor, int] | None = None

    def backward(self, output: torch.Tensor, y: torch.Tensor, progress: float) -> None:
        loss = nn.functional.cross_entropy(output, y, label_smoothing=self.label_smoothing)
        loss.backward()
        loss_sum, correct, seen = self._sums or (torch.zeros((), device=y.device),
                                                 torch.zeros((), device=y.device, dtype=torch.long), 0)
        self._sums = (loss_sum + loss.detach() * len(y), correct + (output.detach().argmax(1) == y).sum(),
                      seen + len(y))

    def train_metrics(self) -> dict[str, Any]:
        loss_sum, correct, seen = (self.context.sum(s).item() for s in self._sums)
        self._sums = None
        return {"train_loss": loss_sum / seen, "train_acc": correct / seen}

    def evaluate(self, model: nn.Module, splits: DatasetSplits) -> dict[str, Any]:
        test = evaluate(model, splits, "test")
        return {"val_acc": evaluate(model, splits, "val")["acc"] if splits.val_y is not None else None,
                "test_loss": test["loss"], "test_acc": test["acc"]}


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
    splits: DatasetSplits | None = None,
    stop_after: int | None = None,
    tensorboard: bool = False,
) -> list[dict[str, Any]]:
    """Train one run and return its per-epoch metrics.

    Args:
        config: the run's hyper-parameters.
        out_dir: where ``metrics.jsonl``, ``checkpoint.pt`` and ``result.json`` go (``None``: nowhere).
        resume: continue from ``out_dir/checkpoint.pt`` if it exists (to the identical result).
        progress: tqdm bars; default: only on a terminal.
        log: receives the fixed-width table lines (``None``: silent).
        splits: the loaded dataset, to share one load across runs (must match ``config``).
        stop_after: stop after this many epochs in total (simulates an interruption; no result.json).
        tensorboard: also write every epoch's row as TensorBoard scalars to ``out_dir/tensorboard``
            (:mod:`gradgeo.tensorboard_log`, extra ``gradgeo[tensorboard]``); the rows of a channel-metric
            optimizer then also hold its strength (``lam``, or ``sigma`` for ``laplacian``) and the epoch's
            mean gradient norm before and after the transform (``grad_norm_before``, ``grad_norm_after``,
            :meth:`~gradgeo.optim.ChannelDirected.pop_grad_norms`).

    Returns:
        One dict per epoch: ``epoch``, ``train_loss``, ``train_acc``, ``val_acc``, ``test_loss``,
        ``test_acc``, ``lr``, ``time`` (and the fields ``tensorboard`` adds).
    """

    def build(model_args: dict[str, int]) -> tuple[nn.Module, Objective]:
        return build_model(config.model, width=config.width, **model_args), CrossEntropy(config.label_smoothing)

    return fit(config, build, out_dir, resume=resume, progress=progress, log=log, splits=splits,
               stop_after=stop_after, tensorboard=tensorboard)


def _optimizer_fields(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The strength of a channel metric (of the first param group) and the gradient norms since the last call."""
    metric = optimizer.param_groups[0].get("metric", "none")
    if not isinstance(optimizer, ChannelDirected) or metric == "none":
        return {}
    strength = "sigma" if metric == "laplacian" else "lam"
    return {strength: optimizer.param_groups[0][strength], **(optimizer.pop_grad_norms() or {})}


def fit(
    config: TrainConfig,
    build: Callable[[dict[str, int]], tuple[nn.Module, Objective]],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
    splits: DatasetSplits | None = None,
    stop_after: int | None = None,
    tensorboard: bool = False,
) -> list[dict[str, Any]]:
    """The training loop behind :func:`train`, for any model and :class:`Objective`.

    Seeds torch with ``config.seed``, calls ``build(model_args)`` (``model_args``: ``num_classes`` and
    ``in_channels`` of the dataset) for a freshly initialized model and its objective, then trains with the
    optimizer spec, schedule and data of ``config``; checkpoints, ``metrics.jsonl``, ``result.json`` and
    resuming work as described in :func:`train`. Each step is ``output = model(x)``, then
    ``objective.backward(output, y, progress)``, ``objective.step(optimizer)`` (by default the optimizer step)
    and the schedule step.

    Args:
        config: the run's hyper-parameters.
        build: ``model_args -> (model, objective)``; the model is moved to the run's device.
        out_dir, resume, progress, log, splits, stop_after, tensorboard: as in :func:`train` (the gradient
            norms and strength are those of the optimizer built here from ``config.optimizer``).

    Returns:
        One dict per epoch: the objective's training and evaluation fields, ``epoch``, ``lr``, ``time``.

    Example:
        >>> history = fit(TrainConfig(epochs=1), lambda args: (build_model("small_cnn", **args),
        ...                                                      CrossEntropy()))  # doctest: +SKIP
    """
    config.validate()
    if tensorboard and out_dir is None:
        raise ValueError("tensorboard=True writes the events into the run folder: give an out_dir")
    if tensorboard:
        check("tensorboard", "TensorBoard logging (--log tensorboard)")
    ctx = ddp.setup(config.resolved_device())
    device = ctx.device
    if config.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {config.batch_size} is the global batch and must be divisible by the "
                         f"{ctx.world_size} processes")
    progress = (sys.stderr.isatty() if progress is None else progress) and ctx.is_main
    log = log if ctx.is_main else None
    splits = (splits or load_splits(config)).to(device)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(config.seed)
    model_args = {"num_classes": splits.num_classes, "in_channels": splits.image_shape[0]}
    model, objective = build(model_args)
    model = model.to(device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)
    objective.context = ctx
    optimizer = create_optimizer(model, config.optimizer, **config.optimizer_defaults())
    if tensorboard and ctx.is_main and isinstance(optimizer, ChannelDirected):
        optimizer.track_grad_norms = True
    augment = config.augment if config.augment is not None else config.dataset.startswith("cifar")
    loader = splits.loader("train", config.batch_size, shuffle=True, drop_last=True, seed=config.seed,
                           augment=Augment(padding=4, flip=True) if augment else None, rank=ctx.rank,
                           world_size=ctx.world_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, len(loader)))
    wrapped = ctx.wrap(model)
    forward = torch.compile(wrapped) if config.compile else wrapped
    if config.precision == "bf16":
        forward = _bf16_autocast(forward, device.type)
    # an objective that averages its gradients over the ranks itself: DDP reduces nothing (and prepares nothing)
    no_sync = wrapped.no_sync if ctx.distributed and objective.reduces_gradients else contextlib.nullcontext

    history: list[dict[str, Any]] = []
    checkpoint_path = out / CHECKPOINT if out is not None else None
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        changed = config.changed_fields(state["config"])
        if changed:
            raise ValueError(f"{checkpoint_path} was written by another configuration (it differs in "
                             f"{', '.join(changed)}); use a new --out folder or drop --resume to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        objective.load_state_dict(state.get("objective", {}))
        history = state["history"]
    if out is not None and ctx.is_main:  # the metrics file always matches the checkpoint it sits beside
        (out / METRICS).write_text("".join(json.dumps(row) + "\n" for row in history))
    board = TensorBoardLog(out / TENSORBOARD, history) if tensorboard and out is not None and ctx.is_main else None

    if log is not None:
        log(objective.header)
        for row in history:
            log(objective.format_row(row))
    total_steps = config.epochs * len(loader)
    last_epoch = config.epochs if stop_after is None else min(stop_after, config.epochs)
    for epoch in range(len(history), last_epoch):
        started = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch)  # any randomness inside the model, per epoch
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        batches = _progress(loader.epoch(epoch), len(loader), f"epoch {epoch + 1}/{config.epochs}", progress)
        for step, (x, y) in enumerate(batches, epoch * len(loader)):
            if config.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with no_sync():
                objective.backward(forward(x), y, step / total_steps)
            objective.step(optimizer)
            scheduler.step()
        row: dict[str, Any] = {"epoch": epoch + 1, **objective.train_metrics()}  # every rank: sums over ranks
        if ctx.is_main:  # one rank evaluates (on the unwrapped model); the others receive its row
            row.update(objective.evaluate(model, splits), lr=lr, time=time.perf_counter() - started)
            row.update(_optimizer_fields(optimizer) if tensorboard else {})
        row = ctx.from_main(row)
        history.append(row)
        if log is not None:
            log(objective.format_row(row))
        if out is not None and ctx.is_main:
            with open(out / METRICS, "a") as f:
                f.write(json.dumps(row) + "\n")
            _atomic_save({"config": dataclasses.asdict(config), "model_args": model_args, "model": model.state_dict(),
                          "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "objective": objective.state_dict(), "history": history}, checkpoint_path)
        if board is not None:
            board.write(row)
    if board is not None:
        board.close()
    if out is not None and ctx.is_main and len(history) == config.epochs:
        _atomic_save({"config": dataclasses.asdict(config), "history": history,
                      "final_test_acc": history[-1]["test_acc"],
                      "best_test_acc": max(r["test_acc"] for r in history),
                      **objective.result_fields(model, splits)}, out / RESULT)
    return history
