"""Summaries over seeds: mean +- sample standard deviation, and paired differences with t-intervals.

Two methods are ranked only where the confidence interval of their paired difference (same seeds, same
data order) excludes zero. Both benchmarks (classification `bench`, the detection demo over seeds) use these
functions, so every table computes its intervals the same way. Pure Python: no SciPy needed.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value)."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b), by its continued fraction (modified Lentz evaluation)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast below this point; use the symmetry
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - math.log(a) - (
        math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    )
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * result


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, by bisection on `student_t_cdf` (to about 1e-10)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    while high - low > 1e-10 * max(1.0, high):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if student_t_cdf(middle, df) < p else (low, middle)
    return 0.5 * (low + high)


@dataclass(frozen=True)
class PairedDifference:
    """mean(a_i - b_i) over n pairs, with its two-sided `confidence` t-interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def separated(self) -> bool:
        """True when the interval excludes zero, the only case in which the two are ranked."""
        return self.low > 0.0 or self.high < 0.0

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.2f} (one pair, no interval)"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """Paired difference a - b (a[i] and b[i] share seed i) with a t-interval on n - 1 degrees of freedom.

    With one pair the interval is undefined and is reported as (-inf, inf), so it never separates.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_difference needs two equally long, non-empty lists, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    mean, std = mean_std(diffs)
    if len(diffs) < 2:
        return PairedDifference(mean, -math.inf, math.inf, 1, confidence)
    half = student_t_quantile(0.5 + confidence / 2.0, len(diffs) - 1) * std / math.sqrt(len(diffs))
    return PairedDifference(mean, mean - half, mean + half, len(diffs), confidence)


def paired_to_baseline(
    by_seed: Mapping[str, Mapping[Any, float]], baseline: str, confidence: float = 0.95
) -> dict[str, PairedDifference]:
    """Each method's paired difference to `baseline`, over the seeds both ran ({method: {seed: value}}).

    Methods without a seed in common with the baseline, and the baseline itself, are left out.
    """
    if baseline not in by_seed:
        return {}
    base = by_seed[baseline]
    result = {}
    for method, values in by_seed.items():
        seeds = sorted(set(values) & set(base))
        if method != baseline and seeds:
            result[method] = paired_difference([values[s] for s in seeds], [base[s] for s in seeds], confidence)
    return result
