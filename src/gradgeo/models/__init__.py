"""CNNs for the experiments, built by name: CIFAR ResNets, VGG with BatchNorm, and a small CNN.

Every model takes ``N x C x H x W`` float images with 28x28 or 32x32 resolution and any channel count, and
returns ``N x num_classes`` logits. All have a ``width`` multiplier of their channel counts. Anytime
(multi-exit) networks return one logits tensor per exit and have their own registry,
:func:`build_anytime_model` (:mod:`gradgeo.models.anytime`).

Example:
    >>> import torch
    >>> from gradgeo.models import build_model
    >>> model = build_model("resnet20", num_classes=10, in_channels=3, width=2)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import nn

from gradgeo.models.anytime import (
    ANYTIME_MODELS,
    AnytimeNetwork,
    AnytimePrediction,
    anytime_predict,
    build_anytime_model,
    exit_flops,
)
from gradgeo.models.resnet import BasicBlock, CifarResNet
from gradgeo.models.small_cnn import SmallCNN
from gradgeo.models.vgg import VGG

__all__ = ["ANYTIME_MODELS", "MODELS", "VGG", "AnytimeNetwork", "AnytimePrediction", "BasicBlock", "CifarResNet",
           "SmallCNN", "anytime_predict", "build_anytime_model", "build_model", "exit_flops"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "resnet20": partial(CifarResNet, 20),
    "resnet32": partial(CifarResNet, 32),
    "resnet56": partial(CifarResNet, 56),
    "vgg11": partial(VGG, 11),
    "vgg16": partial(VGG, 16),
    "small_cnn": SmallCNN,
}

MODELS: tuple[str, ...] = tuple(_REGISTRY)


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: object) -> nn.Module:
    """Build a registered model, freshly initialized (Kaiming-normal convolutions, identity BatchNorm).

    Args:
        name: one of :data:`MODELS`: ``"resnet20"``, ``"resnet32"``, ``"resnet56"``, ``"vgg11"``,
            ``"vgg16"``, ``"small_cnn"``.
        num_classes: number of output logits.
        in_channels: input image channels (1 for (Fashion-)MNIST, 3 for CIFAR).
        **kwargs: passed to the model's constructor; all accept ``width`` (channel multiplier, default 1).

    Returns:
        The model, in training mode, on the CPU (seed ``torch.manual_seed`` first for a reproducible init).

    Raises:
        ValueError: unknown ``name`` or a bad argument.

    Example:
        >>> import torch
        >>> build_model("small_cnn", in_channels=1)(torch.zeros(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """
    if name not in _REGISTRY:
        hint = " (an anytime model: use build_anytime_model)" if name in ANYTIME_MODELS else ""
        raise ValueError(f"unknown model {name!r}{hint}; known models: {', '.join(MODELS)}")
    return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, **kwargs)
