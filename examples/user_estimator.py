"""A user-written estimator, loaded from a config as
``task_time = {name = "examples.user_estimator:LogEWMA", alpha = 0.1}``.

The contract is two methods: ``update(x, now)`` takes a sample, ``estimate(now)``
returns the current estimate, or ``self.prior`` (None: let the policy fall back) before
the first sample. No clock, no global randomness: time comes in as ``now``.
"""
from __future__ import annotations

import math

from testbed.policy import Estimator


class LogEWMA(Estimator):
    """Exponential average of log(x), returned as exp(mean + var / 2) — the mean of a
    lognormal with those log-moments. Suits right-skewed task times better than a plain
    average (one huge sample moves it less). Cold start: ``prior``. Samples <= 0 are
    ignored (log undefined)."""

    estimate_uses_now = False

    def __init__(self, alpha: float = 0.1, prior: float | None = None):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        super().__init__(prior)
        self.alpha = alpha
        self._mean: float | None = None
        self._var = 0.0

    def update(self, x: float, now: float) -> None:
        if x <= 0:
            return
        y = math.log(x)
        if self._mean is None:
            self._mean = y
            return
        d = y - self._mean
        self._mean += self.alpha * d
        self._var = (1 - self.alpha) * (self._var + self.alpha * d * d)

    def estimate(self, now: float | None = None) -> float | None:
        if self._mean is None:
            return self.prior
        return math.exp(self._mean + self._var / 2)
