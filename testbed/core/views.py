"""What a policy sees: immutable snapshots.

A :class:`ClusterView` is built from the nodes' last heartbeats, so it can be stale;
that is the point (staleness is a parameter of both engines). Per-node state is kept in
read-only numpy arrays indexed by node number, so a placement decision over 1,000
nodes is a few vectorised operations, not a Python loop.

A :class:`LocalView` is the local scheduler's own, fresh, view of its node.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from .resources import EPS, Resources


class InputView(NamedTuple):
    """One input object of a task: its size and the nodes holding a copy."""
    size_bytes: int
    locations: tuple[int, ...]


class TaskView(NamedTuple):
    """A task as a policy sees it (immutable; a NamedTuple because engines make one per
    decision and it must be cheap)."""
    task_id: int
    function: str
    demand: Resources
    inputs: tuple[InputView, ...] = ()
    #: the node where the task was submitted (its local scheduler); -1 if none
    submitter: int = -1

    @property
    def input_bytes(self) -> int:
        return sum(i.size_bytes for i in self.inputs)

    def input_bytes_by_node(self) -> dict[int, int]:
        """Bytes of this task's inputs already present on each node that has some."""
        out: dict[int, int] = {}
        for inp in self.inputs:
            for n in inp.locations:
                out[n] = out.get(n, 0) + inp.size_bytes
        return out


class LocalView(NamedTuple):
    """A local scheduler's fresh view of its own node."""
    node: int
    total: Resources
    available: Resources
    #: tasks waiting for a worker on this node (not counting running ones)
    queue_length: int
    #: tasks running on this node
    running: int
    #: worker processes idle (in the simulator: free CPU slots)
    idle_workers: int
    #: the most of each resource free on any one other live node, as of the last heartbeats
    #: (:meth:`ClusterView.elsewhere`); None when the engine was not asked for it
    #: (``SpilloverPolicy.uses_cluster``)
    free_elsewhere: Resources | None = None
    #: free CPU slots on all other live nodes together, as of the last heartbeats
    free_slots_elsewhere: int = 0


