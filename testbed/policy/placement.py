"""Built-in placement policies (the global scheduler's choice of node).

All of them filter to the nodes whose total resources can hold the task
(``view.feasible``), break ties by the lowest node index, and report the same predicted
wait for the node they choose (the Ray paper's model, :meth:`WaitModel.predicted_waits`):

    wait(m) = queue_length[m] * task_time[m] / slots[m] + remote_bytes(m) / bandwidth[m]

so placement quality and prediction error can be compared across policies. Everything
per node is a numpy vector over the view's arrays; no Python loop over nodes. Each class
says what a decision costs; :class:`PaperWaitTime`'s is O(log n_nodes) Python for a task
without inputs (a per-view heap, built in O(n_nodes) once per view and estimator update),
else O(n_nodes) numpy with one ``estimate_nodes`` per estimator (see
:class:`~testbed.policy.base.KeyedEstimator` for what that costs per keying and estimator).
"""
from __future__ import annotations

import heapq
import math
from numbers import Integral, Real

import numpy as np

from ..core.views import ClusterView, TaskView, since_report
from .base import KeyedEstimator, Placement, PlacementPolicy
from .estimators import ExponentialAverage
from .registry import register

_tuple_new = tuple.__new__


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _count(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def bytes_on_nodes(task: TaskView, n_nodes: int) -> np.ndarray:
    """Bytes of the task's inputs already on each node (O(inputs x locations))."""
    out = np.zeros(n_nodes)
    for inp in task.inputs:
        for m in inp.locations:
            if 0 <= m < n_nodes:
                out[m] += inp.size_bytes
    return out


class WaitModel(PlacementPolicy):
    """Base of the built-ins: the shared predicted-wait model and its cold-start rule.

    Estimates come from ``self.task_time`` (s) and ``self.bandwidth`` (bytes/s); where
    they have no value (NaN), ``default_task_time_s`` and ``default_bandwidth_bytes_per_s``
    are used (with the task-time default the queue term orders nodes by queue length).
    ``per_slot`` divides the queue term by the node's worker slots. ``count_recent`` adds
    to a node's heartbeat queue length the tasks this policy sent it since that node's last
    heartbeat (reset per node when its own report arrives, :func:`testbed.core.views.since_report`;
    the 2018 code did this; without it, every decision between two heartbeats sees the
    same queues and an argmin sends them all to one node). Until the engine binds
    estimators, global exponential averages (alpha 0.1) are used.
    """

    def __init__(self, *, per_slot: bool = True, default_task_time_s: float = 1.0,
                 default_bandwidth_bytes_per_s: float = 1.25e9, count_recent: bool = True):
        if not isinstance(per_slot, bool):
            raise ValueError(f"per_slot must be true or false, got {per_slot!r}")
        if not isinstance(count_recent, bool):
            raise ValueError(f"count_recent must be true or false, got {count_recent!r}")
        self.per_slot = per_slot
        self.count_recent = count_recent
        #: changes with every task-time sample (observe_task, observe_tasks) and estimator
        #: binding: caches derived from estimates check it
        self._estimates_version = 0
        #: view version the recent counts belong to, and tasks sent per node since it
        self._recent_version: int | None = None
        self._recent = np.zeros(0)
        self._recent_reports: np.ndarray | None = None
        self.default_task_time_s = _positive("default_task_time_s", default_task_time_s)
        self.default_bandwidth_bytes_per_s = _positive("default_bandwidth_bytes_per_s",
                                                       default_bandwidth_bytes_per_s)
        self.bind_estimators(KeyedEstimator(ExponentialAverage, "global", "task_time"),
                             KeyedEstimator(ExponentialAverage, "global", "bandwidth"))
        self.reset()

    def reset(self) -> None:
        """Forget any decision state (subclasses that keep some override this)."""

    def observe_task(self, function: str, node: int, duration_s: float, now: float) -> None:
        self._estimates_version += 1        # what was derived from the estimates is stale
        super().observe_task(function, node, duration_s, now)

    def observe_tasks(self, node: int, durations: list, now: float) -> None:
        if type(self).observe_task is WaitModel.observe_task:    # no subclass hooks each sample
            if durations:
                self._estimates_version += 1
                self.task_time.update_many(node, durations, now)
            return
        super().observe_tasks(node, durations, now)

    def bind_estimators(self, task_time: KeyedEstimator, bandwidth: KeyedEstimator) -> None:
        # what was derived from the old estimators' values is stale
        self._estimates_version = getattr(self, "_estimates_version", 0) + 1
        super().bind_estimators(task_time, bandwidth)

    def recent(self, view: ClusterView) -> np.ndarray:
        """Tasks this policy sent to each node since ``view``'s heartbeat."""
        if view.version != self._recent_version or len(self._recent) != len(view.queue_length):
            # per node: reset when that node's own report is in the view (core.views.since_report)
            self._recent_version = view.version
            self._recent, self._recent_reports = since_report(self._recent, self._recent_reports, view)
        return self._recent

    def queue_lengths(self, view: ClusterView) -> np.ndarray:
        """Queue length per node as this policy believes it (see ``count_recent``)."""
        if self.count_recent:
            return view.queue_length + self.recent(view)
        return view.queue_length

    def predicted_waits(self, task: TaskView, view: ClusterView, now: float,
                        bytes_on: np.ndarray | None = None) -> np.ndarray:
        """Predicted wait (s) of ``task`` on every node of ``view`` (shape ``(n_nodes,)``;
        infeasible and dead nodes included; a NaN product counts as +inf)."""
        n = view.n_nodes
        tt = self.task_time.estimate_nodes(task.function, n, now, default=self.default_task_time_s)
        wait = self.queue_lengths(view) * tt
        if self.per_slot:
            wait /= view.slots
        if task.inputs:
            wait += _transfer_s(self, task, view, now, bytes_on)
        if np.isnan(wait.sum()):      # only if an estimate was inf or NaN: count it as +inf
            wait[np.isnan(wait)] = np.inf
        return wait

    def _placement(self, task, view, now, node, waits=None) -> Placement:
        if waits is None:
            waits = self.predicted_waits(task, view, now)
        if self.count_recent:
            self.recent(view)[node] += 1
        return Placement(int(node), float(waits[node]))


def _argmin_among(values: np.ndarray, idx: np.ndarray) -> int:
    """The index in ``idx`` (ascending) with the least value; ties -> the lowest index."""
    if len(idx) == len(values):      # every node is a candidate
        return int(np.argmin(values))
    return int(idx[np.argmin(values[idx])])


@register("placement")
class PaperWaitTime(WaitModel):
    """The Ray paper's rule: the feasible node with the least predicted wait
    (``per_slot=False``: the paper's literal queue * time, without / slots;
    ``count_recent=False``: heartbeat queue lengths alone).
    Cold start: the default task time and bandwidth (see :class:`WaitModel`).
    Cost per decision: a task without inputs, with estimates that change only on update (all
    built-in estimators but the Oracle), O(log n_nodes) Python — one heap pop and push, plus
    one per node whose entry another function's decisions made stale — once the heap of its
    (function, demand) exists for the view and estimates (built in O(n_nodes) numpy and
    Python at the first such decision after each heartbeat or estimator update); otherwise,
    or when some wait is NaN or infinite, O(n_nodes) numpy (the vector path)."""

    def __init__(self, per_slot: bool = True, default_task_time_s: float = 1.0,
                 default_bandwidth_bytes_per_s: float = 1.25e9, count_recent: bool = True):
        super().__init__(per_slot=per_slot, default_task_time_s=default_task_time_s,
                         default_bandwidth_bytes_per_s=default_bandwidth_bytes_per_s,
                         count_recent=count_recent)

    #: decide tasks without inputs from per-view heaps (see :meth:`_place_heap`); False: always
    #: the vector computation (the reference the heaps are tested against)
    use_heaps = True

    def reset(self) -> None:
        #: (function, demand) -> [view, estimates version, heap of (wait, node, recent count
        #: used), q, tt, slots]: the heap of that view and those estimates
        self._heaps: dict = {}

    def place(self, task, view, now, rng):
        if not task.inputs and self.use_heaps:
            h = self._heaps.get((task.function, tuple(task.demand.items())))
            if h is not None and h[0] is view and h[1] == self._estimates_version:
                return self._pop_heap(h, view)      # the common case: O(log n), nothing built
        idx = view.feasible_nodes(task.demand)
        if not len(idx):
            return None
        if not task.inputs and self.use_heaps and self.task_time.changes_only_on_update:
            h = self._build_heap(task, view, now, idx)
            if h is not None:
                return self._pop_heap(h, view)
        waits = self.predicted_waits(task, view, now)
        self._heaps.clear()                 # the recent count this decision adds is not in them
        return self._placement(task, view, now, _argmin_among(waits, idx), waits)

    def _build_heap(self, task, view, now, idx) -> list | None:
        """The heap path (:meth:`_pop_heap`) decides as the vector path (least predicted
        wait, ties to the lowest node) in O(log n): between two views and two estimator
        updates a node's wait changes only by this policy's own assignments, so a heap of
        (wait, node) per (function, demand) is built once per view and estimates (O(n)) and
        each decision pops its top. None (use the vector path): a NaN or infinite wait
        somewhere."""
        waits = self.predicted_waits(task, view, now)
        if not np.isfinite(waits[idx]).all():
            return None
        n = view.n_nodes
        tt = self.task_time.estimate_nodes(task.function, n, now, default=self.default_task_time_s).tolist()
        q = view.queue_length.tolist()
        slots = view.slots.tolist() if self.per_slot else None
        r = self.recent(view).tolist() if self.count_recent else [0.0] * n
        heap = [(w, i, r[i]) for w, i in zip(waits[idx].tolist(), idx.tolist())]
        heapq.heapify(heap)
        h = self._heaps[(task.function, tuple(task.demand.items()))] = [view, self._estimates_version, heap, q,
                                                                       tt, slots]
        return h

    def _pop_heap(self, h: list, view) -> Placement:
        """One decision from heap ``h`` (of ``view``). A decision for another function raises
        a node's recent count under this heap's entry, which then under-states that node's
        wait; such stale entries are refreshed when they reach the top, so the fresh top is
        the true minimum."""
        heap = h[2]
        if not self.count_recent:
            w, m, _ = heap[0]
            return _tuple_new(Placement, (m, w))
        recent = self._recent           # self.recent(view), without the call when current
        if view.version != self._recent_version or len(recent) != len(view.queue_length):
            recent = self.recent(view)
        q, tt, slots = h[3], h[4], h[5]
        while True:
            w, m, used = heap[0]
            cur = float(recent[m])
            if cur == used:
                break
            fresh = (q[m] + cur) * tt[m]    # the vector path's (queue + recent) * tt / slots
            heapq.heapreplace(heap, (fresh / slots[m] if slots is not None else fresh, m, cur))
        cur += 1.0
        recent[m] = cur
        nxt = (q[m] + cur) * tt[m]
        heapq.heapreplace(heap, (nxt / slots[m] if slots is not None else nxt, m, cur))
        return _tuple_new(Placement, (m, w))


@register("placement")
class RecentAssignments(WaitModel):
    """The 2018 open-source rule: the feasible node with the least queue length plus tasks
    this policy sent it since that node's last heartbeat (a node's count resets when its
    own report reaches the view: core.views.since_report). Cold start: all counts 0, i.e. least queue length.
    Cost per decision: O(n_nodes) numpy (and the reported wait's ``estimate_nodes``)."""

    def reset(self) -> None:
        self._version: int | None = None
        #: tasks sent to each node since the view with ``_version``
        self._sent = np.zeros(0, dtype=np.int64)
        #: the view.reports the counts belong to
        self._seen: np.ndarray | None = None

    def place(self, task, view, now, rng):
        idx = np.flatnonzero(view.feasible(task.demand))
        if not len(idx):
            return None
        if view.version != self._version or len(self._sent) != view.n_nodes:
            self._version = view.version
            self._sent, self._seen = since_report(self._sent, self._seen, view, np.int64)
        node = _argmin_among(view.queue_length + self._sent, idx)
        self._sent[node] += 1
        return self._placement(task, view, now, node)


@register("placement")
class Random(WaitModel):
    """Uniform among the feasible nodes (``rng.integers``). No state, no cold start.
    Cost per decision: O(n_nodes) numpy (the feasible indices; the reported wait)."""

    def place(self, task, view, now, rng):
        idx = np.flatnonzero(view.feasible(task.demand))
        if not len(idx):
            return None
        return self._placement(task, view, now, idx[rng.integers(len(idx))])


@register("placement")
class RoundRobin(WaitModel):
    """The next feasible node after the last one chosen, cycling by index.
    Cold start: the lowest feasible index. Cost per decision: O(n_nodes) numpy."""

    def reset(self) -> None:
        #: the node chosen last (-1: none yet)
        self._last = -1

    def place(self, task, view, now, rng):
        idx = np.flatnonzero(view.feasible(task.demand))
        if not len(idx):
            return None
        pos = int(np.searchsorted(idx, self._last, side="right"))
        self._last = node = int(idx[pos if pos < len(idx) else 0])
        return self._placement(task, view, now, node)


@register("placement")
class LeastLoaded(WaitModel):
    """The feasible node with the least (queue_length + recent + running) / slots, where
    ``recent`` is the tasks this policy sent the node since that node's last heartbeat
    (as the paper's rule counts them, :meth:`WaitModel.recent`; ``count_recent=False``:
    heartbeat loads alone, which sends every decision between two heartbeats to the same
    node). No estimates, no cold start. Cost per decision: O(n_nodes) numpy."""

    def place(self, task, view, now, rng):
        idx = np.flatnonzero(view.feasible(task.demand))
        if not len(idx):
            return None
        load = (self.queue_lengths(view) + view.running) / view.slots
        return self._placement(task, view, now, _argmin_among(load, idx))


@register("placement")
class PowerOfTwoChoices(WaitModel):
    """Sparrow-style: sample ``d`` distinct feasible nodes (all of them if fewer) and take
    the one with the least queue_length + running (ties -> lowest index).
    No estimates, no cold start. Cost per decision: O(n_nodes) numpy (the feasible indices,
    the sample, the reported wait)."""

    def __init__(self, d: int = 2, *, per_slot: bool = True,
                 default_task_time_s: float = 1.0,
                 default_bandwidth_bytes_per_s: float = 1.25e9, count_recent: bool = True):
        super().__init__(per_slot=per_slot, default_task_time_s=default_task_time_s,
                         default_bandwidth_bytes_per_s=default_bandwidth_bytes_per_s,
                         count_recent=count_recent)
        self.d = _count("d", d, 1)

    def place(self, task, view, now, rng):
        idx = np.flatnonzero(view.feasible(task.demand))
        if not len(idx):
            return None
        if len(idx) > self.d:
            idx = np.sort(rng.choice(idx, size=self.d, replace=False))
        return self._placement(task, view, now,
                               _argmin_among(view.queue_length + view.running, idx))


@register("placement")
class LocalityFirst(WaitModel):
    """The feasible node holding the most input bytes (Ray 2.x lease locality); ties ->
    least predicted wait -> lowest index. With no inputs it is :class:`PaperWaitTime`.
    Cold start: as :class:`WaitModel`. Cost per decision: O(inputs x locations) Python plus
    O(n_nodes) numpy."""

    def place(self, task, view, now, rng):
        idx = np.flatnonzero(view.feasible(task.demand))
        if not len(idx):
            return None
        bytes_on = bytes_on_nodes(task, view.n_nodes)
        waits = self.predicted_waits(task, view, now, bytes_on)
        b = bytes_on[idx]
        idx = idx[b == b.max()]
        return self._placement(task, view, now, _argmin_among(waits, idx), waits)


@register("placement")
class HybridSpread(WaitModel):
    """Ray 2.x's DEFAULT (HybridSchedulingPolicy): score = CPU utilisation, set to 0 below
    ``spread_threshold``; nodes with the demand available now are preferred over
    feasible-but-busy ones. The submitter keeps the task if it is a candidate and its
    score is <= the best; otherwise uniform (rng) among the best
    k = max(``top_k_absolute``, floor(``top_k_fraction`` * n_feasible)) by (score, index).
    No estimates, no cold start. Cost per decision: O(n_nodes log n_nodes) numpy (a sort)."""

    def __init__(self, spread_threshold: float = 0.5, top_k_fraction: float = 0.2,
                 top_k_absolute: int = 1, *, per_slot: bool = True,
                 default_task_time_s: float = 1.0,
                 default_bandwidth_bytes_per_s: float = 1.25e9, count_recent: bool = True):
        super().__init__(per_slot=per_slot, default_task_time_s=default_task_time_s,
                         default_bandwidth_bytes_per_s=default_bandwidth_bytes_per_s,
                         count_recent=count_recent)
        self.spread_threshold = _fraction("spread_threshold", spread_threshold)
        self.top_k_fraction = _fraction("top_k_fraction", top_k_fraction)
        self.top_k_absolute = _count("top_k_absolute", top_k_absolute, 1)

    def place(self, task, view, now, rng):
        feasible = view.feasible(task.demand)
        n_feasible = int(np.count_nonzero(feasible))
        if not n_feasible:
            return None
        avail = view.has_available(task.demand)
        cand = avail if avail.any() else feasible
        idx = np.flatnonzero(cand)
        score = view.utilisation(("CPU",))
        score[score < self.spread_threshold] = 0.0
        s = score[idx]
        sub = task.submitter
        if 0 <= sub < view.n_nodes and cand[sub] and score[sub] <= s.min():
            return self._placement(task, view, now, sub)
        k = min(len(idx), max(self.top_k_absolute,
                              math.floor(self.top_k_fraction * n_feasible)))
        order = idx[np.argsort(s, kind="stable")]
        node = order[0] if k == 1 else order[rng.integers(k)]
        return self._placement(task, view, now, node)


def _transfer_s(policy: WaitModel, task: TaskView, view: ClusterView, now: float,
                bytes_on: np.ndarray | None = None) -> np.ndarray | None:
    """Seconds to fetch ``task``'s inputs not yet on each node (remote bytes / estimated
    bandwidth, the transfer term of :meth:`WaitModel.predicted_waits`); None without inputs."""
    if not task.inputs:
        return None
    n = view.n_nodes
    if bytes_on is None:
        bytes_on = bytes_on_nodes(task, n)
    remote = np.maximum(task.input_bytes - bytes_on, 0.0)
    bw = policy.bandwidth.estimate_nodes(None, n, now, default=None)
    np.copyto(bw, policy.default_bandwidth_bytes_per_s, where=np.isnan(bw))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(remote > 0, remote / bw, 0.0)


def _nan_to_inf(x: np.ndarray) -> np.ndarray:
    if np.isnan(x.sum()):
        x[np.isnan(x)] = np.inf
    return x


@register("placement")
class ResidualWaitTime(WaitModel):
    """The paper's rule with the running tasks' remaining time counted: the paper's wait
    ``queue x task_time / slots`` says 0 for a node whose slots are all busy but whose
    queue is empty. Here, with ``q`` = queue_length + recent (as :class:`PaperWaitTime`
    counts them) and ``r`` = running:

        wait(m) = 0                                                  if q + r < slots
                = (q + residual_fraction * r) * task_time[m] / slots  otherwise
                  + remote_bytes(m) / bandwidth[m]

    (``per_slot=False``: without ``/ slots``). A view has running *counts*, not the
    running tasks' ages, so each running task is taken to have ``residual_fraction`` of
    an estimated task time left: 0.5 is the mean residual of a deterministic duration at a
    uniform age; 1 is exact for exponential durations (memoryless); 0 is the paper's
    formula plus the free-slot rule. The predicted wait reported is the paper's
    (:meth:`WaitModel.predicted_waits`, as every built-in reports), so prediction errors
    compare across policies; this model's own is :meth:`residual_waits`.
    Cold start: as :class:`WaitModel`. Cost per decision: O(n_nodes) numpy (two
    ``estimate_nodes``: this model's and the reported one).
    """

    def __init__(self, residual_fraction: float = 0.5, *, per_slot: bool = True,
                 default_task_time_s: float = 1.0, default_bandwidth_bytes_per_s: float = 1.25e9,
                 count_recent: bool = True):
        super().__init__(per_slot=per_slot, default_task_time_s=default_task_time_s,
                         default_bandwidth_bytes_per_s=default_bandwidth_bytes_per_s,
                         count_recent=count_recent)
        if isinstance(residual_fraction, bool) or not isinstance(residual_fraction, Real) \
                or not 0 <= residual_fraction < math.inf:
            raise ValueError(f"residual_fraction must be a finite number >= 0, got {residual_fraction!r}")
        self.residual_fraction = float(residual_fraction)

    def place(self, task, view, now, rng):
        idx = view.feasible_nodes(task.demand)
        if not len(idx):
            return None
        return self._placement(task, view, now, _argmin_among(self.residual_waits(task, view, now), idx))

    def residual_waits(self, task: TaskView, view: ClusterView, now: float,
                       bytes_on: np.ndarray | None = None) -> np.ndarray:
        """This model's predicted wait (s) of ``task`` on every node (NaN -> +inf)."""
        n = view.n_nodes
        tt = self.task_time.estimate_nodes(task.function, n, now, default=self.default_task_time_s)
        q = self.queue_lengths(view)
        wait = (q + self.residual_fraction * view.running) * tt
        if self.per_slot:
            wait /= view.slots
        wait[q + view.running < view.slots] = 0.0
        xfer = _transfer_s(self, task, view, now, bytes_on)
        if xfer is not None:
            wait += xfer
        return _nan_to_inf(wait)


@register("placement")
class Occupancy(WaitModel):
    """Dask-style: the feasible node where the task is expected to *finish* first,

        occupancy(m) = (q + residual_fraction * r) * task_time[m]        (seconds of work)
        finish(m)    = occupancy(m) / slots + remote_bytes(m) / bandwidth[m] + task_time[m]

    with ``q`` = queue_length + recent (as :class:`PaperWaitTime`) and ``r`` = running
    (each running task ``residual_fraction`` of an estimate from its end, as
    :class:`ResidualWaitTime`). Dask's ``worker_objective`` is the start time
    (occupancy / threads + transfer); adding the task's own run time on ``m`` makes a fast
    node beat a slow one at equal start. It uses the estimates' absolute values: the task
    time is weighed against the transfer time, and ``submitter_margin_s`` > 0 keeps the
    task on its submitter when its finish there is within that many seconds of the best
    (a kept task saves its hop and its input transfers; 0: off), so an estimate too small
    or too large by a constant factor changes decisions. Ties -> lowest index. The
    predicted wait reported is the paper's, as every built-in's.
    Cold start: as :class:`WaitModel`. Cost per decision: O(n_nodes) numpy (two
    ``estimate_nodes``: this objective's and the reported wait's).
    """

    def __init__(self, residual_fraction: float = 0.5, submitter_margin_s: float = 0.0, *,
                 per_slot: bool = True, default_task_time_s: float = 1.0,
                 default_bandwidth_bytes_per_s: float = 1.25e9, count_recent: bool = True):
        super().__init__(per_slot=per_slot, default_task_time_s=default_task_time_s,
                         default_bandwidth_bytes_per_s=default_bandwidth_bytes_per_s,
                         count_recent=count_recent)
        for name, v in (("residual_fraction", residual_fraction), ("submitter_margin_s", submitter_margin_s)):
            if isinstance(v, bool) or not isinstance(v, Real) or not 0 <= v < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        self.residual_fraction = float(residual_fraction)
        self.submitter_margin_s = float(submitter_margin_s)

    def place(self, task, view, now, rng):
        idx = view.feasible_nodes(task.demand)
        if not len(idx):
            return None
        n = view.n_nodes
        tt = self.task_time.estimate_nodes(task.function, n, now, default=self.default_task_time_s)
        start = (self.queue_lengths(view) + self.residual_fraction * view.running) * tt
        if self.per_slot:
            start /= view.slots
        xfer = _transfer_s(self, task, view, now)
        if xfer is not None:
            start += xfer
        start = _nan_to_inf(start)
        finish = _nan_to_inf(start + tt)
        node = _argmin_among(finish, idx)
        sub = task.submitter
        if self.submitter_margin_s and 0 <= sub < n and sub != node and view.feasible(task.demand)[sub] \
                and finish[sub] <= finish[node] + self.submitter_margin_s:
            node = sub
        return self._placement(task, view, now, node)
