"""Statistics every study reports with: intervals over seeds and paired differences.

One place, on scipy, so no study writes its own t-quantile. A sample is one value per seed
(a run's metric); a paired sample is two values per seed from runs that share their random
numbers (the same workload draws), so the noise common to both cancels in the difference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np
from scipy import stats as _st

#: default two-sided confidence level
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean with a two-sided Student-t confidence interval (``lo``, ``hi``) over ``n`` values.
    With one value (or zero spread) the interval is the point itself; with none, all NaN."""
    mean: float
    lo: float
    hi: float
    n: int
    level: float = LEVEL

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def fmt(self, scale: float = 1.0, spec: str = "{:.3g}") -> str:
        """``mean [lo, hi]`` scaled, e.g. for a markdown table."""
        if math.isnan(self.mean):
            return "—"
        f = spec.format
        return f"{f(self.mean * scale)} [{f(self.lo * scale)}, {f(self.hi * scale)}]"


def mean_ci(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of ``values`` (NaNs dropped) and its t-interval at ``level``."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    m = float(x.mean())
    if n == 1:
        return Interval(m, m, m, 1, level)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    if sem == 0.0:
        return Interval(m, m, m, n, level)
    lo, hi = _st.t.interval(level, n - 1, loc=m, scale=sem)
    return Interval(m, float(lo), float(hi), n, level)


def paired_diff_ci(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of ``a[i] - b[i]`` over pairs (seeds) with its t-interval (pairs with a NaN dropped)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {len(a)} and {len(b)}")
    return mean_ci(a - b, level)


def paired_rel_error_ci(test: Sequence[float], ref: Sequence[float], level: float = LEVEL) -> Interval:
    """Relative error ``(test - ref) / ref`` per pair, its mean and t-interval (a ratio per seed,
    so a seed where both moved together counts as agreement)."""
    t, r = np.asarray(test, dtype=float), np.asarray(ref, dtype=float)
    if t.shape != r.shape:
        raise ValueError(f"paired samples must have the same length, got {len(t)} and {len(r)}")
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(r != 0, (t - r) / r, np.nan)
    return mean_ci(rel, level)


def rel_error(value: float, reference: float) -> float:
    """(value - reference) / reference (NaN when the reference is 0)."""
    return (value - reference) / reference if reference else math.nan
