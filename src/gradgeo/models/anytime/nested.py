"""Recursively nested anytime networks (docs/design.md section 3): each stage doubles the depth
(:class:`NestedDepthNet`) or the width (:class:`NestedWidthNet`) of the network so far, reading its
stored activations, so exit k depends only on the parameters of stages 1..k."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from gradgeo.models.anytime.base import AnytimeNetwork, ExitHead, _check_count
from gradgeo.models.blocks import check_model_args, conv_bn_relu, init_weights, scale_channels
from gradgeo.models.resnet import BasicBlock

__all__ = ["NestedDepthNet", "NestedWidthNet"]


class _Link(nn.Module):
    """Carries the new chain from one sequence position to the next: identity, or a strided 1x1 conv + BN
    where the channels or the resolution change (the option-B shortcut of :class:`BasicBlock`)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.project = None
        if stride != 1 or in_channels != out_channels:
            self.project = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.project is None else self.project(x)


class _NestedBase(nn.Module):
    """Stage 1 of :class:`NestedDepthNet`: stem and base blocks; returns every block's output (stored for
    the next stage) and the exit on the last one."""

    def __init__(self, in_channels: int, spec: Sequence[tuple[int, int]], num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_relu(in_channels, spec[0][0]))
        channels, scale = spec[0][0], 1
        blocks = []
        for out_channels, out_scale in spec:
            blocks.append(BasicBlock(channels, out_channels, stride=out_scale // scale))
            channels, scale = out_channels, out_scale
        self.blocks = nn.ModuleList(blocks)
        self.head = ExitHead(channels, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.stem(x)
        sequence = []
        for block in self.blocks:
            x = block(x)
            sequence.append(x)
        return sequence, self.head(x)


class _InterlacedStage(nn.Module):
    """A recursion of :class:`NestedDepthNet`: new blocks ``n_i = block_i(s_i + link_i(n_{i-1}))`` reading
    the stored sequence ``s_1 .. s_M`` of the network so far; returns ``s_1, n_1, s_2, n_2, ..., s_M, n_M``
    (twice as long) and the exit on ``n_M``."""

    def __init__(self, spec: Sequence[tuple[int, int]], num_classes: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(BasicBlock(c, c) for c, _ in spec)
        self.links = nn.ModuleList(
            _Link(c_in, c_out, s_out // s_in) for (c_in, s_in), (c_out, s_out) in zip(spec[:-1], spec[1:])
        )
        self.head = ExitHead(spec[-1][0], num_classes)

    def forward(self, sequence: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        new = [self.blocks[0](sequence[0])]
        for s, block, link in zip(sequence[1:], self.blocks[1:], self.links):
            new.append(block(s + link(new[-1])))
        return [t for pair in zip(sequence, new) for t in pair], self.head(new[-1])


class NestedDepthNet(AnytimeNetwork):
    """Recursively nested anytime network, depth-wise: every recursion interlaces new layers and doubles depth.

    Stage 1 is a small ResNet: a stem and ``3 * blocks_per_level`` basic blocks at 16, 32, 64 channels
    (times ``width``; the first block of each level after the first halves the resolution). Its block
    outputs ``s_1 .. s_M`` are stored. Stage k+1 adds one new residual block after every position of the
    sequence so far,

        n_i = block_i(s_i + link(n_{i-1})),    (n_1 = block_1(s_1)),

    where ``link`` is the identity, or a strided 1x1 conv + BN where the resolution changes, and the
    sequence becomes ``s_1, n_1, s_2, n_2, ..., s_M, n_M`` for the next recursion. New blocks read the stored
    activations of the network so far, which never reads them back: stage k+1 contains stage k unchanged.
    Stage k+1 has as many blocks as stages 1..k together, so the layer count and the compute double with
    every exit (exit costs about 1 : 2 : 4 : 8 for K = 4) and the new chain is twice as long each time.
    Each exit is an :class:`ExitHead` on the last new block.

    Args:
        blocks_per_level: basic blocks per resolution level in stage 1, ``>= 1``.
        num_classes: logits per exit.
        in_channels: input image channels.
        width: channel multiplier.
        num_exits: K, 1..6.

    Example:
        >>> model = NestedDepthNet(num_classes=10, in_channels=1)
        >>> len(model(torch.zeros(2, 1, 28, 28)))
        4
    """

    def __init__(
        self,
        blocks_per_level: int = 1,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        num_exits: int = 4,
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels, width)
        _check_count("blocks_per_level", blocks_per_level, 1, 1000)
        _check_count("num_exits", num_exits, 1, 6)
        # (channels, downsampling factor) of each position of the stored sequence
        spec = [(scale_channels(c, width), scale) for c, scale in ((16, 1), (32, 2), (64, 4))
                for _ in range(blocks_per_level)]
        stages: list[nn.Module] = [_NestedBase(in_channels, spec, num_classes)]
        for _ in range(num_exits - 1):
            stages.append(_InterlacedStage(spec, num_classes))
            spec = [position for position in spec for _ in range(2)]
        self.stages = nn.ModuleList(stages)
        init_weights(self)


class _WidenStage(nn.Module):
    """A recursion of :class:`NestedWidthNet`: ``added[j]`` new channels at every layer j, computed from all
    channels at layer j-1 (the stored old ones and this stage's new ones)."""

    def __init__(self, old: Sequence[int], added: Sequence[int], strides: Sequence[int], num_classes: int) -> None:
        super().__init__()
        # old[0] is the input image's channel count; a layer's input is old[j-1] (+ added[j-1] from j = 2 on)
        inputs = [old[0]] + [o + a for o, a in zip(old[1:-1], added[:-1])]
        self.layers = nn.ModuleList(
            nn.Sequential(*conv_bn_relu(c_in, c_out, stride)) for c_in, c_out, stride in zip(inputs, added, strides)
        )
        self.head = ExitHead(old[-1] + added[-1], num_classes)

    def forward(self, acts: torch.Tensor | list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        if isinstance(acts, torch.Tensor):  # stage 1 reads the image alone
            acts = [acts]
        # acts[0] is the image, acts[j] all channels of the stages so far at layer j (only the image at stage 1)
        widened, new = [acts[0]], None
        for j, layer in enumerate(self.layers, 1):
            below = acts[j - 1] if j - 1 < len(acts) else None  # old channels of layer j-1 (layer 0: the image)
            inputs = [t for t in (below, new) if t is not None]
            new = layer(torch.cat(inputs, 1) if len(inputs) > 1 else inputs[0])
            widened.append(torch.cat([acts[j], new], 1) if j < len(acts) else new)
        return widened, self.head(widened[-1])


class NestedWidthNet(AnytimeNetwork):
    """Recursively nested anytime network, width-wise: every recursion adds channels to every layer.

    The layers are 3x3 conv-BN-ReLU at base widths ``16, 16, 32, 32, 64, 64`` (times ``width``; strides
    1, 1, 2, 1, 2, 1). Stage 1 is that plain CNN. Stage k+1 adds channels to every layer so that the total
    width is ``growth^k`` times the base: the new channels of layer j read all channels of layer j-1, old and
    new; the old channels never read the new ones, so stage k+1 contains stage k unchanged. Each exit is an
    :class:`ExitHead` on all channels of the last layer so far. With the default ``growth = sqrt(2)`` the
    compute about doubles with every exit, as in :class:`NestedDepthNet` (K = 4: widths 45 .. 181 at the end).

    Args:
        num_classes: logits per exit.
        in_channels: input image channels.
        width: channel multiplier of the base widths.
        num_exits: K, 1..6.
        growth: total width multiplier per recursion, in (1, 4].

    Example:
        >>> model = NestedWidthNet(num_classes=10, in_channels=1, num_exits=3)
        >>> [tuple(out.shape) for out in model(torch.zeros(2, 1, 28, 28))]
        [(2, 10), (2, 10), (2, 10)]
    """

    BASE = (16, 16, 32, 32, 64, 64)
    STRIDES = (1, 1, 2, 1, 2, 1)

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        num_exits: int = 4,
        growth: float = math.sqrt(2),
    ) -> None:
        super().__init__()
        check_model_args(num_classes, in_channels, width)
        _check_count("num_exits", num_exits, 1, 6)
        if isinstance(growth, bool) or not isinstance(growth, (int, float)) or not 1 < growth <= 4:
            raise ValueError(f"growth must be a number in (1, 4], got {growth!r}")
        old = [in_channels] + [0] * len(self.BASE)  # channels so far at the image and at every layer
        stages = []
        for k in range(num_exits):
            totals = [scale_channels(c * growth**k, width) for c in self.BASE]
            added = [max(1, t - o) for t, o in zip(totals, old[1:])]
            stages.append(_WidenStage(old, added, self.STRIDES, num_classes))
            old = [old[0]] + [o + a for o, a in zip(old[1:], added)]
        self.stages = nn.ModuleList(stages)
        init_weights(self)
