"""One resolved ``[scheduler]`` table -> the run's policy objects, estimators bound.

Both engines and the config check call :func:`build_policies`, so a policy is built the
same way everywhere (the simulator in one process, the runtime once per scheduler process).

An estimator's table may carry the keyed estimator's cold-start options
(:data:`~testbed.policy.base.COLD_START`: ``min_samples``, ``fallback``, ``floor``,
``reset_factor``); they are taken off the table before the estimator itself is built, so
they work with any estimator, plug-ins included (which therefore cannot take arguments of
those four names).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.errors import ConfigError
from . import registry
from .base import COLD_START, KeyedEstimator


def split_cold_start(spec: Any) -> tuple[Any, dict[str, Any]]:
    """An estimator spec -> (the spec without the cold-start options, those options)."""
    if not isinstance(spec, Mapping):
        return spec, {}
    cold = {k: spec[k] for k in COLD_START if k in spec}
    if not cold:
        return spec, {}
    return {k: v for k, v in spec.items() if k not in COLD_START}, cold


def keyed_estimator(sched: dict[str, Any], key: str) -> KeyedEstimator:
    """The KeyedEstimator of ``sched[key]`` ("task_time" or "bandwidth"), keyed by
    ``sched[key + "_key"]``; a bad spec or option is a ConfigError naming the key."""
    spec, cold = split_cold_start(sched[key])
    where = f"scheduler.{key}"
    first = registry.build("estimator", spec, where)    # fail early, with the key
    cls, (_, kwargs) = type(first), registry.split_spec(spec, where)
    try:
        # one estimator per key (10,000 at 10,000 nodes): checked once above, so each later
        # one is a plain construction (re-checking the signature cost 50 us apiece)
        return KeyedEstimator(lambda: cls(**kwargs), sched[f"{key}_key"], key, **cold)
    except ValueError as exc:
        raise ConfigError(str(exc), key=where) from None


def build_policies(sched: dict[str, Any]):
    """(placement, spillover) from a resolved [scheduler] table, estimators bound."""
    task_time = keyed_estimator(sched, "task_time")
    bandwidth = keyed_estimator(sched, "bandwidth")
    placement = registry.build("placement", sched["placement"], "scheduler.placement")
    placement.bind_estimators(task_time, bandwidth)
    spillover = registry.build("spillover", sched["spillover"], "scheduler.spillover")
    return placement, spillover
