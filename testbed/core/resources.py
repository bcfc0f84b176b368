"""Resources: a mapping of resource name -> amount ("CPU", "GPU", or any custom name)."""
from __future__ import annotations

from collections.abc import Mapping

Resources = Mapping[str, float]

#: Tolerance for float resource arithmetic (fractional CPUs).
EPS = 1e-9


def fits(demand: Resources, available: Resources) -> bool:
    """True if every resource in ``demand`` is available in at least that amount."""
    for name, amount in demand.items():
        if amount > EPS and available.get(name, 0.0) + EPS < amount:
            return False
    return True


def normalise(demand: Resources | None) -> dict[str, float]:
    """A plain dict without zero entries, keys in sorted order (deterministic)."""
    if not demand:
        return {}
    return {k: float(v) for k, v in sorted(demand.items()) if v}
