"""One resolved ``[scheduler]`` table -> the run's policy objects, estimators bound.

Both engines and the config check call :func:`build_policies`, so a policy is built the
same way everywhere (the simulator in one process, the runtime once per scheduler process).
"""
from __future__ import annotations

from typing import Any

from . import registry
from .base import KeyedEstimator


def build_policies(sched: dict[str, Any]):
    """(placement, spillover) from a resolved [scheduler] table, estimators bound."""
    def factory(key: str):
        spec = sched[key]
        first = registry.build("estimator", spec, f"scheduler.{key}")   # fail early, with the key
        cls, (_, kwargs) = type(first), registry.split_spec(spec, f"scheduler.{key}")
        # one estimator per key (10,000 at 10,000 nodes): checked once above, so each later
        # one is a plain construction (re-checking the signature cost 50 us apiece)
        return lambda: cls(**kwargs)

    task_time = KeyedEstimator(factory("task_time"), sched["task_time_key"], "task_time")
    bandwidth = KeyedEstimator(factory("bandwidth"), sched["bandwidth_key"], "bandwidth")
    placement = registry.build("placement", sched["placement"], "scheduler.placement")
    placement.bind_estimators(task_time, bandwidth)
    spillover = registry.build("spillover", sched["spillover"], "scheduler.spillover")
    return placement, spillover
