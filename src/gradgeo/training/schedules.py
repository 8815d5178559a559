"""Learning-rate schedules by name: the multiplier of the base learning rate at each step of a run."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["SCHEDULES", "lr_lambda"]

SCHEDULES = ("cosine", "step", "constant", "triangle")


def lr_lambda(schedule: str, epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    """``step -> multiplier`` of schedule ``schedule`` over ``epochs * steps_per_epoch`` steps: per-step cosine to 0,
    ``"step"`` (x0.1 at 50% and 75%), ``"constant"``, or ``"triangle"`` (linear from 0.2x up to 1x at 23% of
    the steps, then linear down to 0.07x: the airbench recipe's).

    Example:
        >>> f = lr_lambda("triangle", 10, 10)
        >>> round(f(0), 2), round(f(23), 2), round(f(100), 2)
        (0.2, 1.0, 0.07)
    """
    total = epochs * steps_per_epoch
    if schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    if schedule == "triangle":
        peak = max(1, round(0.23 * total))
        return lambda step: (0.2 + 0.8 * step / peak if step < peak
                             else 1.0 - 0.93 * min(step - peak, total - peak) / max(1, total - peak))
    if schedule == "step":
        return lambda step: 0.1 ** ((step >= total // 2) + (step >= (3 * total) // 4))
    return lambda step: 1.0
