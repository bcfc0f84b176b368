"""Workloads are data: a ``[workload]`` table plus a seed -> a streamed sequence of jobs.

- :func:`parse_workload` validates the table into a frozen :class:`WorkloadSpec`.
- :class:`Workload` hands the jobs out one at a time (``next_job``), deterministic in
  (seed, job id, regime) whichever driver asks, with Poisson gaps per driver and the
  true mean durations for the Oracle.
- :data:`DISTRIBUTIONS` names the duration / size distributions.
- :func:`read_trace` reads a trace file (shape "trace"; :mod:`.tracefile` documents its
  columns); ``python -m testbed.workloads.make_trace`` writes a synthetic one.

Imports only :mod:`testbed.core`.
"""
from .distributions import DISTRIBUTIONS, Distribution, parse_distribution
from .generator import Workload, job_deps
from .spec import DriftSpec, FunctionSpec, ShiftSpec, WorkloadSpec, parse_workload
from .tracefile import TraceTable, read_trace

__all__ = [
    "DISTRIBUTIONS", "Distribution", "DriftSpec", "FunctionSpec", "ShiftSpec", "TraceTable", "Workload",
    "WorkloadSpec", "job_deps", "parse_distribution", "parse_workload", "read_trace",
]
