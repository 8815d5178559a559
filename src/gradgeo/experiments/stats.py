"""Multi-seed statistics for reports: mean with a 95% confidence interval, a paired comparison, and Holm's
adjustment when one table compares several specs with one baseline."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

__all__ = ["PairedTest", "Summary", "holm", "mean_ci", "minimum_detectable_effect", "paired_test"]


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


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference that a two-sided paired t-test of ``n`` pairs at level ``alpha`` detects
    with probability ``power``, when the paired differences have standard deviation ``sd``: the ``delta`` where
    the noncentral t distribution (``n - 1`` degrees of freedom, noncentrality ``delta sqrt(n) / sd``) puts
    ``power`` beyond the test's critical values. ``nan`` with fewer than 2 pairs; 0 when ``sd`` is 0.

    Example:
        >>> round(minimum_detectable_effect(1.0, 10), 2)  # about 1 sd at 10 pairs
        1.0
    """
    from scipy import optimize, stats

    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd < 0 or not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"need sd >= 0 and alpha, power in (0, 1), got sd={sd}, alpha={alpha}, power={power}")
    if sd == 0:
        return 0.0
    df, critical = n - 1, float(stats.t.ppf(1 - alpha / 2, n - 1))

    def shortfall(effect: float) -> float:
        noncentrality = effect * math.sqrt(n) / sd
        # the far tail (the test rejecting in the wrong direction) is below 1e-5 where scipy's nct gives nan
        far = float(stats.nct.sf(critical, df, -noncentrality))
        return float(stats.nct.sf(critical, df, noncentrality)) + (far if math.isfinite(far) else 0.0) - power

    high = sd
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-12 * sd))


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
