"""The ``[workload]`` table: its schema, validation, and the resolved :class:`WorkloadSpec`.

``FIELDS`` is the one place each key's type, default, rule and unit are defined.
:func:`parse_workload` turns a table into a frozen :class:`WorkloadSpec` (every error a
:class:`~testbed.core.errors.ConfigError` naming the dotted key and the rule), and
``WorkloadSpec.to_dict()`` gives the fully resolved table back (every default filled,
unset optionals left out, so it can be written as TOML and parsed to the same spec).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.resources import normalise
from ..core.config import MAX_JOBS
from ..core.schema import REQUIRED, Field, between, check_table, count_rule, non_negative, positive
from .distributions import Constant, Distribution, parse_distribution
from .tracefile import TraceTable, read_trace

SHAPES = ("independent", "chains", "map_reduce", "tree_reduce", "actors", "gcs_client", "trace")
ARRIVALS = ("closed", "poisson", "trace")
DRIFT_KINDS = ("linear", "exp")
#: keys the trace file replaces (shape "trace" refuses them)
TRACE_GIVES = ("functions", "duration", "output_bytes", "resources")


def _at_least(n):
    return lambda x: x >= n


#: upper bound of a job's task counts, of drivers and of actors (workload.jobs: core.config.MAX_JOBS)
MAX_PER_JOB = 1_000_000


FIELDS: dict[str, Field] = {
    "shape": Field((str,), "independent", choices=SHAPES,
                   doc="DAG of one job; trace: one task per row of trace_file"),
    "jobs": Field((int,), 1000, between(1, MAX_JOBS), count_rule(MAX_JOBS),
                  "total jobs over all drivers (shape trace: the first min(jobs, rows) rows)"),
    "arrival": Field((str,), "closed", choices=ARRIVALS,
                     doc="closed: in_flight jobs outstanding per driver; poisson: open arrivals; "
                         "trace: each job at its trace row's arrival_s (shape trace only)"),
    "trace_file": Field((str,), "", doc="shape trace: the CSV file to replay (columns arrival_s, function, "
                        "duration_s, cpus, gpus, output_bytes: testbed.workloads.tracefile); a path "
                        "relative to the config file; '' for none"),
    "in_flight": Field((int,), 8, between(1, MAX_JOBS), count_rule(MAX_JOBS), "closed loop: jobs in flight per driver"),
    "rate_per_s": Field((float,), 100.0, positive, "> 0", "poisson: jobs per second per driver"),
    "drivers": Field((int,), 1, between(1, MAX_PER_JOB), count_rule(MAX_PER_JOB), "drivers submitting at once"),
    "driver_nodes": Field((list,), [], None, "", "node index of each driver; [] = spread evenly",
                          items=(int,)),
    "chain_length": Field((int,), 10, between(1, MAX_PER_JOB), count_rule(MAX_PER_JOB), "chains: tasks per chain"),
    "map_tasks": Field((int,), 8, between(1, MAX_PER_JOB), count_rule(MAX_PER_JOB), "map_reduce: maps per job"),
    "reduce_tasks": Field((int,), 2, between(1, MAX_PER_JOB), count_rule(MAX_PER_JOB),
                          "map_reduce: reduces per job, each takes every map's output"),
    "tree_leaves": Field((int,), 16, between(1, MAX_PER_JOB), count_rule(MAX_PER_JOB), "tree_reduce: leaf tasks"),
    "tree_fanin": Field((int,), 2, _at_least(2), ">= 2", "tree_reduce: inputs per combining task"),
    "duration": Field((dict,), {"dist": "exponential", "mean": 0.1},
                      doc="task duration distribution, seconds (default for functions)"),
    "output_bytes": Field((dict,), {"dist": "constant", "value": 0},
                          doc="task output size distribution, bytes (default for functions)"),
    "resources": Field((dict,), {"CPU": 1.0}, doc="per-task resource demand (default for functions)"),
    "functions": Field((list,), [], items=(dict,),
                       doc="remote functions; [] = one function 'task' using the defaults"),
    "shift": Field((dict,), None, doc="optional regime shift of durations"),
    "drift": Field((dict,), None, doc="optional slow drift of durations with submission time t: "
                   "{per_s, kind}; linear: durations x (1 + per_s * t), exp: x exp(per_s * t) (default "
                   "for functions)"),
    # shape "actors": job j is one call Actor.step on actor j % actors (calls on one actor
    # run one at a time, in submission order; method time from duration, result size from
    # output_bytes); actors hold no CPU and are placed round-robin over the nodes at start
    "actors": Field((int,), 0, between(0, MAX_PER_JOB), count_rule(MAX_PER_JOB, 0),
                    "actors: stateful actors (must be > 0 for this shape)"),
    "actor_checkpoint_interval": Field((int,), 0, non_negative, ">= 0",
                                       "actors: checkpoint an actor's state after every this many calls (0: never)"),
    "actor_checkpoint_s": Field((float,), 0.001, non_negative, ">= 0",
                                "actors, simulator: seconds one checkpoint (or restoring one) takes on the actor"),
    "actor_max_restarts": Field((int,), -1, _at_least(-1), ">= -1",
                                "actors: rebuilds allowed per actor after its node died (-1: unlimited)"),
    # shape "gcs_client" (paper Fig. 10a): job j is one GCS request; even j writes key j // 2,
    # odd j reads it back
    "gcs_key_bytes": Field((int,), 25, _at_least(1), ">= 1", "gcs_client: key size, bytes (paper: 25)"),
    "gcs_value_bytes": Field((int,), 512, non_negative, ">= 0", "gcs_client: value size, bytes (paper: 512)"),
}

FUNCTION_FIELDS: dict[str, Field] = {
    "name": Field((str,), REQUIRED, lambda s: s != "", "a non-empty string", "function name (unique)"),
    "weight": Field((float,), 1.0, positive, "> 0", "relative frequency of this function"),
    "duration": Field((dict,), None, doc="duration distribution, seconds (default: workload.duration)"),
    "output_bytes": Field((dict,), None, doc="output size distribution, bytes (default: workload.output_bytes)"),
    "resources": Field((dict,), None, doc="resource demand (default: workload.resources)"),
    "duration_after_shift": Field((dict,), None,
                                  doc="duration distribution after the shift (default: duration x shift.scale)"),
    "drift": Field((dict,), None, doc="drift of this function's durations (default: workload.drift)"),
}

DRIFT_FIELDS: dict[str, Field] = {
    "per_s": Field((float,), REQUIRED, None, "", "drift rate, 1/s: linear, the fraction of the base "
                   "duration added per second (>= 0); exp, the exponent's rate (< 0 shrinks)"),
    "kind": Field((str,), "linear", choices=DRIFT_KINDS,
                  doc="linear: x (1 + per_s * t); exp: x exp(per_s * t); t = submission time, seconds"),
}

SHIFT_FIELDS: dict[str, Field] = {
    "at_s": Field((float,), None, non_negative, ">= 0", "shift at this time, seconds"),
    "after_jobs": Field((int,), None, non_negative, ">= 0", "shift after this many jobs have been generated"),
    "scale": Field((float,), 1.0, positive, "> 0",
                   "durations x scale after the shift (functions without duration_after_shift)"),
}

#: name of the single function of a workload that lists none
DEFAULT_FUNCTION = "task"


@dataclass(frozen=True)
class FunctionSpec:
    """One remote function of a workload, with every default resolved."""
    #: unique name (estimators can be keyed by it)
    name: str
    #: relative frequency; each task draws its function with probability weight / sum(weights)
    weight: float
    #: duration before the shift, seconds
    duration: Distribution
    #: output size, bytes (draws rounded to non-negative integers)
    output_bytes: Distribution
    #: resource demand, (name, amount) pairs sorted by name, no zero amounts
    resources: tuple[tuple[str, float], ...]
    #: duration after the shift, seconds; None = ``duration`` x ``shift.scale``
    duration_after_shift: Distribution | None = None
    #: slow drift of durations with submission time; None = none
    drift: "DriftSpec | None" = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "weight": self.weight,
                             "duration": self.duration.to_dict(),
                             "output_bytes": self.output_bytes.to_dict(),
                             "resources": dict(self.resources)}
        if self.duration_after_shift is not None:
            d["duration_after_shift"] = self.duration_after_shift.to_dict()
        if self.drift is not None:
            d["drift"] = self.drift.to_dict()
        return d


@dataclass(frozen=True)
class DriftSpec:
    """Durations drift with the submission time ``t`` (seconds): a task's drawn duration is
    multiplied by :meth:`factor` ``(t)``."""
    #: rate, 1/s (linear: >= 0)
    per_s: float
    #: "linear": 1 + per_s * t; "exp": exp(per_s * t)
    kind: str = "linear"

    def factor(self, t: float) -> float:
        """The duration multiplier at submission time ``t`` seconds."""
        if self.kind == "exp":
            return math.exp(min(self.per_s * t, 700.0))
        return 1.0 + self.per_s * t

    def to_dict(self) -> dict[str, Any]:
        return {"per_s": self.per_s, "kind": self.kind}


@dataclass(frozen=True)
class ShiftSpec:
    """A regime shift: from a time (``at_s``) or a job count (``after_jobs``) on, durations change."""
    #: shift at this time, seconds (exclusive with after_jobs)
    at_s: float | None
    #: shift once this many jobs have been generated (exclusive with at_s)
    after_jobs: int | None
    #: durations x scale after the shift, for functions without duration_after_shift
    scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.at_s is not None:
            d["at_s"] = self.at_s
        if self.after_jobs is not None:
            d["after_jobs"] = self.after_jobs
        d["scale"] = self.scale
        return d


@dataclass(frozen=True)
class WorkloadSpec:
    """A validated ``[workload]`` table (see :data:`FIELDS` for each key's meaning)."""
    shape: str
    jobs: int
    arrival: str
    in_flight: int
    rate_per_s: float
    drivers: int
    #: node index of each driver; () = the engine spreads drivers evenly
    driver_nodes: tuple[int, ...]
    chain_length: int
    map_tasks: int
    reduce_tasks: int
    tree_leaves: int
    tree_fanin: int
    #: workload-wide defaults (each function has them resolved too)
    duration: Distribution
    output_bytes: Distribution
    resources: tuple[tuple[str, float], ...]
    #: at least one; config order
    functions: tuple[FunctionSpec, ...]
    shift: ShiftSpec | None = None
    #: shape "actors": the actors, checkpoint every K calls (0: never), seconds per
    #: checkpoint (simulator), rebuilds allowed per actor (-1: unlimited)
    actors: int = 0
    actor_checkpoint_interval: int = 0
    actor_checkpoint_s: float = 0.001
    actor_max_restarts: int = -1
    #: shape "gcs_client": key and value sizes of the requests, bytes
    gcs_key_bytes: int = 25
    gcs_value_bytes: int = 512
    #: shape "trace": the file replayed ("" for other shapes)
    trace_file: str = ""
    #: workload-wide drift of durations (each function has its own resolved too)
    drift: DriftSpec | None = None
    #: shape "trace": the file's rows (the functions are the file's, each with its mean
    #: duration and output size as a constant, and its first row's demand)
    trace: TraceTable | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved table (TOML-writable: no None, unset optionals left out;
        shape trace leaves out what the file gives, TRACE_GIVES)."""
        d: dict[str, Any] = {}
        for k in FIELDS:
            if self.shape == "trace" and k in TRACE_GIVES:
                continue
            v = getattr(self, k)
            if k in ("duration", "output_bytes"):
                v = v.to_dict()
            elif k == "resources":
                v = dict(v)
            elif k == "driver_nodes":
                v = list(v)
            elif k == "functions":
                v = [f.to_dict() for f in v]
            elif k in ("shift", "drift"):
                if v is None:
                    continue
                v = v.to_dict()
            d[k] = v
        return d


def parse_resources(table: Any, key: str) -> tuple[tuple[str, float], ...]:
    """A resource demand table -> sorted (name, amount) pairs without zeros."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"expected a table like {{CPU = 1.0}}, got {type(table).__name__}", key=key)
    for name, amount in table.items():
        k = f"{key}.{name}"
        if not isinstance(name, str) or not name:
            raise ConfigError("resource names must be non-empty strings", key=k)
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise ConfigError(f"expected a number, got {type(amount).__name__} ({amount!r})", key=k)
        if not math.isfinite(amount) or amount < 0:
            raise ConfigError(f"must be >= 0 and finite, got {amount!r}", key=k)
    return tuple(normalise(table).items())


def parse_workload(table: Any, key: str = "workload") -> WorkloadSpec:
    """Validate a ``[workload]`` table and resolve every default."""
    t = check_table(table, FIELDS, key)
    drivers = t["drivers"]
    for i, node in enumerate(t["driver_nodes"]):
        if node < 0:
            raise ConfigError(f"item {i} must be >= 0, got {node}", key=f"{key}.driver_nodes")
    if t["driver_nodes"] and len(t["driver_nodes"]) != drivers:
        raise ConfigError(f"needs one node per driver (drivers = {drivers}), got {len(t['driver_nodes'])}",
                          key=f"{key}.driver_nodes")
    duration = parse_distribution(t["duration"], f"{key}.duration")
    output_bytes = parse_distribution(t["output_bytes"], f"{key}.output_bytes")
    resources = parse_resources(t["resources"], f"{key}.resources")
    shift = _parse_shift(t["shift"], f"{key}.shift")
    drift = _parse_drift(t["drift"], f"{key}.drift")
    if t["shape"] == "actors" and t["actors"] < 1:
        raise ConfigError('must be > 0 for shape = "actors"', key=f"{key}.actors")
    trace = None
    if t["shape"] == "trace":
        for k in TRACE_GIVES:
            if k in table:
                raise ConfigError('the trace file gives each task\'s function, duration, output size and '
                                  'resources: not used with shape = "trace"', key=f"{key}.{k}")
        if not t["trace_file"]:
            raise ConfigError('is required for shape = "trace" (a CSV file, see testbed.workloads.tracefile)',
                              key=f"{key}.trace_file")
        try:
            trace = read_trace(t["trace_file"])
        except ConfigError as exc:
            raise ConfigError(f"{exc.file}: {exc.message}", key=f"{key}.trace_file") from None
    elif t["trace_file"]:
        raise ConfigError('has no effect unless shape = "trace"', key=f"{key}.trace_file")
    if t["arrival"] == "trace" and t["shape"] != "trace":
        raise ConfigError('"trace" arrivals need shape = "trace" (the times come from its trace_file)',
                          key=f"{key}.arrival")

    functions: list[FunctionSpec] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(t["functions"]):
        fkey = f"{key}.functions[{i}]"
        f = check_table(raw, FUNCTION_FIELDS, fkey)
        if f["name"] in seen:
            raise ConfigError(f"duplicate function name {f['name']!r} (also functions[{seen[f['name']]}])",
                              key=f"{fkey}.name")
        seen[f["name"]] = i
        after = None
        if f["duration_after_shift"] is not None:
            if shift is None:
                raise ConfigError(f"has no effect without a [{key}.shift] table",
                                  key=f"{fkey}.duration_after_shift")
            after = parse_distribution(f["duration_after_shift"], f"{fkey}.duration_after_shift")
        fdrift = drift if f["drift"] is None else _parse_drift(f["drift"], f"{fkey}.drift")
        functions.append(FunctionSpec(
            name=f["name"], weight=f["weight"],
            duration=(duration if f["duration"] is None
                      else parse_distribution(f["duration"], f"{fkey}.duration")),
            output_bytes=(output_bytes if f["output_bytes"] is None
                          else parse_distribution(f["output_bytes"], f"{fkey}.output_bytes")),
            resources=(resources if f["resources"] is None
                       else parse_resources(f["resources"], f"{fkey}.resources")),
            duration_after_shift=after, drift=fdrift))
    if trace is not None:
        means = trace.mean_durations()
        outs = np.bincount(trace.fn, weights=trace.output_bytes, minlength=len(trace.functions))
        first = np.unique(trace.fn, return_index=True)[1]
        for i, (name, count) in enumerate(trace.counts().items()):
            functions.append(FunctionSpec(name, float(count), Constant(means[name]), Constant(float(outs[i] / count)),
                                          trace.demands[int(trace.demand[first[i]])], drift=drift))
    if not functions:
        functions.append(FunctionSpec(DEFAULT_FUNCTION, 1.0, duration, output_bytes, resources, drift=drift))

    return WorkloadSpec(
        shape=t["shape"], jobs=t["jobs"] if trace is None else min(t["jobs"], len(trace)), arrival=t["arrival"], in_flight=t["in_flight"],
        rate_per_s=t["rate_per_s"], drivers=drivers, driver_nodes=tuple(t["driver_nodes"]),
        chain_length=t["chain_length"], map_tasks=t["map_tasks"], reduce_tasks=t["reduce_tasks"],
        tree_leaves=t["tree_leaves"], tree_fanin=t["tree_fanin"],
        duration=duration, output_bytes=output_bytes, resources=resources,
        functions=tuple(functions), shift=shift,
        actors=t["actors"], actor_checkpoint_interval=t["actor_checkpoint_interval"],
        actor_checkpoint_s=t["actor_checkpoint_s"], actor_max_restarts=t["actor_max_restarts"],
        gcs_key_bytes=t["gcs_key_bytes"], gcs_value_bytes=t["gcs_value_bytes"],
        trace_file=t["trace_file"], drift=drift, trace=trace)


def _parse_drift(table: Any, key: str) -> DriftSpec | None:
    if table is None:
        return None
    d = check_table(table, DRIFT_FIELDS, key)
    if d["kind"] == "linear" and d["per_s"] < 0:
        raise ConfigError('must be >= 0 for kind = "linear" (durations would turn negative; '
                          'use kind = "exp" to shrink them)', key=f"{key}.per_s")
    return DriftSpec(d["per_s"], d["kind"])


def _parse_shift(table: Any, key: str) -> ShiftSpec | None:
    if table is None:
        return None
    s = check_table(table, SHIFT_FIELDS, key)
    if (s["at_s"] is None) == (s["after_jobs"] is None):
        raise ConfigError("give exactly one of at_s (seconds) or after_jobs"
                          + (", not both" if s["at_s"] is not None else ""), key=key)
    return ShiftSpec(at_s=s["at_s"], after_jobs=s["after_jobs"], scale=s["scale"])
