"""The branched anytime ResNet: a ResNet trunk of K stages with an exit head after each stage."""

from __future__ import annotations

import torch
from torch import nn

from gradgeo.models.anytime.base import AnytimeNetwork, ExitHead, _check_count
from gradgeo.models.blocks import check_model_args, conv_bn_relu, init_weights, scale_channels
from gradgeo.models.resnet import BasicBlock

__all__ = ["BranchedResNet"]


class _BranchedStage(nn.Module):
    """Trunk layers followed by an exit head on their output."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.body(x)
        return x, self.head(x)


class BranchedResNet(AnytimeNetwork):
    """A ResNet trunk of K stages with an exit head after each stage (the branched anytime topology).

    Stage k has ``blocks_per_stage`` basic blocks at ``16 * 2^(k-1) * width`` channels; the first block of
    every stage but the first halves the resolution. Stage 1 starts with a 3x3 stem. Each exit is an
    :class:`ExitHead`. With 4 stages and 3 blocks per stage the trunk has ``8 * 3 + 2 = 26`` layers
    (``"branched_resnet26"``); one block per stage gives ``"branched_resnet10"``.

    Args:
        blocks_per_stage: basic blocks per stage, ``>= 1``.
        num_classes: logits per exit.
        in_channels: input image channels.
        width: channel multiplier.
        num_exits: K, the number of stages and exits, 1..5 (5 stages take 32x32 down to 2x2).

    Example:
        >>> model = BranchedResNet(1, num_classes=10, in_channels=1)
        >>> [tuple(out.shape) for out in model(torch.zeros(2, 1, 28, 28))]
        [(2, 10), (2, 10), (2, 10), (2, 10)]
    """

    def __init__(
        self,
        blocks_per_stage: int = 3,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        num_exits: int = 4,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels, width)
        _check_count("blocks_per_stage", blocks_per_stage, 1, 1000)
        _check_count("num_exits", num_exits, 1, 5)
        channels = scale_channels(16, width)
        stages = []
        for k in range(num_exits):
            out_channels = scale_channels(16 * 2**k, width)
            layers: list[nn.Module] = list(conv_bn_relu(in_channels, channels)) if k == 0 else []
            for b in range(blocks_per_stage):
                layers.append(BasicBlock(channels, out_channels, stride=2 if k > 0 and b == 0 else 1))
                channels = out_channels
            stages.append(_BranchedStage(nn.Sequential(*layers), ExitHead(channels, num_classes)))
        self.stages = nn.ModuleList(stages)
        init_weights(self)


