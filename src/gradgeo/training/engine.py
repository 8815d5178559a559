"""The training engine: one readable loop, resumable to the identical result.

A run's hyper-parameters are one :class:`~gradgeo.training.config.TrainConfig`. The data sits in memory (on the
device), batches are augmented as tensors, the optimizer comes from a spec string (:mod:`gradgeo.channel.factory`).
Every epoch appends a line to ``metrics.jsonl`` and writes an atomic checkpoint (and, with ``tensorboard=True``,
TensorBoard events: :mod:`gradgeo.training.tensorboard`); a run is finished when ``result.json`` exists.
Randomness is derived from ``(seed, epoch)`` alone, so ``resume=True`` continues to the same numbers as an
uninterrupted run.

Under ``torchrun --nproc-per-node N`` (:mod:`gradgeo.training.ddp`) the model is wrapped in DDP and
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
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils import _pytree

from gradgeo.channel.factory import create_optimizer
from gradgeo.channel.optim import ChannelDirected
from gradgeo.data import Augment, DatasetSplits, load_dataset
from gradgeo.models import build_model
from gradgeo.training import ddp
from gradgeo.training.config import TrainConfig
from gradgeo.training.extras import check
from gradgeo.training.objective import TTA_LEVELS, CrossEntropy, Objective, evaluate
from gradgeo.training.prepare import DATA_INIT_IMAGES, init_from_data, probe
from gradgeo.training.progress import progress_bar, wants_bars
from gradgeo.training.run_folder import (
    CHECKPOINT,
    METRICS,
    RESULT,
    _atomic_save,
    _run_folder_problem,
    hold_folder,
    read_checkpoint,
    restore,
    write_file,
)
from gradgeo.training.schedules import SCHEDULES, lr_lambda
from gradgeo.training.tensorboard import TENSORBOARD, TensorBoardLog

__all__ = ["DATA_INIT_IMAGES", "SCHEDULES", "TTA_LEVELS", "CrossEntropy", "Objective", "classifier", "evaluate",
           "fit", "load_splits", "train"]


def load_splits(config: TrainConfig) -> DatasetSplits:
    """The dataset of a config: validation split, training subset and test subset applied (all fixed by the
    seed 0, not the run's seed, so every run of a comparison sees the same images)."""
    splits = load_dataset(config.dataset, config.data_dir)
    if config.val_size:
        splits = splits.split_validation(config.val_size, seed=0)
    if config.train_size:
        splits = splits.subset(config.train_size, seed=0)
    if config.test_size is not None:
        if config.test_size > len(splits.test_y):
            raise ValueError(f"test_size {config.test_size} is more than the {len(splits.test_y)} test images of "
                             f"{splits.display_name}: lower --test-size, or leave it out to evaluate on all of them")
        splits = splits.subset_test(config.test_size, seed=0)
    return splits


def _bf16_autocast(forward: Callable[[torch.Tensor], Any], device_type: str) -> Callable[[torch.Tensor], Any]:
    """``forward`` under bfloat16 autocast, its floating outputs returned as float32: losses, OSGD's
    projections and a GAN's second player then run in float32, and backward runs outside autocast."""

    def run(x: torch.Tensor) -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            output = forward(x)
        return _pytree.tree_map_only(torch.Tensor, lambda t: t.float() if t.is_floating_point() else t, output)

    return run


def _slow_bf16_reason() -> str | None:
    """Why bfloat16 autocast would be slow on this CPU, or None: x86 CPUs without AVX512-BF16 or AMX
    instructions emulate bfloat16 matrix products (measured 15-50x slower than fp32 on an AVX2-only machine)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return None  # other architectures: no measurement to go on
    capability = torch.backends.cpu.get_cpu_capability()
    native = [flag for flag, probe in (("AVX512-BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
              if getattr(torch.cpu, probe, lambda: False)()]
    if capability == "AVX512" and native:
        return None
    return f"this CPU's vector capability is {capability} without bfloat16 instructions (AVX512-BF16 or AMX)"


def _all_finite(value: Any) -> bool:
    """False when a number in ``value`` (a number, None, or a list/dict of them) is NaN or infinite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    return True


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = print,
    splits: DatasetSplits | None = None,
    stop_after: int | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    tensorboard: bool = False,
) -> list[dict[str, Any]]:
    """Train one run and return its per-epoch metrics.

    Args:
        config: the run's hyper-parameters.
        out_dir: where ``metrics.jsonl``, ``checkpoint.pt`` and ``result.json`` go (``None``: nowhere).
        resume: continue from ``out_dir/checkpoint.pt`` if it exists (to the identical result).
        progress: tqdm bars over each epoch's training steps and evaluation batches; default: only on a
            terminal.
        log: receives the fixed-width table lines (``None``: silent).
        splits: the loaded dataset, to share one load across runs (must match ``config``).
        stop_after: stop after this many epochs in total (simulates an interruption; no result.json).
        on_epoch: called with each newly trained epoch's row once its checkpoint is written (not for the rows
            a resumed run restores); an exception it raises stops the run there, resumable (e.g. pruning by
            :mod:`gradgeo.experiments.tune`).
        tensorboard: also write every epoch's row as TensorBoard scalars to ``out_dir/tensorboard``
            (:mod:`gradgeo.training.tensorboard`, extra ``gradgeo[tensorboard]``); the rows of a channel-metric
            optimizer then also hold its strength (``lam``, or ``sigma`` for ``laplacian``) and the epoch's
            mean gradient norm before and after the transform (``grad_norm_before``, ``grad_norm_after``,
            :meth:`~gradgeo.channel.optim.ChannelDirected.pop_grad_norms`).

    Returns:
        One dict per epoch: ``epoch``, ``train_loss``, ``train_acc``, ``val_acc``, ``test_loss``,
            ``test_acc``, ``lr``, ``time`` (and the fields ``tensorboard`` adds).
    """

    return fit(config, classifier(config), out_dir, resume=resume, progress=progress, log=log, splits=splits,
               stop_after=stop_after, on_epoch=on_epoch, tensorboard=tensorboard)


