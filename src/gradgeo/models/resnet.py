"""CIFAR-style residual networks (He et al. 2016, section 4.2) with projection shortcuts (option B).

Depth ``6n + 2``: a 3x3 stem, three stages of ``n`` basic blocks at ``16, 32, 64`` channels (times
``width``) and strides ``1, 2, 2``, global average pooling and one linear layer. Where a block changes the
shape, its shortcut is a strided 1x1 convolution with BatchNorm (option B, as most modern
re-implementations do); elsewhere it is the identity. Option B adds 2,752 parameters at width 1 to the
option-A counts of the paper (ResNet-20: 269,722 -> 272,474).

References:
    He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016.
"""

from __future__ import annotations

import torch
from torch import nn

from gradgeo.models.blocks import check_model_args, conv_bn_relu, init_weights, scale_channels

__all__ = ["BasicBlock", "CifarResNet"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut: ``relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x))``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (2 halves the resolution).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            *conv_bn_relu(in_channels, out_channels, stride),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.residual(x) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images (28x28 or 32x32, any channel count).

    Args:
        depth: ``6n + 2`` with ``n >= 1`` (20, 32, 44, 56, 110 ...).
        num_classes: outputs of the final linear layer.
        in_channels: input image channels (1 for Fashion-MNIST, 3 for CIFAR).
        width: multiplier of the stage widths ``16, 32, 64``.

    Example:
        >>> model = CifarResNet(20, num_classes=10, in_channels=1)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, width: float = 1.0
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 56 ...), got {depth!r}")
        check_model_args(num_classes, in_channels, width)
        blocks_per_stage = (depth - 2) // 6
        widths = [scale_channels(c, width) for c in (16, 32, 64)]
        self.stem = nn.Sequential(*conv_bn_relu(in_channels, widths[0]))
        stages = []
        channels = widths[0]
        for i, out_channels in enumerate(widths):
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if i > 0 and b == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stages(self.stem(x))
        return self.classifier(features.mean(dim=(2, 3)))