class ClusterView:
    """The global scheduler's snapshot of the cluster, as of the last heartbeat.

    Arrays are indexed by node number and are read-only. ``resource_names`` gives the
    column order of ``total`` and ``available`` (shape ``(n_nodes, n_resources)``).
    """

    __slots__ = ("version", "as_of", "resource_names", "total", "available",
                 "queue_length", "running", "alive", "slots", "reports", "_col", "_mask_cache", "_idx_cache",
                 "_free")

    def __init__(self, *, version: int, as_of: float, resource_names: Sequence[str],
                 total: np.ndarray, available: np.ndarray, queue_length: np.ndarray,
                 running: np.ndarray, alive: np.ndarray | None = None,
                 slots: np.ndarray | None = None, reports: np.ndarray | None = None):
        n = len(queue_length)
        #: increases with every heartbeat round; policies use it to notice a new view
        self.version = int(version)
        #: simulated/wall time (s) at which this snapshot was taken
        self.as_of = float(as_of)
        self.resource_names = tuple(resource_names)
        self.total = _ro(np.asarray(total, dtype=float).reshape(n, len(self.resource_names)))
        self.available = _ro(np.asarray(available, dtype=float).reshape(n, len(self.resource_names)))
        #: tasks waiting for a worker on each node
        self.queue_length = _ro(np.asarray(queue_length, dtype=np.int64))
        #: tasks running on each node
        self.running = _ro(np.asarray(running, dtype=np.int64))
        #: nodes that were alive at the last heartbeat
        self.alive = _ro(np.ones(n, bool) if alive is None else np.asarray(alive, bool))
        #: worker slots per node (default: its CPU count, at least 1)
        if slots is None:
            cpu = self.total[:, self.resource_names.index("CPU")] if "CPU" in self.resource_names else np.ones(n)
            slots = np.maximum(cpu, 1.0)
        self.slots = _ro(np.asarray(slots, dtype=float))
        #: per node, which of its heartbeat reports this view holds (a count that advances
        #: with each report of that node). Default: ``version`` for every node — a view
        #: rebuilt from one synchronized heartbeat round (the simulator). The real global
        #: scheduler rebuilds its view at each node's own report and advances only that
        #: node's entry. See :func:`since_report`.
        self.reports = _ro(np.full(n, self.version, np.int64) if reports is None
                           else np.asarray(reports, dtype=np.int64))
        self._col = {name: i for i, name in enumerate(self.resource_names)}
        self._mask_cache: dict[tuple, np.ndarray] = {}
        self._idx_cache: dict[tuple, np.ndarray] = {}
        self._free = None

    @property
    def n_nodes(self) -> int:
        return len(self.queue_length)

    @property
    def membership(self) -> tuple[int, bytes]:
        """Which nodes the view holds and which of them are alive: what a task or a lost
        actor waiting for a node watches — both engines try it again at the first view whose
        membership differs from the last one's (a node joined, or one was declared dead)."""
        return self.n_nodes, self.alive.tobytes()

    def column(self, name: str) -> int | None:
        """Column of a resource in ``total``/``available``; None if no node has it."""
        return self._col.get(name)

    def _mask(self, demand: Resources, table: np.ndarray, tag: str) -> np.ndarray:
        key = (tag, tuple(sorted(demand.items())))
        mask = self._mask_cache.get(key)
        if mask is None:
            mask = self.alive.copy()
            for name, amount in demand.items():
                if amount <= EPS:
                    continue
                col = self._col.get(name)
                if col is None:
                    mask[:] = False
                    break
                mask &= table[:, col] + EPS >= amount
            mask.flags.writeable = False
            self._mask_cache[key] = mask
        return mask

    def feasible(self, demand: Resources) -> np.ndarray:
        """Nodes alive whose *total* resources can hold ``demand`` (bool array)."""
        return self._mask(demand, self.total, "total")

    def feasible_nodes(self, demand: Resources) -> np.ndarray:
        """Indices (ascending) of the nodes :meth:`feasible` for ``demand`` (cached)."""
        key = tuple(demand.items())
        idx = self._idx_cache.get(key)
        if idx is None:
            idx = np.flatnonzero(self.feasible(demand))
            idx.flags.writeable = False
            self._idx_cache[key] = idx
        return idx

    def elsewhere(self, node: int) -> tuple[dict[str, float], int]:
        """What a local scheduler knows of the rest of the cluster from the last heartbeats —
        one rule for both engines' :class:`LocalView`: (the most of each resource free on any
        one live node other than ``node``, the free CPU slots of all other live nodes
        together). O(resources) per call: the per-resource best and second best and the slot
        total are computed once per view."""
        if self._free is None:
            n, r = self.available.shape
            avail = np.where(self.alive[:, None], self.available, -np.inf) if n else self.available
            order = np.argsort(-avail, axis=0, kind="stable") if n else np.zeros((0, r), int)
            best = order[0] if n else np.zeros(r, int)
            first = avail[best, np.arange(r)] if n else np.zeros(r)
            second = avail[order[1], np.arange(r)] if n > 1 else np.full(r, -np.inf)
            col = self._col.get("CPU")
            slots = (np.floor(np.maximum(self.available[:, col], 0.0) + EPS) * self.alive) if col is not None \
                else np.zeros(n)
            self._free = (best, first, second, slots, float(slots.sum()))
        best, first, second, slots, total = self._free
        out = {}
        for j, name in enumerate(self.resource_names):
            v = second[j] if 0 <= node < self.n_nodes and best[j] == node else first[j]
            if v > 0:
                out[name] = float(v)
        mine = slots[node] if 0 <= node < self.n_nodes else 0.0
        return out, int(total - mine)

    def where_free(self, demand: Resources) -> "ClusterView":
        """This view restricted to the live nodes whose available resources hold ``demand``
        (:meth:`only`), or the view itself when none does; cached per demand, so a policy's
        per-view caches keep working across decisions."""
        key = ("free", tuple(sorted(demand.items())))
        v = self._mask_cache.get(key)
        if v is None:
            mask = self.has_available(demand)
            v = self._mask_cache[key] = self.only(mask) if mask.any() and not mask.all() else self
        return v

    def only(self, mask: np.ndarray) -> "ClusterView":
        """This view with every node outside ``mask`` counted as not alive (same version and
        reports): a policy given it chooses among ``mask``'s nodes."""
        return ClusterView(version=self.version, as_of=self.as_of, resource_names=self.resource_names,
                           total=self.total, available=self.available, queue_length=self.queue_length,
                           running=self.running, alive=self.alive & np.asarray(mask, bool), slots=self.slots,
                           reports=self.reports)

    def has_available(self, demand: Resources) -> np.ndarray:
        """Nodes alive whose *available* resources (at the snapshot) hold ``demand``."""
        return self._mask(demand, self.available, "avail")

    def is_feasible(self, node: int, demand: Resources) -> bool:
        return bool(self.feasible(demand)[node])

    def utilisation(self, resources: Sequence[str] = ("CPU",)) -> np.ndarray:
        """Per node, max over ``resources`` of 1 - available/total (0 where total is 0)."""
        u = np.zeros(self.n_nodes)
        for name in resources:
            col = self._col.get(name)
            if col is None:
                continue
            tot = self.total[:, col]
            with np.errstate(divide="ignore", invalid="ignore"):
                x = np.where(tot > 0, 1.0 - self.available[:, col] / np.where(tot > 0, tot, 1.0), 0.0)
            np.maximum(u, x, out=u)
        return u


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