def classifier(config: TrainConfig) -> Callable[[dict[str, int]], tuple[nn.Module, Objective]]:
    """The ``build`` of :func:`fit` for a classifier: ``config``'s model with the dataset's ``num_classes`` and
    ``in_channels`` and its model options, and cross-entropy with its label smoothing and test-time
    augmentation."""
    return lambda model_args: (build_model(config.model, **model_args, **config.model_kwargs()),
                               CrossEntropy(config.label_smoothing, tta=config.tta))


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
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
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
        out_dir, resume, progress, log, splits, stop_after: as in :func:`train`.
        on_epoch: as in :func:`train`; every rank calls it with the same row.
        tensorboard: as in :func:`train`, with the gradient norms and strength of the optimizer built here.

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
    if config.precision == "bf16" and device.type == "cpu" and (reason := _slow_bf16_reason()) is not None:
        warnings.warn(f"--precision bf16 (bfloat16 autocast) is likely slower than fp32 here: {reason}, so "
                      "bfloat16 is emulated (measured 15-50x slower on an AVX2-only machine); use --precision fp32",
                      stacklevel=2)
    progress = wants_bars(progress) and ctx.is_main
    log = log if ctx.is_main else None
    splits = (splits or load_splits(config)).to(device)
    if len(splits.train_y) < config.batch_size:  # no full batch: an epoch would have no step
        raise ValueError(f"batch_size {config.batch_size} is larger than the {len(splits.train_y)} training images: "
                         "lower --batch-size (or raise --train-size)")
    out = Path(out_dir) if out_dir is not None else None
    with contextlib.ExitStack() as held:
        if out is not None:
            # rank 0 looks before any rank writes; every rank gets its verdict
            problem = ctx.from_main(_run_folder_problem(out, resume) if ctx.is_main else None)
            if problem:
                raise ValueError(problem)
            out.mkdir(parents=True, exist_ok=True)
            if ctx.is_main:  # one writer per run folder; looked at again under the lock (another may have written)
                held.enter_context(hold_folder(out))
                if (problem := _run_folder_problem(out, resume)) is not None:
                    raise ValueError(problem)
        return _run(config, build, out, ctx, splits, progress, log, resume, stop_after, on_epoch, tensorboard)


