"""CNNs for the experiments, built by name: CIFAR ResNets, VGG with BatchNorm, and a small CNN.

Every model takes ``N x C x H x W`` float images with 28x28 or 32x32 resolution and any channel count, and
returns ``N x num_classes`` logits. All have a ``width`` multiplier of their channel counts. Anytime
(multi-exit) networks return one logits tensor per exit and have their own registry,
:func:`build_anytime_model` (:mod:`gradgeo.models.anytime`); so do segmentation networks (per-pixel logits,
:func:`build_segmentation_model`: ``"unet"``) and GANs (:func:`build_gan`: ``"dcgan"``).

Example:
    >>> import torch
    >>> from gradgeo.models import build_model
    >>> model = build_model("resnet20", num_classes=10, in_channels=3, width=2)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from torch import nn

from gradgeo.models.airbench import AirbenchNet
from gradgeo.models.anytime import (
    ANYTIME_MODELS,
    AnytimeNetwork,
    AnytimePrediction,
    anytime_predict,
    build_anytime_model,
    exit_flops,
)
from gradgeo.models.dcgan import GAN, DCGANDiscriminator, DCGANGenerator, GANOutput
from gradgeo.models.imported import build_imported, is_import_path, parse_model_options
from gradgeo.models.resnet import BasicBlock, CifarResNet
from gradgeo.models.small_cnn import SmallCNN
from gradgeo.models.unet import UNet
from gradgeo.models.vgg import VGG

__all__ = ["ANYTIME_MODELS", "GAN", "GAN_MODELS", "MODELS", "SEGMENTATION_MODELS", "VGG", "AirbenchNet",
           "AnytimeNetwork", "AnytimePrediction", "BasicBlock", "CifarResNet", "DCGANDiscriminator", "DCGANGenerator",
           "GANOutput", "SmallCNN", "UNet", "anytime_predict", "build_anytime_model", "build_gan", "build_model",
           "build_segmentation_model", "exit_flops", "is_import_path", "parse_model_options"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "resnet20": partial(CifarResNet, 20),
    "resnet32": partial(CifarResNet, 32),
    "resnet56": partial(CifarResNet, 56),
    "vgg11": partial(VGG, 11),
    "vgg16": partial(VGG, 16),
    "small_cnn": SmallCNN,
    "airbench": AirbenchNet,
}

MODELS: tuple[str, ...] = tuple(_REGISTRY)
#: per-pixel classifiers (``N x C x H x W`` in, ``N x num_classes x H x W`` logits out)
SEGMENTATION_MODELS: tuple[str, ...] = ("unet",)
#: generator + discriminator pairs
GAN_MODELS: tuple[str, ...] = ("dcgan",)


def _other_registry(name: str) -> str:
    if name in ANYTIME_MODELS:
        return " (an anytime model: use build_anytime_model)"
    if name in SEGMENTATION_MODELS:
        return " (a segmentation model: use build_segmentation_model, or --task segment)"
    if name in GAN_MODELS:
        return " (a GAN: use build_gan, or --task gan)"
    return ""


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: object) -> nn.Module:
    """Build a registered model, freshly initialized (Kaiming-normal convolutions, identity BatchNorm).

    Args:
        name: one of :data:`MODELS`: ``"resnet20"``, ``"resnet32"``, ``"resnet56"``, ``"vgg11"``,
            ``"vgg16"``, ``"small_cnn"``, ``"airbench"``; or a model of your own by import path,
            ``"package.module:callable"``: a factory called with ``num_classes``, ``in_channels`` and
            ``**kwargs`` that returns an ``nn.Module`` (:mod:`gradgeo.models.imported`).
        num_classes: number of output logits.
        in_channels: input image channels (1 for (Fashion-)MNIST, 3 for CIFAR).
        **kwargs: passed to the model's constructor; all built-in models accept ``width`` (channel multiplier,
            default 1).

    Returns:
        The model, in training mode, on the CPU (seed ``torch.manual_seed`` first for a reproducible init).

    Raises:
        ValueError: unknown ``name`` or a bad argument.

    Example:
        >>> import torch
        >>> build_model("small_cnn", in_channels=1)(torch.zeros(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """
    if is_import_path(name):
        return build_imported(name, num_classes, in_channels, **kwargs)
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}{_other_registry(name)}; known models: {', '.join(MODELS)}, or "
                         "package.module:callable for a model of your own")
    return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


def build_segmentation_model(name: str, num_classes: int, in_channels: int = 1, **kwargs: Any) -> nn.Module:
    """Build a registered segmentation model (one of :data:`SEGMENTATION_MODELS`): per-pixel logits.

    Args:
        name: ``"unet"`` (:class:`UNet`).
        num_classes: classes per pixel, background included.
        in_channels: input image channels.
        **kwargs: passed to the constructor (``width``, ``base``, ``depth``).

    Example:
        >>> import torch
        >>> build_segmentation_model("unet", num_classes=11)(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 11, 64, 64])
    """
    if name not in SEGMENTATION_MODELS:
        raise ValueError(f"unknown segmentation model {name!r}{_other_registry(name)}; "
                         f"known segmentation models: {', '.join(SEGMENTATION_MODELS)}")
    return UNet(num_classes=num_classes, in_channels=in_channels, **kwargs)


def build_gan(name: str, in_channels: int = 1, image_size: int = 28, *, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, latent_dim: int = 64, width: float = 1.0) -> GAN:
    """Build a registered GAN (one of :data:`GAN_MODELS`) as one :class:`GAN` module.

    Args:
        name: ``"dcgan"`` (:class:`DCGANGenerator` and :class:`DCGANDiscriminator`).
        in_channels: image channels.
        image_size: image height = width, a multiple of 4.
        mean, std: per-channel normalization of the real images on the [0, 1] scale (default 0.5 and 0.5:
            the discriminator sees [-1, 1]).
        latent_dim: size of the generator's noise vector.
        width: multiplier of both players' channel counts.

    Example:
        >>> build_gan("dcgan", latent_dim=16).sample(3).shape
        torch.Size([3, 1, 28, 28])
    """
    if name not in GAN_MODELS:
        raise ValueError(f"unknown GAN {name!r}{_other_registry(name)}; known GANs: {', '.join(GAN_MODELS)}")
    mean = [0.5] * in_channels if mean is None else list(mean)
    std = [0.5] * in_channels if std is None else list(std)
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean and std need one value per channel ({in_channels}), got {len(mean)} and {len(std)}")
    generator = DCGANGenerator(latent_dim, in_channels, width, image_size)
    return GAN(generator, DCGANDiscriminator(in_channels, width, image_size), mean, std)
