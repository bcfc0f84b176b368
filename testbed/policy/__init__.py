"""The shared policy layer: estimators, placement (global scheduler), spillover (local).

Policies are pure: no I/O, no clock, no global RNG. Time comes in as ``now`` (seconds),
randomness as an injected ``numpy.random.Generator``. Both engines call these objects.
"""
from .base import (Estimator, KeyedEstimator, Placement, PlacementPolicy, SpilloverPolicy,
                   KEYINGS)

__all__ = ["Estimator", "KeyedEstimator", "Placement", "PlacementPolicy", "SpilloverPolicy", "KEYINGS"]
