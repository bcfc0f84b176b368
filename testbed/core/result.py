"""What one run of either engine yields: the Trace, its metrics, and engine facts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class RunResult:
    #: every Trace row (None when only aggregates were kept)
    trace: Any
    #: headline metrics from the Trace (testbed.core.metrics)
    metrics: dict
    #: engine facts: wall time, simulated end, events, nodes, ...
    info: dict
