"""Built-in spillover policies (the local scheduler: keep a task, or forward it).

A task whose demand the node's *total* resources cannot hold is always forwarded:
kept, it would wait forever.
"""
from __future__ import annotations

from numbers import Integral

from ..core.resources import fits
from .base import SpilloverPolicy
from .registry import register


@register("spillover")
class QueueThreshold(SpilloverPolicy):
    """The Ray paper's rule: forward iff the node can never hold the task or its local
    queue has ``threshold`` or more waiting tasks (0: always forward). Stateless."""

    def __init__(self, threshold: int = 8):
        if isinstance(threshold, bool) or not isinstance(threshold, Integral) or threshold < 0:
            raise ValueError(f"threshold must be an integer >= 0 (queued tasks), got {threshold!r}")
        self.threshold = int(threshold)

    def should_forward(self, task, local, now, rng):
        return not fits(task.demand, local.total) or local.queue_length >= self.threshold


@register("spillover")
class ResourceAware(SpilloverPolicy):
    """The default: keep a task the node can start now (nothing queued before it, its demand
    free); otherwise forward it if the last heartbeats show a node with room for it
    (``LocalView.free_elsewhere``), else keep it unless ``threshold`` or more wait here (the
    paper's rule, for when no node has room). At each heartbeat, queued tasks are sent back
    to the global scheduler while other nodes have free CPU slots (spillback: as many as
    those slots, never more than the queue). So no work waits here while capacity is idle
    elsewhere for longer than about a heartbeat. The global scheduler places what it forwards
    among the nodes with room for it now, if any (``place_where_free``; policy.base.placement_view),
    with the configured placement policy. Stateless."""

    uses_cluster = True
    place_where_free = True

    def __init__(self, threshold: int = 8):
        if isinstance(threshold, bool) or not isinstance(threshold, Integral) or threshold < 0:
            raise ValueError(f"threshold must be an integer >= 0 (queued tasks), got {threshold!r}")
        self.threshold = int(threshold)

    def should_forward(self, task, local, now, rng):
        if local.queue_length == 0 and fits(task.demand, local.available):
            return False
        if local.free_elsewhere is not None and fits(task.demand, local.free_elsewhere):
            return True
        return local.queue_length >= self.threshold

    def spillback(self, local, now):
        return min(local.queue_length, max(0, local.free_slots_elsewhere))


@register("spillover")
class IdleWorkerAndLocalInputs(SpilloverPolicy):
    """The 2018 open-source rule: keep only if the demand fits the resources available
    now, a worker is idle, and every input already has a copy on this node; otherwise
    forward. Stateless."""

    def should_forward(self, task, local, now, rng):
        return not (local.idle_workers > 0 and fits(task.demand, local.available)
                    and all(local.node in inp.locations for inp in task.inputs))


@register("spillover")
class AlwaysLocal(SpilloverPolicy):
    """Keep everything the node can ever hold (no global scheduling). Stateless."""

    def should_forward(self, task, local, now, rng):
        return not fits(task.demand, local.total)


@register("spillover")
class AlwaysGlobal(SpilloverPolicy):
    """Forward everything (a centralised scheduler). Stateless."""

    def should_forward(self, task, local, now, rng):
        return True
