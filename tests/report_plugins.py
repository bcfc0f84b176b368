"""A placement policy that records when its estimators receive samples (for
tests/test_report_timing.py; importable by the runtime's global scheduler as
``tests.report_plugins:RecordingWaitTime``), and one that places where a test can predict.
Test-only: RecordingWaitTime writes to a file when asked."""
from __future__ import annotations

import time

from testbed.policy.base import Placement, PlacementPolicy
from testbed.policy.placement import PaperWaitTime


class HighestLiveNode(PlacementPolicy):
    """Places everything on the live node with the highest index that can hold it."""

    def place(self, task, view, now, rng):
        ok = view.feasible(task.demand).nonzero()[0]
        return Placement(int(ok[-1])) if len(ok) else None


class RecordingWaitTime(PaperWaitTime):
    """PaperWaitTime that keeps every sample it is given: ``("task", now, node, function,
    seconds)`` and ``("transfer", now, dst, src, size, seconds)``; with ``path``, also one
    line per sample there (``kind wall_time node seconds``) for a test to read."""

    def __init__(self, path: str = "", **kwargs):
        super().__init__(**kwargs)
        self.path = path
        self.seen: list[tuple] = []

    def _log(self, kind: str, node: int, secs: float) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(f"{kind} {time.time()!r} {node} {secs!r}\n")

    def observe_task(self, function, node, duration_s, now):
        super().observe_task(function, node, duration_s, now)
        self.seen.append(("task", now, node, function, duration_s))
        self._log("task", node, duration_s)

    def observe_transfer(self, src, dst, size_bytes, seconds, now):
        super().observe_transfer(src, dst, size_bytes, seconds, now)
        self.seen.append(("transfer", now, dst, src, size_bytes, seconds))
        self._log("transfer", dst, seconds)
