"""Built-in estimators: turn a stream of samples (task durations, bandwidths) into one value.

Every estimator returns ``prior`` (default None: the policy falls back) until its first
sample. ``update`` is O(1) except the order statistics (sliding median / quantile),
which are O(window). None of them reads ``now`` in ``estimate`` (``estimate_uses_now =
False``), so a :class:`~testbed.policy.base.KeyedEstimator` can cache per-node values.

Cold start beyond ``prior`` (how many samples a node's or function's estimate needs before
it is used, what it falls back to, a floor, Dask-style resets) belongs to the keying, not to
the estimator: :data:`~testbed.policy.base.COLD_START`, given in the same config table.
"""
from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from numbers import Integral, Real

from .base import Estimator
from .registry import register


def _num(name: str, value, lo: float, hi: float = math.inf, lo_open: bool = False) -> float:
    """``value`` as a float in ``[lo, hi]`` (``(lo, hi]`` if ``lo_open``), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not (lo < v if lo_open else lo <= v) or not v <= hi:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{']' if hi < math.inf else ')'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


def _window(value) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"window must be an integer >= 1 (samples), got {value!r}")
    return int(value)


class _Stateful(Estimator):
    """Estimators whose value depends only on the samples seen (cacheable per node)."""
    estimate_uses_now = False


@register("estimator")
class ExponentialAverage(_Stateful):
    """EWMA, the Ray paper's: ``v += alpha * (x - v)``.

    Cold start: the first sample sets the value. ``alpha`` in (0, 1] is the weight of the
    newest sample (1: last value; effective memory about 2/alpha - 1 samples).
    """

    def __init__(self, alpha: float = 0.1, prior: float | None = None):
        super().__init__(prior)
        self.alpha = _num("alpha", alpha, 0.0, 1.0, lo_open=True)
        self._v: float | None = None

    def update(self, x: float, now: float) -> None:
        v = self._v
        self._v = x if v is None else v + self.alpha * (x - v)

    def update_many(self, xs: list[float], now: float) -> None:
        if type(self).update is not ExponentialAverage.update:   # a subclass changed the rule
            return super().update_many(xs, now)
        v, a = self._v, self.alpha
        for x in xs:
            v = x if v is None else v + a * (x - v)
        self._v = v

    def estimate(self, now: float | None = None) -> float | None:
        return self.prior if self._v is None else self._v


@register("estimator")
class CumulativeMean(_Stateful):
    """Mean of every sample seen (never forgets). Cold start: ``prior`` until a sample."""

    def __init__(self, prior: float | None = None):
        super().__init__(prior)
        self._n = 0
        self._m = 0.0

    def update(self, x: float, now: float) -> None:
        self._n += 1
        self._m += (x - self._m) / self._n

    def estimate(self, now: float | None = None) -> float | None:
        return self._m if self._n else self.prior


@register("estimator")
class SlidingMean(_Stateful):
    """Mean of the last ``window`` samples (a running sum, re-added exactly every
    ``window`` evictions or on cancellation). Cold start: ``prior``; then the mean of
    the samples so far."""

    def __init__(self, window: int = 32, prior: float | None = None):
        super().__init__(prior)
        self.window = _window(window)
        self._d: deque[float] = deque()
        self._sum = 0.0
        self._evictions = 0

    def update(self, x: float, now: float) -> None:
        d = self._d
        d.append(x)
        if len(d) <= self.window:
            self._sum += x
            return
        old = d.popleft()
        s = self._sum + x - old
        self._evictions += 1
        # a large eviction cancels precision; re-add exactly now and then
        if abs(old) > abs(s) or self._evictions >= self.window:
            s = math.fsum(d)
            self._evictions = 0
        self._sum = s

    def estimate(self, now: float | None = None) -> float | None:
        return self._sum / len(self._d) if self._d else self.prior


class _SortedWindow(_Stateful):
    """The last ``window`` samples, also kept sorted (O(window) per update)."""

    def __init__(self, window: int, prior: float | None):
        super().__init__(prior)
        self.window = _window(window)
        self._d: deque[float] = deque()
        self._sorted: list[float] = []

    def update(self, x: float, now: float) -> None:
        x = float(x)
        self._d.append(x)
        insort(self._sorted, x)
        if len(self._d) > self.window:
            old = self._d.popleft()
            del self._sorted[bisect_left(self._sorted, old)]

    def _at(self, q: float) -> float:
        """Linear-interpolated ``q``-quantile of the window (numpy's default rule)."""
        s = self._sorted
        pos = q * (len(s) - 1)
        lo = int(pos)
        if lo >= len(s) - 1:
            return s[-1]
        a, b = s[lo], s[lo + 1]
        return min(max(a + (b - a) * (pos - lo), a), b)


@register("estimator")
class SlidingMedian(_SortedWindow):
    """Median of the last ``window`` samples (mean of the middle two for an even count).
    Cold start: ``prior``; then the median of the samples so far."""

    def __init__(self, window: int = 32, prior: float | None = None):
        super().__init__(window, prior)

    def estimate(self, now: float | None = None) -> float | None:
        return self._at(0.5) if self._sorted else self.prior


@register("estimator")
class Quantile(_SortedWindow):
    """The ``q``-quantile (linear interpolation) of the last ``window`` samples; ``q`` in
    [0, 1]. Cold start: ``prior``; then the quantile of the samples so far."""

    def __init__(self, q: float = 0.9, window: int = 64, prior: float | None = None):
        super().__init__(window, prior)
        self.q = _num("q", q, 0.0, 1.0)

    def estimate(self, now: float | None = None) -> float | None:
        return self._at(self.q) if self._sorted else self.prior


@register("estimator")
class LastValue(_Stateful):
    """The latest sample. Cold start: ``prior``."""

    def __init__(self, prior: float | None = None):
        super().__init__(prior)
        self._v: float | None = None

    def update(self, x: float, now: float) -> None:
        self._v = x

    def estimate(self, now: float | None = None) -> float | None:
        return self.prior if self._v is None else self._v


@register("estimator")
class Holt(_Stateful):
    """Holt's linear smoothing: ``level = alpha x + (1-alpha)(level + trend)``,
    ``trend = beta (level - old level) + (1-beta) trend``; estimate ``max(level + trend, 0)``
    (one step ahead). ``alpha`` in (0, 1], ``beta`` in [0, 1] (0: plain EWMA).
    Cold start: ``prior``; the first sample sets the level, trend 0."""

    def __init__(self, alpha: float = 0.2, beta: float = 0.05, prior: float | None = None):
        super().__init__(prior)
        self.alpha = _num("alpha", alpha, 0.0, 1.0, lo_open=True)
        self.beta = _num("beta", beta, 0.0, 1.0)
        self._level: float | None = None
        self._trend = 0.0

    def update(self, x: float, now: float) -> None:
        lvl = self._level
        if lvl is None:
            self._level = x
            return
        a, b = self.alpha, self.beta
        new = a * x + (1.0 - a) * (lvl + self._trend)
        self._trend = b * (new - lvl) + (1.0 - b) * self._trend
        self._level = new

    def estimate(self, now: float | None = None) -> float | None:
        if self._level is None:
            return self.prior
        return max(self._level + self._trend, 0.0)


@register("estimator")
class MeanPlusDeviation(_Stateful):
    """RFC 6298's SRTT + k * RTTVAR: ``rttvar = (1-beta) rttvar + beta |srtt - x|`` before
    ``srtt = (1-alpha) srtt + alpha x``. ``alpha``, ``beta`` in (0, 1], ``k >= 0`` (0: an
    EWMA). Cold start: ``prior``; the first sample sets srtt = x, rttvar = x / 2."""

    def __init__(self, alpha: float = 0.125, beta: float = 0.25, k: float = 4.0,
                 prior: float | None = None):
        super().__init__(prior)
        self.alpha = _num("alpha", alpha, 0.0, 1.0, lo_open=True)
        self.beta = _num("beta", beta, 0.0, 1.0, lo_open=True)
        self.k = _num("k", k, 0.0)
        self._srtt: float | None = None
        self._rttvar = 0.0

    def update(self, x: float, now: float) -> None:
        srtt = self._srtt
        if srtt is None:
            self._srtt, self._rttvar = x, x / 2.0
            return
        self._rttvar = (1.0 - self.beta) * self._rttvar + self.beta * abs(srtt - x)
        self._srtt = (1.0 - self.alpha) * srtt + self.alpha * x

    def estimate(self, now: float | None = None) -> float | None:
        if self._srtt is None:
            return self.prior
        return self._srtt + self.k * self._rttvar


@register("estimator")
class TimeDecayedAverage(_Stateful):
    """Average whose weights halve every ``half_life_s`` seconds of *time* (not samples):
    on update, the weighted sum and the weight are both multiplied by
    ``2 ** (-(now - last) / half_life_s)`` and the sample is added with weight 1;
    estimate = sum / weight (so it does not change between samples). Samples that arrive
    out of order count as simultaneous. Cold start: ``prior``."""

    def __init__(self, half_life_s: float = 10.0, prior: float | None = None):
        super().__init__(prior)
        self.half_life_s = _num("half_life_s", half_life_s, 0.0, lo_open=True)
        if math.isinf(self.half_life_s):
            raise ValueError(f"half_life_s must be finite, got {half_life_s!r}")
        self._sum = 0.0
        self._weight = 0.0
        self._last: float | None = None

    def update(self, x: float, now: float) -> None:
        last = self._last
        if last is not None and now > last:
            f = 2.0 ** (-(now - last) / self.half_life_s)
            self._sum *= f
            self._weight *= f
        if last is None or now > last:
            self._last = now
        self._sum += x
        self._weight += 1.0

    def estimate(self, now: float | None = None) -> float | None:
        return self._sum / self._weight if self._weight else self.prior


@register("estimator")
class Oracle(Estimator):
    """The engine's ground truth (an upper bound on what estimation can buy).
    ``update`` ignores samples; the KeyedEstimator asks the truth set with
    ``PlacementPolicy.set_truth``. Cold start / no truth set: ``prior``."""

    wants_truth = True

    def update(self, x: float, now: float) -> None:
        pass

    def estimate(self, now: float | None = None) -> float | None:
        return self.prior
