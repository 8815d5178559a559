"""A small U-Net for semantic segmentation, with ConvTranspose upsampling."""

from __future__ import annotations

import torch
from torch import nn

from gradgeo.models.blocks import check_model_args, conv_bn_relu, init_weights, scale_channels

__all__ = ["UNet"]


class UNet(nn.Module):
    """Encoder-decoder with skip connections: per level two conv-BN-ReLU, 2x2 max-pool down, and a 2x2 stride-2
    ConvTranspose up whose output is concatenated with the encoder's features of the same resolution.

    Channels ``base * 2**level`` (level 0 .. ``depth``; ``depth`` is the bottleneck), times ``width``. The
    ConvTranspose weights have shape ``(in, out, 2, 2)``: their output-channel axis is dim 1, the axis
    :class:`~gradgeo.ChannelDirected` smooths them along (it knows the module type).

    Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015.

    Args:
        num_classes: output channels (per-pixel logits), background included.
        in_channels: input image channels.
        width: multiplier of the channel counts.
        base: channels of the first level (before ``width``).
        depth: number of 2x downsamplings; input height and width must be divisible by ``2**depth``.

    Example:
        >>> UNet(num_classes=11, in_channels=1)(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 11, 64, 64])
    """

    def __init__(self, num_classes: int = 11, in_channels: int = 1, width: float = 1.0, base: int = 16,
                 depth: int = 3) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels, width)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
        channels = [scale_channels(base * 2**level, width) for level in range(depth + 1)]
        self.depth = depth
        self.down = nn.ModuleList()
        previous = in_channels
        for c in channels:
            self.down.append(nn.Sequential(*conv_bn_relu(previous, c), *conv_bn_relu(c, c)))
            previous = c
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(channels[level + 1], channels[level], 2, stride=2)
                                for level in reversed(range(depth)))
        self.merge = nn.ModuleList(nn.Sequential(*conv_bn_relu(2 * channels[level], channels[level]),
                                                 *conv_bn_relu(channels[level], channels[level]))
                                   for level in reversed(range(depth)))
        self.head = nn.Conv2d(channels[0], num_classes, 1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = 2**self.depth
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"UNet of depth {self.depth} needs height and width divisible by {factor}, got "
                             f"{tuple(x.shape[-2:])}")
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)
