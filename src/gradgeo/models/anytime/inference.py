"""Anytime inference: the measured FLOPs per exit (:func:`exit_flops`) and predictions that stop at a FLOP
or time budget (:func:`anytime_predict`)."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from gradgeo.models.anytime.base import AnytimeNetwork

__all__ = ["AnytimePrediction", "anytime_predict", "exit_flops"]


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
        >>> from gradgeo.models.anytime import NestedDepthNet
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
        >>> from gradgeo.models.anytime import NestedDepthNet
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
        if flops is not None and flop_budget is not None and flops[k] > flop_budget:
            break
        if time_budget is not None and time.perf_counter() - started >= time_budget:
            break
    k = len(outputs)
    return AnytimePrediction(outputs[-1], k, outputs, None if flops is None else int(flops[k - 1]),
                             time.perf_counter() - started)
