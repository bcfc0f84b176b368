"""Named distributions for task durations (seconds) and output sizes (bytes).

A distribution is written in a config as an inline table whose ``dist`` entry names
its kind; the other entries are its parameters::

    duration = {dist = "lognormal", mean = 0.05, sigma = 1.0}
    duration = {dist = "mixture", components = [
        {weight = 0.9, dist = "constant", value = 0.01},
        {weight = 0.1, dist = "constant", value = 1.0}]}

Every kind has ``sample(rng, n) -> np.ndarray`` (vectorised, float64, never negative),
``mean()`` (the exact expectation), ``parse(table, key)`` (validates with
:func:`~testbed.core.schema.check_table`) and ``to_dict()`` (the table back, every
parameter written). Units are the caller's. :data:`DISTRIBUTIONS` maps a kind's name
to its class (``testbed list`` shows it).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..core.errors import ConfigError
from ..core.schema import REQUIRED, Field, check_table, check_value, non_negative, positive


class Distribution:
    """Base class: subclasses set ``name`` and ``FIELDS`` and implement the rest."""
    __slots__ = ()

    #: the ``dist`` value that selects this kind
    name: ClassVar[str] = ""
    #: the parameters (not ``dist``), in the order ``to_dict`` writes them
    FIELDS: ClassVar[dict[str, Field]] = {}

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent draws."""
        raise NotImplementedError

    def mean(self) -> float:
        """The exact expectation."""
        raise NotImplementedError

    @classmethod
    def parse(cls, table: Any, key: str) -> "Distribution":
        """Validate ``table`` (including its ``dist`` entry) and build the distribution."""
        fields = {"dist": Field((str,), REQUIRED, choices=(cls.name,), doc="the kind")}
        fields.update(cls.FIELDS)
        params = check_table(table, fields, key)
        del params["dist"]
        cls._check(params, key)
        return cls(**params)

    @classmethod
    def _check(cls, params: dict[str, Any], key: str) -> None:
        """Cross-parameter rules (one Field cannot express them)."""

    def to_dict(self) -> dict[str, Any]:
        return {"dist": self.name, **{k: getattr(self, k) for k in self.FIELDS}}


@dataclass(frozen=True, slots=True)
class Constant(Distribution):
    """Always ``value``."""
    name: ClassVar[str] = "constant"
    FIELDS: ClassVar[dict[str, Field]] = {
        "value": Field((float,), REQUIRED, non_negative, ">= 0", "the value"),
    }
    value: float

    def sample(self, rng, n):
        return np.full(n, self.value, dtype=np.float64)

    def mean(self):
        return self.value


@dataclass(frozen=True, slots=True)
class Uniform(Distribution):
    """Uniform on ``[low, high)``."""
    name: ClassVar[str] = "uniform"
    FIELDS: ClassVar[dict[str, Field]] = {
        "low": Field((float,), REQUIRED, non_negative, ">= 0", "lower bound"),
        "high": Field((float,), REQUIRED, non_negative, ">= 0", "upper bound (>= low)"),
    }
    low: float
    high: float

    @classmethod
    def _check(cls, params, key):
        if params["high"] < params["low"]:
            raise ConfigError(f"must be >= low ({params['low']!r}), got {params['high']!r}",
                              key=f"{key}.high")

    def sample(self, rng, n):
        return rng.uniform(self.low, self.high, n)

    def mean(self):
        return 0.5 * (self.low + self.high)


@dataclass(frozen=True, slots=True)
class Exponential(Distribution):
    """Exponential with the given ``mean``."""
    name: ClassVar[str] = "exponential"
    FIELDS: ClassVar[dict[str, Field]] = {
        "mean": Field((float,), REQUIRED, positive, "> 0", "the mean"),
    }
    mean_: float

    # ``mean`` is the parameter's name in configs and also the method's; store it as
    # ``mean_`` and map it in parse/to_dict.
    @classmethod
    def parse(cls, table, key):
        fields = {"dist": Field((str,), REQUIRED, choices=(cls.name,)), **cls.FIELDS}
        return cls(check_table(table, fields, key)["mean"])

    def to_dict(self):
        return {"dist": self.name, "mean": self.mean_}

    def sample(self, rng, n):
        return rng.exponential(self.mean_, n)

    def mean(self):
        return self.mean_


#: Largest lognormal ``sigma``: beyond it the median is below 1e-22 x the mean and
#: draws overflow float64; no workload wants that.
MAX_LOGNORMAL_SIGMA = 10.0


@dataclass(frozen=True, slots=True)
class Lognormal(Distribution):
    """Lognormal with the given ``mean`` and log-space spread ``sigma``
    (``mu = ln(mean) - sigma**2 / 2``)."""
    name: ClassVar[str] = "lognormal"
    FIELDS: ClassVar[dict[str, Field]] = {
        "mean": Field((float,), REQUIRED, positive, "> 0", "the mean"),
        "sigma": Field((float,), REQUIRED, lambda s: 0 <= s <= MAX_LOGNORMAL_SIGMA,
                       f"in [0, {MAX_LOGNORMAL_SIGMA:g}]", "standard deviation of ln(x)"),
    }
    mean_: float
    sigma: float

    @classmethod
    def parse(cls, table, key):
        fields = {"dist": Field((str,), REQUIRED, choices=(cls.name,)), **cls.FIELDS}
        p = check_table(table, fields, key)
        return cls(p["mean"], p["sigma"])

    def to_dict(self):
        return {"dist": self.name, "mean": self.mean_, "sigma": self.sigma}

    def sample(self, rng, n):
        mu = math.log(self.mean_) - 0.5 * self.sigma ** 2
        return rng.lognormal(mu, self.sigma, n)

    def mean(self):
        return self.mean_


