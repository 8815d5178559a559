"""The hyper-parameters of a run: :class:`TrainConfig`, one record.

:func:`gradgeo.training.engine.fit` checks it before a run starts (:meth:`TrainConfig.validate`), trains by it
and saves it with each checkpoint and result; a resumed run compares it with the checkpoint's
(:meth:`TrainConfig.changed_fields`)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gradgeo.channel.factory import canonical_spec, create_optimizer, parse_spec
from gradgeo.models import is_import_path, parse_model_options
from gradgeo.models.blocks import check_width
from gradgeo.models.imported import import_factory
from gradgeo.training.objective import TTA_LEVELS
from gradgeo.training.schedules import SCHEDULES

__all__ = ["MAX_SEED", "PRECISIONS", "TrainConfig"]

#: the accepted values of :attr:`TrainConfig.precision`
PRECISIONS = ("fp32", "bf16")
#: the largest seed (2**32 - 1); each epoch seeds torch with ``seed * 100_003 + epoch``, far inside its range
MAX_SEED = 2**32 - 1


@dataclasses.dataclass
class TrainConfig:
    """Every hyper-parameter of a run, in one record (saved with each checkpoint and result).

    A task's configuration subclasses it (:class:`~gradgeo.tasks.Task`), and the command line makes each field an
    option (``batch_size``: ``--batch-size``). :meth:`validate` checks every field before a run starts.

    Attributes:
        dataset: ``"fashion-mnist"`` (the default), ``"mnist"``, ``"cifar10"``, ``"cifar100"``, or a dataset of
            your own: ``"npz:FILE"``, ``"folder:DIR"`` or ``"package.module:callable"`` (:mod:`gradgeo.data.arrays`).
        data_dir: the folder that holds the dataset's files; None (the default): the standard places,
            ``$GRADGEO_DATA`` first (:func:`~gradgeo.data.load_dataset`).
        model: a built-in model's name (default ``"small_cnn"``; ``"resnet20"`` ...:
            :func:`~gradgeo.models.build_model`), or ``"package.module:callable"``, a factory of your own
            (:mod:`gradgeo.models.imported`).
        model_options: ``"key=value,..."``, keyword arguments of the model's constructor or factory beyond
            ``num_classes`` and ``in_channels``; ``""`` (the default): none.
        width: the channel-width multiplier of the built-in models, in (0, 64] (default 1.0); leave it at 1.0 for
            a model of your own (give its factory an option instead).
        optimizer: the optimizer spec (:func:`~gradgeo.channel.factory.create_optimizer`): ``"sgd"`` (the
            default), ``"sgd+sobolev:lam=0.1"``, ``"adam:lr=1e-3+h0:lam=2"`` ...; an option the spec writes
            overrides the field of the same name below.
        lr: the base learning rate (> 0), before the schedule's multiplier (default 0.05).
        momentum: the momentum (>= 0, default 0.9) of a base optimizer that takes one (SGD's); one that takes
            none (Adam) ignores it.
        nesterov: Nesterov momentum, for a base that has it (needs ``momentum`` > 0); False (the default) leaves
            the spec's or torch's default.
        weight_decay: the weight decay (>= 0, default 5e-4) of the weights; biases and normalization parameters
            get none.
        epochs: passes over the training set (>= 1, default 10); the schedule spans all of them.
        batch_size: images per step (>= 1, default 128; the training set must hold one full batch); under
            torchrun the global batch, which must divide evenly over the processes.
        schedule: the learning-rate multiplier at each step (:mod:`gradgeo.training.schedules`): ``"cosine"``
            (the default: down to 0 over the run), ``"step"`` (x0.1 at 50% and again at 75% of the steps),
            ``"constant"``, or ``"triangle"`` (linear from 0.2x up to 1x at 23% of the steps, then down to 0.07x:
            the airbench recipe's).
        label_smoothing: the cross-entropy's label smoothing, in [0, 1); 0 (the default): none.
        augment: random crop and horizontal flip of the training batches; None (the default): on for the CIFAR
            datasets, off for the others.
        crop_padding: the random crop's zero padding per side, in pixels (0..16, default 4): a crop translates the
            image by up to this many pixels.
        tta: test-time augmentation of every evaluation (classify): ``"none"`` (the default), ``"flip"`` (the
            mean logits of the image and its mirror image) or ``"flip-translate"`` (also shifted by one pixel: 6
            passes).
        train_size: train on a stratified subset of this many training images (>= 1); None (the default): all of
            them.
        val_size: training images carved out as a stratified validation set (>= 0), so that tuning never sees
            the test set; 0 (the default): none.
        test_size: evaluate on a stratified subset of this many test images (>= 1), for short runs whose every
            epoch would otherwise evaluate the whole test set; None (the default): the whole test set.
        seed: the run's seed, in 0..2**32 - 1 (:data:`MAX_SEED`; default 0): the initialization, the batch
            order, the augmentation and each epoch's randomness inside the model. The validation, training and
            test subsets are drawn with seed 0, not this one, so every run of a comparison sees the same images.
        compile: run the training forward through ``torch.compile`` (default False).
        channels_last: convolution weights and image batches in channels-last (NHWC) memory: faster
            convolutions on CPU (default False).
        precision: ``"fp32"`` (the default), or ``"bf16"``: the training forward under bfloat16 autocast
            (weights, gradients and evaluation stay fp32; an x86 CPU without AVX512-BF16 or AMX emulates it,
            slowly, and warns).
        device: ``"auto"`` (the default: CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``
            or ``"mps"``.
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    model: str = "small_cnn"
    model_options: str = ""
    width: float = 1.0
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    epochs: int = 10
    batch_size: int = 128
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    augment: bool | None = None
    crop_padding: int = 4
    tta: str = "none"
    train_size: int | None = None
    val_size: int = 0
    test_size: int | None = None
    seed: int = 0
    compile: bool = False
    channels_last: bool = False
    precision: str = "fp32"
    device: str = "auto"

    def validate(self) -> TrainConfig:
        """Raise a ValueError naming the bad field and the accepted values."""
        parse_spec(self.optimizer)
        parse_model_options(self.model_options)
        if is_import_path(self.model):
            import_factory(self.model)  # the module imports and the name is callable, before any run starts
            if self.width != 1.0:
                raise ValueError(f"width scales the built-in models; model {self.model!r} is your own: give its "
                                 "factory an option instead (--model-option width=...)")
        try:  # torch's own checks across options (nesterov needs momentum ...), on stand-in parameters: a first
            # layer, a hidden layer and a head (muon steps on the hidden one), and a bias
            stand_ins = [torch.zeros(2, 2, 2, requires_grad=True) for _ in range(3)]
            stand_ins.append(torch.zeros(2, requires_grad=True))
            create_optimizer(stand_ins, self.optimizer, **self.optimizer_defaults())
        except ValueError as error:
            raise ValueError(f"optimizer spec {self.optimizer!r}: {error}") from None
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        if self.tta not in TTA_LEVELS:
            raise ValueError(f"unknown tta {self.tta!r}; expected one of {TTA_LEVELS}")
        padding = self.crop_padding
        if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= padding <= 16:
            raise ValueError(f"crop_padding must be an integer in 0..16 (pixels), got {self.crop_padding!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {PRECISIONS}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        check_width(self.width)
        for name, low in (("lr", "> 0"), ("weight_decay", ">= 0"), ("momentum", ">= 0")):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                    or value < 0 or (low == "> 0" and value == 0)):
                raise ValueError(f"{name} must be a finite number {low}, got {value!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if isinstance(self.val_size, bool) or not isinstance(self.val_size, int) or self.val_size < 0:
            raise ValueError(f"val_size must be an integer >= 0, got {self.val_size!r}")
        if self.train_size is not None and (isinstance(self.train_size, bool) or not isinstance(self.train_size, int)
                                            or self.train_size < 1):
            raise ValueError(f"train_size must be an integer >= 1 (or None: the whole training set), got "
                             f"{self.train_size!r}")
        if self.test_size is not None and (isinstance(self.test_size, bool) or not isinstance(self.test_size, int)
                                           or self.test_size < 1):
            raise ValueError(f"test_size must be an integer >= 1 (or None: the whole test set), got "
                             f"{self.test_size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in 0..{MAX_SEED}, got {self.seed!r}")
        self.resolved_device()
        return self

    def changed_fields(self, saved: dict[str, Any]) -> list[str]:
        """The fields where this config differs from ``saved`` (a ``dataclasses.asdict`` record of a config of
        the same class, e.g. from a checkpoint); a field the record lacks, written before gradgeo had the
        field, counts as its default. Values that mean the same are equal however they are written (optimizer
        specs by what they parse to, data folders by the folder they name, ``device="auto"`` by the device it
        picks here)."""
        defaults, current = dataclasses.asdict(type(self)()), dataclasses.asdict(self)
        return [name for name in sorted(current.keys() | saved.keys())
                if self.canonical(name, saved.get(name, defaults.get(name))) != self.canonical(name, current.get(name))]

    def describe_changes(self, saved: dict[str, Any], where: str) -> str:
        """The fields of :meth:`changed_fields`, each with its value in ``saved`` (``where``) and now."""
        defaults = dataclasses.asdict(type(self)())
        return "; ".join(f"{name}: {saved.get(name, defaults.get(name))!r} in {where}, {getattr(self, name, None)!r} "
                         "now" for name in self.changed_fields(saved))

    def canonical(self, name: str, value: Any) -> Any:
        """``value`` of field ``name`` in a form where settings that mean the same compare equal."""
        if name == "optimizer" and isinstance(value, str):
            with contextlib.suppress(ValueError):  # a spec this version refuses compares as written
                return canonical_spec(value)
        if name == "data_dir" and isinstance(value, str):
            return str(Path(value).expanduser().resolve())
        if name == "device" and value == "auto":
            return str(self.resolved_device())
        return value

    def model_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the model's constructor or factory beyond ``num_classes`` and
        ``in_channels``: the model options, and ``width`` for a built-in model."""
        built_in = {} if is_import_path(self.model) else {"width": self.width}
        return {**built_in, **parse_model_options(self.model_options)}

    def optimizer_defaults(self) -> dict[str, Any]:
        """The keyword defaults :func:`~gradgeo.training.engine.fit` gives
        :func:`~gradgeo.channel.factory.create_optimizer` (options in the optimizer spec override them; a config
        for another task may add some, e.g. Adam's ``betas``)."""
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov or None,
                "weight_decay": self.weight_decay}

    def resolved_device(self) -> torch.device:
        """The device to train on; a ValueError names a device that does not exist on this machine."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ValueError(f"unknown device {self.device!r}; expected auto, cpu, cuda, cuda:N or mps") from None
        available: dict[str, Callable[[], bool]] = {
            "cpu": lambda: True, "cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
        if device.type not in available:
            raise ValueError(f"device {self.device!r} is not supported; expected auto, cpu, cuda, cuda:N or mps")
        if not available[device.type]():
            raise ValueError(f"device {self.device!r} is not available on this machine (this torch build or its "
                             "drivers have none); use --device cpu or auto")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {self.device!r} does not exist: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return device
