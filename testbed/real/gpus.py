"""Which GPU ids a node gives its tasks and actors (what ``tb.get_gpu_ids()`` returns there).

    node manager: dispatch ──take(demand)──> ids ──("run", task with "gpu_ids")──> worker
                  a task ends / an actor dies ──give(ids, demand)──> pool

A node with G GPUs has ids 0..G-1, each one GPU (a fractional G adds one last id holding the
fraction). A demand of k whole GPUs takes the k lowest ids that are wholly free; a fraction
(< 1) takes the lowest id with that much left, so fractional tasks share one GPU before the
next is used (as Ray packs them). The node manager's resource count says whether a demand
fits; the pool says which ids it gets, and a demand that fits by count but finds no id free
(fractions spread over the ids) waits like one that does not fit: the ids free up as the
tasks holding them end. A demand a node's totals can hold always gets ids once that node is
idle, so this never turns a feasible task into one that waits for good.
"""
from __future__ import annotations

import math

#: slack when comparing what is left of a GPU (fractions are added and taken back as floats)
_EPS = 1e-9


class GpuPool:
    def __init__(self, total: float):
        whole = int(math.floor(total + _EPS))
        #: per id, the GPU it stands for (1.0, or the node's last fraction)
        self.capacity: list[float] = [1.0] * whole + ([total - whole] if total - whole > _EPS else [])
        #: per id, how much of that GPU is free now
        self.free: list[float] = list(self.capacity)

    def take(self, amount: float) -> list[int] | None:
        """The ids for ``amount`` GPUs, now taken; None when they are not free now."""
        if amount <= _EPS:
            return []
        if amount < 1.0:
            for i, f in enumerate(self.free):
                if f + _EPS >= amount:
                    self.free[i] = f - amount
                    return [i]
            return None
        k = int(round(amount))          # whole (api refuses fractions above 1)
        ids = [i for i, f in enumerate(self.free) if f + _EPS >= 1.0 and self.capacity[i] >= 1.0][:k]
        if len(ids) < k:
            return None
        for i in ids:
            self.free[i] = 0.0
        return ids

    def give(self, ids: list[int], amount: float) -> None:
        """``ids`` taken for ``amount`` GPUs are free again."""
        share = amount if amount < 1.0 else 1.0
        for i in ids:
            self.free[i] = min(self.capacity[i], self.free[i] + share)
