"""A user-written placement policy, loaded from a config as
``placement = "examples.user_policy:ShortestExpectedQueue"``.

It subclasses the plain :class:`testbed.policy.PlacementPolicy` (not a built-in), so it
shows the whole contract: ``place`` gets an immutable TaskView and ClusterView, the time
``now`` and an injected ``rng``; it returns a Placement (or None if no node can ever run
the task). ``self.task_time`` is the keyed estimator the config's ``[scheduler]``
``task_time`` / ``task_time_key`` built and the engine feeds.
"""
from __future__ import annotations

import numpy as np

from testbed.policy import Placement, PlacementPolicy


class ShortestExpectedQueue(PlacementPolicy):
    """Least expected time to *finish*: (queued + running + 1) x estimated task time / slots.

    Unlike the paper's rule it also counts running tasks and the task itself, so a slow
    idle node loses to a fast idle one. Ties go to the lowest node index; ``jitter_s`` adds
    a tiny random tie-break (from the injected rng) when > 0.
    """

    def __init__(self, default_task_time_s: float = 0.1, jitter_s: float = 0.0):
        if default_task_time_s <= 0:
            raise ValueError(f"default_task_time_s must be > 0, got {default_task_time_s}")
        self.default_task_time_s = default_task_time_s
        self.jitter_s = jitter_s

    def place(self, task, view, now, rng):
        feasible = view.feasible(task.demand)
        if not feasible.any():
            return None
        est = self.task_time.estimate_nodes(task.function, view.n_nodes, now, default=self.default_task_time_s)
        finish = (view.queue_length + view.running + 1) * est / view.slots
        if self.jitter_s > 0:
            finish = finish + rng.uniform(0, self.jitter_s, view.n_nodes)
        finish = np.where(feasible, finish, np.inf)
        node = int(np.argmin(finish))
        wait = float(view.queue_length[node] * est[node] / view.slots[node])
        return Placement(node, wait)