@dataclass(frozen=True, slots=True)
class Pareto(Distribution):
    """Classical Pareto with shape ``alpha`` (heavy tail) and scale ``min``:
    ``P(X > x) = (min / x) ** alpha`` for ``x >= min``; mean ``alpha * min / (alpha - 1)``.

    Give exactly one of ``min`` (the smallest value) or ``mean`` (then ``min = mean *
    (alpha - 1) / alpha``), so a heavy-tailed workload can keep the mean of an exponential
    one and differ only in its tail::

        duration = {dist = "pareto", alpha = 1.5, mean = 0.1}   # min = 0.0333 s
    """
    name: ClassVar[str] = "pareto"
    FIELDS: ClassVar[dict[str, Field]] = {
        "alpha": Field((float,), REQUIRED, lambda a: a > 1, "> 1", "tail index (> 1: finite mean)"),
        "min": Field((float,), None, positive, "> 0", "smallest value (or give mean)"),
        "mean": Field((float,), None, positive, "> 0", "the mean (or give min)"),
    }
    alpha: float
    min: float
    #: whether the config gave ``mean`` (to_dict writes it back the same way)
    by_mean: bool = False

    @classmethod
    def parse(cls, table, key):
        fields = {"dist": Field((str,), REQUIRED, choices=(cls.name,)), **cls.FIELDS}
        p = check_table(table, fields, key)
        if (p["min"] is None) == (p["mean"] is None):
            raise ConfigError("give exactly one of min or mean"
                              + (", not both" if p["min"] is not None else ""), key=key)
        if p["mean"] is not None:
            return cls(p["alpha"], p["mean"] * (p["alpha"] - 1.0) / p["alpha"], True)
        return cls(p["alpha"], p["min"])

    def to_dict(self):
        if self.by_mean:
            return {"dist": self.name, "alpha": self.alpha, "mean": self.mean()}
        return {"dist": self.name, "alpha": self.alpha, "min": self.min}

    def sample(self, rng, n):
        # numpy's pareto is the Lomax (Pareto II); shifting by 1 gives the classical one
        return (rng.pareto(self.alpha, n) + 1.0) * self.min

    def mean(self):
        return self.alpha * self.min / (self.alpha - 1.0)


_WEIGHT = Field((float,), REQUIRED, positive, "> 0", "relative weight of a component")


@dataclass(frozen=True, slots=True)
class Mixture(Distribution):
    """Draw a component by weight, then draw from it (e.g. bimodal durations)."""
    name: ClassVar[str] = "mixture"
    FIELDS: ClassVar[dict[str, Field]] = {
        "components": Field((list,), REQUIRED, lambda c: len(c) >= 1, "a non-empty list",
                            "tables {weight = w, dist = ..., ...}", items=(dict,)),
    }
    #: the weights as given (need not sum to 1)
    weights: tuple[float, ...]
    components: tuple[Distribution, ...]

    @classmethod
    def parse(cls, table, key):
        fields = {"dist": Field((str,), REQUIRED, choices=(cls.name,)), **cls.FIELDS}
        p = check_table(table, fields, key)
        weights, comps = [], []
        for i, comp in enumerate(p["components"]):
            ckey = f"{key}.components[{i}]"
            if "weight" not in comp:
                raise ConfigError("is required", key=f"{ckey}.weight")
            weights.append(check_value(_WEIGHT, comp["weight"], f"{ckey}.weight"))
            comps.append(parse_distribution({k: v for k, v in comp.items() if k != "weight"}, ckey))
        return cls(tuple(weights), tuple(comps))

    def to_dict(self):
        return {"dist": self.name,
                "components": [{"weight": w, **c.to_dict()} for w, c in zip(self.weights, self.components)]}

    def sample(self, rng, n):
        which = pick(rng, self.weights, n)
        out = np.empty(n, dtype=np.float64)
        for k, comp in enumerate(self.components):
            mask = which == k
            out[mask] = comp.sample(rng, int(np.count_nonzero(mask)))
        return out

    def mean(self):
        total = math.fsum(self.weights)
        return math.fsum(w * c.mean() for w, c in zip(self.weights, self.components)) / total


def pick(rng: np.random.Generator, weights: tuple[float, ...], n: int) -> np.ndarray:
    """``n`` indices into ``weights``, each drawn with probability proportional to its weight."""
    if len(weights) == 1:
        rng.random(n)  # consume the same stream either way
        return np.zeros(n, dtype=np.intp)
    cum = np.cumsum(weights, dtype=np.float64)
    idx = np.searchsorted(cum / cum[-1], rng.random(n), side="right")
    return np.minimum(idx, len(weights) - 1)


#: kind name -> class, in the order ``testbed list`` shows them
DISTRIBUTIONS: dict[str, type[Distribution]] = {
    c.name: c for c in (Constant, Uniform, Exponential, Lognormal, Pareto, Mixture)
}


def parse_distribution(table: Any, key: str) -> Distribution:
    """Build a distribution from its config table; errors name ``key`` and the rule."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"expected a table like {{dist = \"exponential\", mean = 0.1}}, "
                          f"got {type(table).__name__} ({table!r})", key=key)
    if "dist" not in table:
        raise ConfigError(f"is required; one of {', '.join(DISTRIBUTIONS)}", key=f"{key}.dist")
    kind = table["dist"]
    if not isinstance(kind, str) or kind not in DISTRIBUTIONS:
        raise ConfigError(f"must be one of {', '.join(map(repr, DISTRIBUTIONS))}, got {kind!r}",
                          key=f"{key}.dist")
    return DISTRIBUTIONS[kind].parse(table, key)
