"""Policies for tests that run on the real runtime too (importable by its node managers as
``tests.align_plugins:Name``)."""
from __future__ import annotations

from testbed.policy.base import SpilloverPolicy


class KeepEverything(SpilloverPolicy):
    """A (careless) local scheduler that never forwards, even tasks its node can never hold."""

    def should_forward(self, task, local, now, rng):
        return False
