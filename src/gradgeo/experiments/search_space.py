"""What ``gradgeo tune`` searches for one optimizer spec: the numbers the spec leaves open (learning rate, the
options its metric declares a search range for: the strength ``lam`` or ``sigma`` of a built-in metric, those of a
registered one; optionally the weight decay), each on a log scale over a range, and how a point in that space is
written back as a spec string (rounded to 3 significant digits, so the string reproduces the trial)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from gradgeo.channel.factory import parse_spec
from gradgeo.channel.registry import metric_info

__all__ = ["EDGE_FRACTION", "WEIGHT_DECAY_RANGE", "Dimension", "SearchSpace", "edges", "search_space"]

#: the default weight-decay range when weight decay is searched
WEIGHT_DECAY_RANGE = (5e-5, 5e-3)
_SIGNIFICANT = 3


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One searched number: ``name`` (``lr``, ``weight_decay``, or a metric option: ``lam``, ``sigma`` ...) on a log
    scale in ``[low, high]``, written into the spec's base (``part="base"``) or metric (``"metric"``) options."""

    name: str
    low: float
    high: float
    part: str

    @property
    def decades(self) -> float:
        return math.log10(self.high / self.low)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The searched numbers of one optimizer spec."""

    spec: str
    dimensions: tuple[Dimension, ...]

    def spec_with(self, values: dict[str, float]) -> str:
        """The spec string with each searched value written into its part, e.g. ``sgd:lr=0.1+h0:lam=2.5``."""
        parts = self.spec.split("+")
        for dim in self.dimensions:
            index = 0 if dim.part == "base" else 1
            separator = "," if ":" in parts[index] else ":"
            # 1e+30 would read as two specs: write 1e30
            parts[index] += f"{separator}{dim.name}={values[dim.name]:g}".replace("e+", "e")
        return "+".join(parts)

    def describe(self) -> str:
        """E.g. ``lr in [0.005, 0.5] x lam in [1, 100], log scales, 4 decades``."""
        ranges = " x ".join(f"{d.name} in [{d.low:g}, {d.high:g}]" for d in self.dimensions)
        return f"{ranges}, log scale{'s' if len(self.dimensions) > 1 else ''}, {self.decades:g} decades"

    @property
    def decades(self) -> float:
        """The size of the space: the sum of its log10 ranges."""
        return round(sum(d.decades for d in self.dimensions), 6)


def _range(option: str, values: Sequence[float] | None, default: tuple[float, float]) -> tuple[float, float]:
    if values is None:
        return default
    low, high = (float(v) for v in values)
    if not (0 < low < high and math.isfinite(high)):
        raise ValueError(f"--{option} must be two finite numbers 0 < LOW < HIGH (a log-scale range to search), "
                         f"got {low:g} {high:g}: the search space would be empty")
    return low, high


def search_space(spec: str, lr: float, *, lr_range: Sequence[float] | None = None,
                 strength_range: Sequence[float] | None = None,
                 weight_decay_range: Sequence[float] | None = None) -> SearchSpace:
    """What tuning ``spec`` searches: the numbers it leaves open (see the module docstring).

    Args:
        spec: an optimizer spec; options it writes are fixed.
        lr: the learning rate the default range is centred on (``lr / 10`` to ``lr * 10``).
        lr_range, strength_range, weight_decay_range: ``(low, high)`` instead of the defaults; weight decay is
            searched only when ``weight_decay_range`` is given. The metric options' ranges are those their metric
            declares (:class:`~gradgeo.channel.registry.MetricOption`); ``strength_range`` replaces it when the
            spec leaves one open.

    Raises:
        ValueError: an unknown base or metric, a bad range, ``strength_range`` for a spec that leaves several metric
            options open, or nothing left to search.
    """
    parsed = parse_spec(spec)
    dimensions = []
    if "lr" not in parsed.base_options:
        dimensions.append(Dimension("lr", *_range("lr-range", lr_range, (lr / 10, lr * 10)), "base"))
    options = metric_info(parsed.metric).options
    ranges: dict[str, tuple[float, float]] = {}
    for key, option in options.items():
        if option.search is not None and key not in parsed.metric_options:
            ranges[key] = option.search
    if strength_range is not None and len(ranges) > 1:
        raise ValueError(f"--strength-range is the range of one searched metric option, but {spec!r} leaves "
                         f"{', '.join(ranges)} open: write all but one in the spec (e.g. {parsed.metric}:"
                         f"{next(iter(ranges))}=...), or drop --strength-range to search each in its metric's range")
    for key, default in ranges.items():
        dimensions.append(Dimension(key, *_range("strength-range", strength_range, default), "metric"))
    if weight_decay_range is not None and "weight_decay" not in parsed.base_options:
        dimensions.append(Dimension("weight_decay", *_range("weight-decay-range", weight_decay_range,
                                                             WEIGHT_DECAY_RANGE), "base"))
    if not dimensions:
        fixed = {**{k: v for k, v in parsed.base_options.items() if k in ("lr", "weight_decay")},
                 **{k: v for k, v in parsed.metric_options.items() if options[k].search is not None}}
        written = ", ".join(f"{k}={v}" for k, v in fixed.items())
        raise ValueError(f"nothing to tune in {spec!r}: the spec fixes {written}; drop them from the spec (or give "
                         "--weight-decay-range) to search them")
    return SearchSpace(parsed.text, tuple(dimensions))


#: the outer fraction of a log-scale range (each side) where a best value counts as on the range's edge
EDGE_FRACTION = 0.1


def edges(best_params: dict[str, float], search_space: Sequence[Sequence[Any]]) -> dict[str, dict[str, Any]]:
    """The searched numbers whose best value lies in the outer :data:`EDGE_FRACTION` of its log-scale range:
    ``{name: {"edge": "low" | "high", "value", "range", "suggested"}}``, ``suggested`` being the same-sized
    range centred on the best value (where to tune again, unless the edge is a hard limit).

    Example:
        >>> edges({"lr": 0.9, "lam": 3.0}, [["lr", 0.01, 1.0], ["lam", 1.0, 100.0]])["lr"]["edge"]
        'high'
    """
    found: dict[str, dict[str, Any]] = {}
    for name, low, high in search_space:
        value = best_params.get(name)
        if value is None:
            continue
        position = math.log(value / low) / math.log(high / low)
        if EDGE_FRACTION < position < 1 - EDGE_FRACTION:
            continue
        half = math.sqrt(high / low)
        found[name] = {"edge": "low" if position <= EDGE_FRACTION else "high", "value": value,
                       "range": [low, high], "suggested": [float(f"{value / half:.3g}"), float(f"{value * half:.3g}")]}
    return found
