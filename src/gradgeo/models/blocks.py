"""Building blocks shared by the CNNs: channel scaling, conv-BN-ReLU, argument checks and initialization."""

from __future__ import annotations

import math

from torch import nn

__all__ = ["MAX_WIDTH", "check_model_args", "check_width", "conv_bn_relu", "init_weights", "scale_channels"]

#: the largest channel multiplier: 64 already makes small_cnn's widest layer 8,192 channels (gigabytes of weights)
MAX_WIDTH = 64.0


def scale_channels(channels: float, width: float) -> int:
    """``channels * width`` rounded to the nearest integer, at least 1.

    Example:
        >>> scale_channels(16, 0.5), scale_channels(64, 1.5)
        (8, 96)
    """
    return max(1, round(channels * width))


def check_width(width: float) -> None:
    """Raise a ``ValueError`` unless ``width`` is a channel multiplier in ``(0, MAX_WIDTH]``."""
    if (
        isinstance(width, bool)
        or not isinstance(width, (int, float))
        or not (math.isfinite(width) and 0 < width <= MAX_WIDTH)
    ):
        raise ValueError(f"width must be a finite number in (0, {MAX_WIDTH:g}], got {width!r}")


def check_model_args(num_classes: int, in_channels: int, width: float) -> None:
    """Raise a ``ValueError`` naming the first bad constructor argument."""
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    check_width(width)


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    """A 3x3 convolution (no bias: BatchNorm has one), BatchNorm and ReLU, as a list to splice in."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions (fan_out, ReLU gain, as torchvision), BatchNorm to identity.

    Linear layers keep PyTorch's default (Kaiming-uniform) initialization.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
