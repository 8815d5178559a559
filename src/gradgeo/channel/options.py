"""The options of the channel metrics: which metrics exist, which options each reads and accepts, their
defaults, and the checks every place that takes them shares (:class:`~gradgeo.channel.optim.ChannelDirected`,
spec strings, param groups)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from gradgeo.channel.transforms import BOUNDARIES, DIRECTIONS

__all__ = ["APPLY_TO", "DEFAULT_LAM", "FLOAT32_MAX", "LAM_RANGES", "METRICS", "METRIC_OPTIONS", "OPTION_DEFAULTS",
           "check_options_used", "validate_options"]

METRICS: tuple[str, ...] = ("h0", "sobolev", "h1", "laplacian", "none")
APPLY_TO: tuple[str, ...] = ("conv", "linear", "vector")

#: lam used when none is given. Provisional, chosen from the scale analysis in DESIGN.md 1b (sobolev at
#: 0.1 keeps the smoothest mode at unit gain); the measured sweeps in results/REPORT.md say what to tune.
DEFAULT_LAM: dict[str, float] = {"h0": 2.0, "sobolev": 0.1, "h1": 0.01}

#: the options each metric reads; giving it another is an error (it would change nothing). lam is the strength of
#: the channel metrics, sigma that of the Laplacian baseline, which smooths the flattened tensor on a ring (no
#: direction, no boundary); only the chain metrics sobolev and h1 have a boundary
METRIC_OPTIONS: dict[str, tuple[str, ...]] = {
    "h0": ("lam", "direction", "apply_to"),
    "sobolev": ("lam", "direction", "boundary", "apply_to"),
    "h1": ("lam", "direction", "boundary", "apply_to"),
    "laplacian": ("sigma", "apply_to"),
    "none": (),
}
#: the value of each option a metric reads when it is not given (lam: :data:`DEFAULT_LAM` of the metric)
OPTION_DEFAULTS: dict[str, Any] = {"direction": "out", "boundary": "neumann", "sigma": 1.0, "apply_to": ("conv",)}


def check_options_used(metric: str, given: Iterable[str]) -> None:
    """Raise a ValueError for an option that ``metric`` does not read (it would be accepted and change nothing),
    naming the metric's own options."""
    unused = [key for key in given if key not in METRIC_OPTIONS.get(metric, ())]
    if unused:
        own = ", ".join(METRIC_OPTIONS[metric]) or "none"
        raise ValueError(f"metric {metric!r} does not use option {unused[0]!r} (it would change nothing); its "
                         f"options: {own}")


#: the largest float32: an option above it overflows the first step on float32 weights
FLOAT32_MAX = 3.4028234663852886e38

#: the lam each metric accepts: where its transform of any gradient with entries below 1e26 stays finite in
#: float32 (h0 and sobolev scale what varies across the channels by up to 1/lam; h1's recurrences overflow
#: near lam C^2 = 1e30)
LAM_RANGES: dict[str, tuple[float, float]] = {"h0": (1e-12, math.inf), "sobolev": (1e-12, math.inf),
                                              "h1": (0.0, 1e12)}


def validate_options(group: Mapping[str, Any]) -> None:
    """Raise a ValueError naming the bad value and the accepted ones."""
    metric = group["metric"]
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    lam = group["lam"]
    if metric in DEFAULT_LAM and (isinstance(lam, bool) or not isinstance(lam, (int, float))
                                  or not math.isfinite(lam) or lam <= 0):
        raise ValueError(f"lam must be a finite number > 0 for metric {metric!r}, got {lam!r}")
    if metric in DEFAULT_LAM and not LAM_RANGES[metric][0] <= lam <= LAM_RANGES[metric][1]:
        low, high = LAM_RANGES[metric]
        raise ValueError(f"lam {lam!r} is outside the range where metric {metric!r} stays finite in float32, "
                         f"[{low:g}, {high:g}]: " + (
                             "below it the transform amplifies the channel differences by 1/lam, so that a "
                             "gradient's entries overflow" if lam < low else
                             "above it every mode but the channel mean is damped below float32's precision and "
                             "the recurrences overflow (use metric 'h0' for the channel mean)"))
    sigma = group["sigma"]
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    if sigma > FLOAT32_MAX:  # (1 + 4 sigma overflows, and the mean's mode is inf * 0)
        raise ValueError(f"sigma must be a finite number >= 0 that float32 holds (at most {FLOAT32_MAX:.3g}), got "
                         f"{sigma!r}")
    if group["direction"] not in DIRECTIONS:
        raise ValueError(f"unknown direction {group['direction']!r}; expected one of {DIRECTIONS}")
    if group["boundary"] not in BOUNDARIES:
        raise ValueError(f"unknown boundary {group['boundary']!r}; expected one of {BOUNDARIES}")
    apply_to = group["apply_to"]
    if isinstance(apply_to, str) or not all(a in APPLY_TO for a in apply_to) or not apply_to:
        raise ValueError(f"apply_to must be a non-empty tuple drawn from {APPLY_TO}, got {apply_to!r}")
    if metric == "laplacian":
        return  # the baseline smooths the flattened tensor; direction does not apply
    if "vector" in apply_to and group["direction"] in ("in", "spatial"):
        raise ValueError(f"direction {group['direction']!r} has no axis for per-channel vectors (bias, norm "
                         "weights): drop 'vector' from apply_to or use direction 'out' or 'flat'")
    if "linear" in apply_to and group["direction"] == "spatial":
        raise ValueError("direction 'spatial' has no axis for Linear weights (no kernel window): drop 'linear' "
                         "from apply_to or use another direction")
