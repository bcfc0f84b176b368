"""Rules of the ``[faults]`` section that both engines follow."""
from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np


def may_run_again(done: int, limit: int) -> bool:
    """Whether a task may be re-executed (an actor rebuilt) once more, after ``done`` re-runs
    so far, under a ``max_retries`` / ``max_restarts`` of ``limit`` (-1: no limit)."""
    return limit < 0 or done < limit


def random_victim(live: Iterable[int], min_live_nodes: int, rng: np.random.Generator,
                  protected: Collection[int] = ()) -> int | None:
    """The node a ``kill_every_s`` tick kills: uniform among the live nodes not
    ``protected``, drawn from ``rng``; None (no kill) if that would leave fewer than
    ``min_live_nodes`` alive, or no node may be killed."""
    live = sorted(live)
    choices = [m for m in live if m not in protected]
    if len(live) <= min_live_nodes or not choices:
        return None
    return choices[int(rng.integers(len(choices)))]