def make_cluster_view(nodes: Sequence[Mapping], *, version: int = 0, as_of: float = 0.0) -> ClusterView:
    """Build a view from plain dicts (handy in tests and in the real runtime).

    Each dict: ``total`` and ``available`` (resource mappings), ``queue_length``,
    ``running``, optional ``alive`` (default True).
    """
    names = sorted({k for nd in nodes for k in nd["total"]} | {k for nd in nodes for k in nd.get("available", {})})
    total = np.array([[float(nd["total"].get(k, 0.0)) for k in names] for nd in nodes]).reshape(len(nodes), len(names))
    avail = np.array([[float(nd.get("available", nd["total"]).get(k, 0.0)) for k in names] for nd in nodes]).reshape(len(nodes), len(names))
    return ClusterView(
        version=version, as_of=as_of, resource_names=names, total=total, available=avail,
        queue_length=np.array([nd.get("queue_length", 0) for nd in nodes]),
        running=np.array([nd.get("running", 0) for nd in nodes]),
        alive=np.array([nd.get("alive", True) for nd in nodes]),
    )


def since_report(counts: np.ndarray | None, seen: np.ndarray | None, view: ClusterView,
                 dtype=float) -> tuple[np.ndarray, np.ndarray]:
    """The rule for "tasks sent to a node since the view's heartbeat" (PaperWaitTime's and
    RecentAssignments' recent-assignment counts), one for both engines: a node's count is
    reset when *that node's* next report arrives (``view.reports`` changes for it), as the
    2018 Ray global scheduler reset ``num_recent_tasks_sent`` of a local scheduler on that
    local scheduler's heartbeat. ``counts`` / ``seen`` are the previous counts and the
    ``reports`` they belong to (None at first); returns the counts to use with ``view``
    (reset where a new report came, zeros for a new cluster size) and ``view.reports``."""
    if counts is None or seen is None or len(counts) != view.n_nodes:
        return np.zeros(view.n_nodes, dtype=dtype), view.reports
    fresh = view.reports != seen
    if fresh.any():
        counts = counts.copy()
        counts[fresh] = 0
    return counts, view.reports