def _run(config: TrainConfig, build: Callable[[dict[str, int]], tuple[nn.Module, Objective]], out: Path | None,
         ctx: ddp.Context, splits: DatasetSplits, progress: bool, log: Callable[[str], None] | None, resume: bool,
         stop_after: int | None, on_epoch: Callable[[dict[str, Any]], None] | None, tensorboard: bool
         ) -> list[dict[str, Any]]:
    """:func:`fit` once its run folder is checked (and held): build, train, write."""
    device = ctx.device
    torch.manual_seed(config.seed)
    model_args = {"num_classes": splits.num_classes, "in_channels": splits.image_shape[0]}
    model, objective = build(model_args)
    checkpoint_path = out / CHECKPOINT if out is not None else None
    resuming = resume and checkpoint_path is not None and checkpoint_path.exists()
    if not resuming:  # a resumed model's data-dependent weights come back with its checkpoint
        init_from_data(model, splits)
    model = model.to(  # type: ignore[call-overload]  # Module.to takes memory_format; torch's overloads omit it
        device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)
    objective.context = ctx
    objective.show_progress = progress
    probe(model, objective, splits, config.model)
    optimizer = create_optimizer(model, config.optimizer, **config.optimizer_defaults())
    if tensorboard and ctx.is_main and isinstance(optimizer, ChannelDirected):
        optimizer.track_grad_norms = True
    augment = config.augment if config.augment is not None else config.dataset.startswith("cifar")
    loader = splits.loader("train", config.batch_size, shuffle=True, drop_last=True, seed=config.seed,
                           augment=Augment(padding=config.crop_padding, flip=True) if augment else None, rank=ctx.rank,
                           world_size=ctx.world_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.schedule, config.epochs, len(loader)))
    wrapped = ctx.wrap(model)
    forward = torch.compile(wrapped) if config.compile else wrapped
    if config.precision == "bf16":
        forward = _bf16_autocast(forward, device.type)
    # an objective that averages its gradients over the ranks itself: DDP reduces nothing (and prepares nothing)
    no_sync = (wrapped.no_sync if isinstance(wrapped, DistributedDataParallel) and objective.reduces_gradients
               else contextlib.nullcontext)  # ctx.wrap gives a DistributedDataParallel when distributed

    history: list[dict[str, Any]] = []
    if resuming and checkpoint_path is not None:
        state = read_checkpoint(checkpoint_path, map_location=device)
        changed = config.describe_changes(state["config"], "the checkpoint")
        if changed:
            raise ValueError(f"{checkpoint_path} was written by another configuration (it differs in {changed}); "
                             "resume with the same settings, or use a new --out folder to train with these")
        restore(checkpoint_path, state, {"model": model, "optimizer": optimizer, "scheduler": scheduler,
                                         "objective": objective}, "delete it (--resume then starts the run over)")
        history = state["history"]
    if out is not None and ctx.is_main:  # the metrics file always matches the checkpoint it sits beside
        write_file(out / METRICS, "".join(json.dumps(row) + "\n" for row in history).encode())
    resumed_epochs = len(history)
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
        batches = progress_bar(loader.epoch(epoch), len(loader), f"epoch {epoch + 1}/{config.epochs}", progress)
        for step, (x, y) in enumerate(batches, epoch * len(loader)):
            if config.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with no_sync():
                objective.backward(forward(x), y, step / total_steps)
            objective.step(optimizer)
            scheduler.step()
        row = {"epoch": epoch + 1, **objective.train_metrics()}  # every rank: sums over ranks
        if ctx.is_main:  # one rank evaluates (on the unwrapped model); the others receive its row
            row.update(objective.evaluate(model, splits), lr=lr, time=time.perf_counter() - started)
            row.update(_optimizer_fields(optimizer) if tensorboard else {})
        row = ctx.from_main(row)
        diverged = sorted(key for key, value in row.items() if not _all_finite(value))
        if diverged:  # stop before a NaN reaches metrics.jsonl or the checkpoint (the last good one stays)
            raise FloatingPointError(
                f"the run diverged at epoch {epoch + 1}: {', '.join(f'{k} = {row[k]}' for k in diverged)}; train "
                f"again with a lower learning rate (optimizer {config.optimizer!r}, lr {config.lr})")
        history.append(row)
        if log is not None:
            log(objective.format_row(row))
        if out is not None and ctx.is_main:
            with open(out / METRICS, "a") as f:
                f.write(json.dumps(row) + "\n")
            _atomic_save({"config": dataclasses.asdict(config), "model_args": model_args, "model": model.state_dict(),
                          "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                          "objective": objective.state_dict(), "history": history}, out / CHECKPOINT)
        if board is not None:
            board.write(row)
        if on_epoch is not None:
            on_epoch(row)
    if board is not None:
        board.close()
    trained_now = len(history) > resumed_epochs  # a finished run resumed again writes nothing
    if out is not None and ctx.is_main and len(history) == config.epochs and (
            trained_now or not (out / RESULT).exists()):
        _atomic_save({"config": dataclasses.asdict(config), "history": history,
                      "final_test_acc": history[-1]["test_acc"],
                      **({"best_val_acc": max(r["val_acc"] for r in history)}
                         if history[-1].get("val_acc") is not None else {}),
                      **objective.result_fields(model, splits)}, out / RESULT)
    return history
