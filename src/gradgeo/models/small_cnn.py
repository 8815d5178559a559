"""A small three-layer CNN for quick experiments on 28x28 (or 32x32) images."""

from __future__ import annotations

import torch
from torch import nn

from gradgeo.models.blocks import check_model_args, conv_bn_relu, init_weights, scale_channels

__all__ = ["SmallCNN"]


class SmallCNN(nn.Module):
    """conv(32)-BN-ReLU-maxpool, conv(64)-BN-ReLU-maxpool, conv(128)-BN-ReLU, global average pool, linear.

    Pooling right after the first convolution keeps the two wider layers at 14x14 and 7x7 (for 28x28
    input), which makes a Fashion-MNIST epoch at batch 128 take about 18 s on two CPU cores (pooling after
    the second convolution instead costs about 3x more).

    Args:
        num_classes: outputs of the final linear layer.
        in_channels: input image channels.
        width: multiplier of the widths 32, 64, 128.

    Example:
        >>> SmallCNN(in_channels=1)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels, width)
        c1, c2, c3 = (scale_channels(c, width) for c in (32, 64, 128))
        self.features = nn.Sequential(
            *conv_bn_relu(in_channels, c1),
            nn.MaxPool2d(2),
            *conv_bn_relu(c1, c2),
            nn.MaxPool2d(2),
            *conv_bn_relu(c2, c3),
        )
        self.classifier = nn.Linear(c3, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))
