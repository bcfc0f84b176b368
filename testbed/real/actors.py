"""Actors (stateful workers). Not built yet: the next increment of the real runtime."""
from __future__ import annotations


class ActorClass:
    def __init__(self, cls, options):
        raise NotImplementedError(
            f"@tb.remote on a class ({cls.__name__}): actors are not available yet in testbed's real "
            f"runtime; remote functions are")
