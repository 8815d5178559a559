"""Multi-seed statistics for reports: mean with a 95% confidence interval, a paired comparison, and Holm's
adjustment when one table compares several specs with one baseline."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

__all__ = ["PairedTest", "Summary", "holm", "mean_ci", "paired_test"]


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean of ``n`` values with the half-width of its 95% Student-t confidence interval."""

    mean: float
    half_width: float
    n: int

    def format(self, scale: float = 100.0, digits: int = 2) -> str:
        if self.n < 2:
            return f"{self.mean * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {self.half_width * scale:.{digits}f}"


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """Mean of the paired differences ``a_i - b_i`` with its 95% CI and the two-sided paired t-test p-value."""

    difference: Summary
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean and the half-width of the Student-t confidence interval (``nan`` width for one value)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"mean_ci needs finite values, got {values[bad[0]]} at index {bad[0]} of {list(values)}")
    mean = sum(values) / n
    if n == 1:
        return Summary(mean, math.nan, 1)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Summary(mean, float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n), n)


def paired_test(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Paired t-test of ``a`` against ``b`` (same seeds, same order); ``p = nan`` with fewer than 2 pairs."""
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"paired_test needs equally many values, got {len(a)} and {len(b)}")
    differences = [x - y for x, y in zip(a, b)]
    summary = mean_ci(differences)
    if len(a) < 2:
        return PairedTest(summary, math.nan)
    if all(d == differences[0] for d in differences):  # zero variance: t undefined
        return PairedTest(summary, 1.0 if differences[0] == 0 else 0.0)
    return PairedTest(summary, float(stats.ttest_rel(a, b).pvalue))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``m`` p-values (family-wise error rate), in the input order.

    Sorted ascending, the k-th smallest (k = 0..m-1) becomes ``max_{j <= k} min(1, (m - j) p_(j))``. ``nan``
    entries (a spec with one seed) stay ``nan`` and do not count towards ``m``.

    References: S. Holm, "A simple sequentially rejective multiple test procedure", Scand. J. Statist. 1979.
    """
    finite = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for k, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - k) * p))
        adjusted[i] = running
    return adjusted
