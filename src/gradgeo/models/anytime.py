"""Anytime (multi-exit) networks: a branched ResNet and recursively nested networks (DESIGN.md section 3).

An anytime network is a sequence of K stages; stage k ends in exit k. Running the stages one after another
gives a prediction after each, every layer is computed once, and the computation can stop after any exit:

    model = build_anytime_model("nested_depth", num_classes=10, in_channels=1)
    for k, logits in enumerate(model.exits(x), 1):   # stage after stage; stop whenever
        ...
    model(x)                                         # all K logits, first exit first

Every stage owns its layers and its exit head (``model.stages[k]``, an ``nn.Module``), and stage k reads
only what stages 1..k computed: exit k depends on the parameters of stages 1..k and nothing else.

* :class:`BranchedResNet`: a ResNet trunk of K stages (16, 32, 64, 128 channels, strides 1, 2, 2, 2) with
  an exit head after each stage.
* :class:`NestedDepthNet`: stage 1 is a small ResNet; each later stage interlaces one new residual block
  after every block of the network so far, each reading the stored activation it follows, which doubles
  the depth (and the compute) with every exit.
* :class:`NestedWidthNet`: stage 1 is a small plain CNN; each later stage adds channels to every layer that
  read the previous layer's old and new channels (old channels never read new ones), doubling the width.

Per-exit cost is measured, not guessed: :func:`exit_flops` counts the FLOPs of each stage with
``torch.utils.flop_counter.FlopCounterMode``; :func:`anytime_predict` stops at a FLOP or a time budget.

References:
    Wan, Hoffmann, Lu, Maire, "Orthogonalized SGD and Nested Architectures for Anytime Neural Networks",
    ICML 2020 (the nested designs here are the project's own derivation from its abstract, DESIGN.md 3).
    Huang et al., "Multi-Scale Dense Networks for Resource Efficient Image Classification", ICLR 2018.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from gradgeo.models.blocks import check_model_args, conv_bn_relu, init_weights, scale_channels
from gradgeo.models.resnet import BasicBlock

__all__ = [
    "ANYTIME_MODELS",
    "AnytimeNetwork",
    "AnytimePrediction",
    "BranchedResNet",
    "ExitHead",
    "NestedDepthNet",
    "NestedWidthNet",
    "anytime_predict",
    "build_anytime_model",
    "exit_flops",
]


def _check_count(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


class ExitHead(nn.Module):
    """An exit classifier: 3x3 conv-BN-ReLU (same width), global average pooling, linear.

    The convolution lets an early exit adapt features that the trunk also shapes for later stages.

    Args:
        in_channels: channels of the features the exit reads.
        num_classes: number of logits.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(*conv_bn_relu(in_channels, in_channels))
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class AnytimeNetwork(nn.Module):
    """Base class: K stages run in order, stage k returns ``(state, logits of exit k)``.

    ``stages[k]`` is called as ``state, logits = stages[k](state)`` with the input image as the first
    state; the state is whatever the next stage reads (a tensor, or the list of stored activations of a
    nested network). Subclasses build ``self.stages``; each stage holds its own layers and exit head, so
    :meth:`stage_parameters` partitions the parameters.
    """

    stages: nn.ModuleList

    @property
    def num_exits(self) -> int:
        """K, the number of exits (one per stage)."""
        return len(self.stages)

    def exits(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Run the stages one after another and yield each exit's logits as soon as it is computed.

        Every layer runs once; stopping the iteration skips the remaining stages entirely.

        Args:
            x: images ``N x C x H x W``.

        Returns:
            An iterator over the K logits tensors ``N x num_classes``, first exit first.
        """
        state: object = x
        for stage in self.stages:
            state, logits = stage(state)
            yield logits

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All K exits' logits, first exit first (the same computation as iterating :meth:`exits`)."""
        return list(self.exits(x))

    def stage_parameters(self, k: int) -> list[nn.Parameter]:
        """The parameters of stage ``k`` (0-based: ``stage_parameters(0)`` feeds exit 1 and every later one)."""
        _check_count("k", k, 0, self.num_exits - 1)
        return list(self.stages[k].parameters())


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


_REGISTRY: dict[str, Callable[..., AnytimeNetwork]] = {
    "branched_resnet10": partial(BranchedResNet, 1),
    "branched_resnet26": partial(BranchedResNet, 3),
    "nested_depth": NestedDepthNet,
    "nested_width": NestedWidthNet,
}

ANYTIME_MODELS: tuple[str, ...] = tuple(_REGISTRY)


def build_anytime_model(
    name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: object
) -> AnytimeNetwork:
    """Build a registered anytime network, freshly initialized (seed ``torch.manual_seed`` first).

    Args:
        name: one of :data:`ANYTIME_MODELS`: ``"branched_resnet10"``, ``"branched_resnet26"``,
            ``"nested_depth"``, ``"nested_width"``.
        num_classes: logits per exit.
        in_channels: input image channels.
        **kwargs: passed to the constructor; all accept ``width`` and ``num_exits`` (default 4).

    Returns:
        The :class:`AnytimeNetwork`, in training mode, on the CPU.

    Example:
        >>> model = build_anytime_model("branched_resnet10", num_classes=10, in_channels=3, num_exits=3)
        >>> model.num_exits
        3
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown anytime model {name!r}; known anytime models: {', '.join(ANYTIME_MODELS)}")
    return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, **kwargs)


@torch.no_grad()
def exit_flops(model: AnytimeNetwork, image_shape: Sequence[int]) -> list[int]:
    """FLOPs per image spent until each exit, measured with ``torch.utils.flop_counter.FlopCounterMode``.

    One image of ``image_shape`` runs through the stages in evaluation mode; the FLOPs of stage k (its
    layers and its exit head) are counted while it runs. The counter counts matrix products and
    convolutions (2 FLOPs per multiply-add), not element-wise operations such as BatchNorm or ReLU.

    Args:
        model: the anytime network.
        image_shape: ``(C, H, W)`` of one input image.

    Returns:
        ``[F_1, ..., F_K]``: ``F_k`` is the FLOPs of stages 1..k, i.e. of an anytime pass stopped after
        exit k (non-decreasing; ``F_K`` equals the FLOPs of ``model(x)``).

    Example:
        >>> flops = exit_flops(NestedDepthNet(in_channels=1), (1, 28, 28))
        >>> [round(f / flops[0], 1) for f in flops]  # doctest: +SKIP
        [1.0, 2.0, 3.9, 7.6]
    """
    parameter = next(model.parameters())
    x = torch.zeros(1, *image_shape, dtype=parameter.dtype, device=parameter.device)
    was_training = model.training
    model.eval()
    cumulative, total = [], 0
    exits = model.exits(x)
    try:
        for _ in range(model.num_exits):
            with FlopCounterMode(display=False) as counter:
                next(exits)
            total += counter.get_total_flops()
            cumulative.append(total)
    finally:
        model.train(was_training)
    return cumulative


@dataclasses.dataclass(frozen=True)
class AnytimePrediction:
    """What an anytime inference returned: the latest exit's logits and what it cost.

    Attributes:
        logits: the logits of the last exit that ran, ``N x num_classes``.
        exits_run: how many exits ran (``logits`` is exit ``exits_run``'s, counting from 1).
        all_logits: the logits of every exit that ran, first exit first.
        flops: FLOPs per image spent (from ``exit_flops``), or None when no FLOP table was given.
        seconds: wall-clock time of the call.
    """

    logits: torch.Tensor
    exits_run: int
    all_logits: list[torch.Tensor]
    flops: int | None
    seconds: float


@torch.no_grad()
def anytime_predict(
    model: AnytimeNetwork,
    x: torch.Tensor,
    *,
    flop_budget: float | None = None,
    time_budget: float | None = None,
    flops: Sequence[int] | None = None,
) -> AnytimePrediction:
    """Anytime inference: run stage after stage and return the latest exit's prediction within a budget.

    The first exit always runs (there is always a prediction). Stage k+1 then starts only if

    * ``flop_budget``: the FLOPs per image up to exit k+1 (``flops[k]``) do not exceed it (a hard cap);
    * ``time_budget``: fewer than ``time_budget`` seconds have passed since the call began. A stage that
      has started runs to its end, so the call can overrun by one stage; use a FLOP budget for a hard cap.

    No layer is computed twice: the stages share their stored activations (:meth:`AnytimeNetwork.exits`).
    The model's train/eval mode is left as it is (call ``model.eval()`` first for inference).

    Args:
        model: the anytime network.
        x: images ``N x C x H x W``.
        flop_budget: FLOPs per image allowed (needs ``flops``, or measures them with :func:`exit_flops`).
        time_budget: seconds after which no new stage starts.
        flops: the per-exit cumulative FLOPs from :func:`exit_flops` (measure once, reuse).

    Returns:
        An :class:`AnytimePrediction`.

    Example:
        >>> model = NestedDepthNet(in_channels=1).eval()
        >>> table = exit_flops(model, (1, 28, 28))
        >>> result = anytime_predict(model, torch.zeros(5, 1, 28, 28), flop_budget=table[1], flops=table)
        >>> result.exits_run, result.flops == table[1]
        (2, True)
    """
    for name, budget in (("flop_budget", flop_budget), ("time_budget", time_budget)):
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                   or math.isnan(budget) or budget < 0):
            raise ValueError(f"{name} must be a number >= 0 or None, got {budget!r}")
    if flops is None and flop_budget is not None:
        flops = exit_flops(model, x.shape[1:])
    if flops is not None and len(flops) != model.num_exits:
        raise ValueError(f"flops must hold one cumulative count per exit ({model.num_exits}), got {len(flops)}")
    started = time.perf_counter()
    outputs: list[torch.Tensor] = []
    for logits in model.exits(x):
        outputs.append(logits)
        k = len(outputs)
        if k == model.num_exits:
            break
        if flop_budget is not None and flops[k] > flop_budget:
            break
        if time_budget is not None and time.perf_counter() - started >= time_budget:
            break
    k = len(outputs)
    return AnytimePrediction(outputs[-1], k, outputs, None if flops is None else int(flops[k - 1]),
                             time.perf_counter() - started)
