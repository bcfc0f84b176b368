"""Base classes of the policy layer and the keyed-estimator wrapper.

Extension points are one or two methods each:

- :class:`Estimator`: ``update(x, now)`` and ``estimate(now)``.
- :class:`PlacementPolicy`: ``place(task, view, now, rng) -> Placement | None``.
- :class:`SpilloverPolicy`: ``should_forward(task, local, now, rng) -> bool``; engines call
  ``forwards``, which also forwards a task the node can never hold.

A placement policy owns two keyed estimators, ``self.task_time`` (seconds per task)
and ``self.bandwidth`` (bytes per second), bound by the engine from the config's
``[scheduler]`` section; the default ``observe_task`` / ``observe_transfer`` feed them.
Both engines call those through :func:`deliver_reports`, which fixes *when* a sample
arrives: with the heartbeat that follows the finish; :func:`reports_run_time` fixes *which*
attempts give one: the finished ones.
"""
from __future__ import annotations

from typing import Callable, Iterable, NamedTuple

import numpy as np

from ..core.resources import fits
from ..core.task import TaskState
from ..core.views import ClusterView, LocalView, TaskView

#: How one estimate is shared: one for everything, one per node, per function, per both.
KEYINGS = ("global", "node", "function", "function_node")

#: The engine's truth for the Oracle: (quantity, function, node, now) -> value or None.
#: quantity is "task_time" (seconds) or "bandwidth" (bytes/s); function/node may be None
#: when the keying does not distinguish them.
Truth = Callable[[str, "str | None", "int | None", float], "float | None"]


class Estimator:
    """Estimates a quantity from a stream of samples.

    Cold start: ``estimate()`` returns ``prior`` (default None) until the first sample;
    None tells the policy to fall back. Subclasses document their rule.
    """

    #: set by subclasses that want the engine's truth instead of samples (the Oracle)
    wants_truth = False
    #: False when ``estimate(now)`` depends only on the samples taken, not on ``now``; the
    #: KeyedEstimator then caches per-node values at update time (vectorised reads)
    estimate_uses_now = True

    def __init__(self, prior: float | None = None):
        #: value returned before the first sample (None: the policy falls back)
        self.prior = prior

    def update(self, x: float, now: float) -> None:
        """Take one sample ``x`` observed at time ``now`` (seconds)."""
        raise NotImplementedError

    def update_many(self, xs: list[float], now: float) -> None:
        """``update(x, now)`` for each of ``xs`` in order (a subclass may do it in one loop;
        it must end in the same state)."""
        for x in xs:
            self.update(x, now)

    def estimate(self, now: float | None = None) -> float | None:
        """The current estimate, or ``prior`` before any sample."""
        raise NotImplementedError


#: Cold-start options of a keyed estimator, with their defaults (which keep the plain
#: behaviour: a key is trusted from its first sample, falls back to the global estimate,
#: no floor, no reset). In a config they are entries of the estimator's table, taken off
#: before the estimator is built (``policy.build``), e.g.
#: ``task_time = {name = "ExponentialAverage", alpha = 0.1, prior = 0.05, min_samples = 3,
#: fallback = "coarser", floor = 0.001, reset_factor = 2.0}``.
COLD_START: dict[str, object] = {
    # samples a finer key (node, function, function x node) needs before its estimate is
    # used; until then the fallback's is (integer >= 1)
    "min_samples": 1,
    # where an untrusted key looks next: "global" (the estimate over every sample), or
    # "coarser" (function_node -> function -> global; node and function -> global)
    "fallback": "global",
    # the least estimate ever returned, in the quantity's unit (s for task_time, bytes/s
    # for bandwidth); 0: none
    "floor": 0.0,
    # > 1: a sample more than this many times its key's current estimate restarts that
    # key's estimator from the sample (the sample-side form of Dask's rule, see
    # KeyedEstimator); 0: off
    "reset_factor": 0.0,
}
FALLBACKS = ("global", "coarser")

#: The engine's truth for every node at once: (quantity, function, n_nodes, now) -> array of
#: shape (n_nodes,) (NaN where unknown), a new array the caller may change in place;
#: function is None when the keying hides it.
TruthNodes = Callable[[str, "str | None", int, float], np.ndarray]


class KeyedEstimator:
    """One estimator per key, made on demand by ``factory``.

    ``keying`` is one of :data:`KEYINGS`. A coarser *fallback* estimator of the same
    kind sees every sample, so a key with no samples yet can borrow the overall estimate
    (``estimate(..., fallback=True)``).

    Cold start (:data:`COLD_START`; the defaults change nothing): a finer key's estimate is
    used once it has ``min_samples`` samples; before that the fallback's is —
    the global estimator's (``fallback="global"``), or with ``fallback="coarser"`` and
    keying ``function_node`` the function's (its own estimator, fed every sample of that
    function, trusted from ``min_samples`` too), then the global one. The global estimate
    is used from its first sample (it is the last resort), before it the estimator's
    ``prior``, then the policy's default. Every value returned (prior, fallback and default
    included) is at least ``floor``. ``reset_factor`` is the part of Dask's rule ("a task
    running longer than twice its estimate raises it") a policy can apply: a
    ClusterView has running *counts*, not running tasks' ages, so the rule acts when the
    long task's sample arrives: a sample above ``reset_factor`` x its key's estimate
    restarts that key's estimator (at each level: key, function, global) from the sample,
    keeping its sample count.

    Cost per decision (``estimate_nodes``): global/function keying O(1); node and
    function_node keying with now-independent estimators (all built-ins) one vector copy
    of the cached per-node values, plus one vector fill when some node is untrusted; the
    Oracle one call of the engine's vectorised truth (``truth_nodes``) when it has one,
    else one truth call per node; other estimators one ``estimate`` per node (Python).
    """

    def __init__(self, factory: Callable[[], Estimator], keying: str = "global",
                 quantity: str = "task_time", *, min_samples: int = 1, fallback: str = "global",
                 floor: float = 0.0, reset_factor: float = 0.0):
        if keying not in KEYINGS:
            raise ValueError(f"keying must be one of {', '.join(KEYINGS)}, not {keying!r}")
        if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
            raise ValueError(f"min_samples must be an integer >= 1 (samples), got {min_samples!r}")
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, not {fallback!r}")
        for name, v in (("floor", floor), ("reset_factor", reset_factor)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if 0 < reset_factor <= 1:
            raise ValueError(f"reset_factor must be 0 (off) or > 1, got {reset_factor!r}")
        self.factory = factory
        self.keying = keying
        #: "task_time" or "bandwidth" (what the Oracle is asked for)
        self.quantity = quantity
        #: cold-start options (see the class docstring)
        self.min_samples = int(min_samples)
        self.fallback = fallback
        self.floor = float(floor)
        self.reset_factor = float(reset_factor)
        self._by_key: dict[object, Estimator] = {}
        #: samples seen per key (for min_samples)
        self._count: dict[object, int] = {}
        self._fallback = factory()
        #: samples the global fallback has seen
        self._n_global = 0
        #: function -> its estimator and sample count (function_node keying, coarser fallback)
        self._by_function: dict[str | None, Estimator] | None = (
            {} if keying == "function_node" and fallback == "coarser" else None)
        self._function_count: dict[str | None, int] = {}
        self.truth: Truth | None = None
        #: the truth for every node at once (None: ask ``truth`` node by node)
        self.truth_nodes: TruthNodes | None = None
        self.wants_truth = bool(getattr(self._fallback, "wants_truth", False))
        #: per-node keyings with now-independent estimators: function -> per-node estimates
        #: (NaN: no trusted sample yet), written on update so estimate_nodes is a vector copy
        self._cached = (keying in ("node", "function_node") and not self.wants_truth
                        and not getattr(self._fallback, "estimate_uses_now", True))
        self._node_arrays: dict[str | None, np.ndarray] = {}
        #: per function: how many leading entries of its node array are set (no NaN before)
        self._node_set: dict[str | None, int] = {}
        #: do the estimates change only when ``update`` is called (not with ``now``, not through
        #: an Oracle's truth)? Then a policy may cache what it derived from them until the next
        #: update (PaperWaitTime's per-view heaps). Fixed by the estimator's kind.
        self.changes_only_on_update = (not self.wants_truth
                                       and not getattr(self._fallback, "estimate_uses_now", True))

    def key(self, function: str | None, node: int | None) -> object:
        k = self.keying
        if k == "global":
            return None
        if k == "node":
            return node
        if k == "function":
            return function
        return (function, node)

    def _feed(self, est: Estimator, n_before: int, x: float, now: float) -> Estimator:
        """``est`` (``n_before`` samples so far) after sample ``x``: restarted from ``x`` if
        ``x`` exceeds ``reset_factor`` x its estimate, else updated."""
        if self.reset_factor and n_before:
            v = est.estimate(now)
            if v is not None and x > self.reset_factor * v:
                est = self.factory()
        est.update(x, now)
        return est

    def update(self, function: str | None, node: int | None, x: float, now: float) -> None:
        if self.wants_truth:
            return
        self._fallback = self._feed(self._fallback, self._n_global, x, now)
        self._n_global += 1
        k = self.keying
        if k == "global":
            return
        if self._by_function is not None:
            fe = self._by_function.get(function)
            nf = self._function_count.get(function, 0)
            self._by_function[function] = self._feed(self.factory() if fe is None else fe, nf, x, now)
            self._function_count[function] = nf + 1
        key = node if k == "node" else function if k == "function" else (function, node)
        est = self._by_key.get(key)
        n = self._count.get(key, 0)
        est = self._by_key[key] = self._feed(self.factory() if est is None else est, n, x, now)
        self._count[key] = n + 1
        if self._cached and node is not None and node >= 0:
            self._cache_node(function, node, est, n + 1, now)

    def update_many(self, node: int | None, samples: list[tuple[str | None, float]], now: float) -> None:
        """``update(function, node, x, now)`` for each ``(function, x)`` of ``samples`` (one
        node's report), in order, with one pass per estimator they reach instead of a call
        chain per sample: the same estimates (each estimator sees its own samples in the same
        order; it shares no state with the others)."""
        if self.wants_truth or not samples:
            return
        xs = [x for _, x in samples]
        self._fallback = self._feed_many(self._fallback, self._n_global, xs, now)
        self._n_global += len(xs)
        k = self.keying
        if k == "global":
            return
        if k == "node":
            groups = {None: xs}
        else:                               # by function, each in sample order
            groups = {}
            for function, x in samples:
                g = groups.get(function)
                if g is None:
                    groups[function] = [x]
                else:
                    g.append(x)
        for function, gx in groups.items():
            if self._by_function is not None:
                fe = self._by_function.get(function)
                nf = self._function_count.get(function, 0)
                self._by_function[function] = self._feed_many(self.factory() if fe is None else fe, nf, gx, now)
                self._function_count[function] = nf + len(gx)
            key = node if k == "node" else function if k == "function" else (function, node)
            est = self._by_key.get(key)
            n = self._count.get(key, 0)
            est = self._by_key[key] = self._feed_many(self.factory() if est is None else est, n, gx, now)
            self._count[key] = n + len(gx)
            if self._cached and node is not None and node >= 0:
                self._cache_node(function, node, est, n + len(gx), now)

    def _feed_many(self, est: Estimator, n_before: int, xs: list[float], now: float) -> Estimator:
        """``_feed`` for each of ``xs`` in order (one ``update_many`` without resets)."""
        if self.reset_factor:
            for x in xs:
                est = self._feed(est, n_before, x, now)
                n_before += 1
            return est
        est.update_many(xs, now)
        return est

    def _cache_node(self, function: str | None, node: int, est: Estimator, n: int, now: float) -> None:
        """The per-node array entry of ``(function, node)`` once its estimator has seen ``n``
        samples: its estimate, or unset (NaN) below ``min_samples``; ``_node_set`` counts the
        set entries per array."""
        fkey = None if self.keying == "node" else function
        arr = self._node_arrays.get(fkey)
        if arr is None or node >= len(arr):
            arr = self._grow(fkey, arr, node)
        v = est.estimate(now) if n >= self.min_samples else None
        was_unset = arr[node] != arr[node]
        arr[node] = np.nan if v is None else v
        if was_unset and v is not None:
            self._node_set[fkey] = self._node_set.get(fkey, 0) + 1
        elif not was_unset and v is None:
            self._node_set[fkey] -= 1

    def _grow(self, fkey, arr, node):
        new = np.full(max(node + 1, 16, 0 if arr is None else 2 * len(arr)), np.nan)
        if arr is not None:
            new[:len(arr)] = arr
        self._node_arrays[fkey] = new
        return new

    def _floored(self, v: float | None) -> float | None:
        return v if v is None or v >= self.floor else self.floor

    def _coarse(self, function: str | None, now: float | None) -> float | None:
        """The fallback's estimate for ``function`` (see the class docstring)."""
        if self._by_function is not None:
            fe = self._by_function.get(function)
            if fe is not None and self._function_count.get(function, 0) >= self.min_samples:
                v = fe.estimate(now)
                if v is not None:
                    return v
        return self._fallback.estimate(now)

    def estimate(self, function: str | None, node: int | None, now: float | None = None,
                 fallback: bool = True) -> float | None:
        if self.wants_truth:
            return self._floored(self._truth(function, node, now))
        if self.keying == "global":
            return self._floored(self._fallback.estimate(now))
        key = self.key(function, node)
        est = self._by_key.get(key)
        value = (est.estimate(now) if est is not None and self._count.get(key, 0) >= self.min_samples
                 else None)
        if value is None and fallback:
            value = self._coarse(function, now)
        return self._floored(value)

    def estimate_nodes(self, function: str | None, n_nodes: int, now: float | None = None,
                       default: float | None = None) -> np.ndarray:
        """Per-node estimates (shape ``(n_nodes,)``); missing ones take the fallback, then
        ``default``, then NaN; none is below ``floor``."""
        out = self._estimate_nodes(function, n_nodes, now, default)
        if self.floor:
            np.maximum(out, self.floor, out=out)      # NaN stays NaN
        return out

    def _estimate_nodes(self, function, n_nodes, now, default) -> np.ndarray:
        if self.keying in ("global", "function"):
            # one value for every node (the Oracle is asked once: its keying hides the node)
            v = self.estimate(function, None, now)
            v = default if v is None else v
            return np.full(n_nodes, np.nan if v is None else float(v))
        if self.wants_truth:
            return self._truth_nodes(function, n_nodes, now, default)
        fb = self._coarse(function, now)
        fb = default if fb is None else fb
        fb = np.nan if fb is None else float(fb)
        if self._cached:
            fkey = None if self.keying == "node" else function
            arr = self._node_arrays.get(fkey)
            if arr is None:
                return np.full(n_nodes, fb)
            if len(arr) >= n_nodes and self._node_set.get(fkey, 0) == n_nodes \
                    and not np.isnan(arr[n_nodes - 1]):
                return arr[:n_nodes].copy()     # every node has its own estimate: one copy
            out = np.full(n_nodes, np.nan)
            m = min(n_nodes, len(arr))
            out[:m] = arr[:m]
            np.copyto(out, fb, where=np.isnan(out))
            return out
        out = np.empty(n_nodes)
        for node in range(n_nodes):
            v = self.estimate(function, node, now, fallback=False)
            out[node] = fb if v is None else v
        return out

    def _truth_nodes(self, function, n_nodes, now, default) -> np.ndarray:
        """The Oracle's per-node values: one vectorised truth call when the engine gave one."""
        dflt = np.nan if default is None else float(default)
        fn = function if self.keying == "function_node" else None
        t = 0.0 if now is None else now
        if self.truth_nodes is not None:
            out = np.asarray(self.truth_nodes(self.quantity, fn, n_nodes, t), dtype=float)
            if out.shape != (n_nodes,):
                raise ValueError(f"truth_nodes returned shape {out.shape}, expected ({n_nodes},)")
        elif self.truth is not None:
            truth, q = self.truth, self.quantity
            out = np.array([np.nan if (v := truth(q, fn, m, t)) is None else v for m in range(n_nodes)],
                           dtype=float)
        else:
            return np.full(n_nodes, dflt)
        if default is not None:
            np.copyto(out, dflt, where=np.isnan(out))
        return out

    def _truth(self, function, node, now):
        if self.truth is None:
            return None
        k = self.keying
        return self.truth(self.quantity,
                          function if k in ("function", "function_node") else None,
                          node if k in ("node", "function_node") else None,
                          0.0 if now is None else now)


class Placement(NamedTuple):
    """A placement decision."""
    #: the chosen node
    node: int
    #: the wait the policy predicts for the task on that node, seconds (None: no prediction)
    predicted_wait_s: float | None = None


class EstimateError:
    """An estimator's one-step-ahead error, gathered where samples are delivered
    (:func:`deliver_reports`): for each task-time sample x, the estimate e its key (function,
    node) had just before x arrived — what the scheduler would have used for the next task
    of that key. ``result()``: ``est_count`` samples compared, ``est_cold`` samples that
    came with no estimate yet (not compared), ``est_mae_s`` mean |e - x|, ``est_bias_s``
    mean (e - x) (> 0: over-estimates), ``est_rmse_s``, ``est_rel_error`` sum |e - x| / sum x.
    An Oracle's error is the samples' own spread around their true mean: the floor."""

    __slots__ = ("n", "cold", "abs", "signed", "sq", "total")

    def __init__(self):
        self.n = self.cold = 0
        self.abs = self.signed = self.sq = self.total = 0.0

    def add(self, estimate: float | None, x: float) -> None:
        if estimate is None or estimate != estimate:
            self.cold += 1
            return
        e = estimate - x
        self.n += 1
        self.abs += abs(e)
        self.signed += e
        self.sq += e * e
        self.total += x

    def result(self) -> dict[str, float]:
        n = self.n
        nan = float("nan")
        return {"est_count": n, "est_cold": self.cold,
                "est_mae_s": self.abs / n if n else nan, "est_bias_s": self.signed / n if n else nan,
                "est_rmse_s": (self.sq / n) ** 0.5 if n else nan,
                "est_rel_error": self.abs / self.total if n and self.total > 0 else nan}


class PlacementPolicy:
    """The global scheduler's rule: pick a node for a task among those that can hold it.

    Return None only when no node in ``view`` can ever satisfy the task's resources
    (the engine then records the task as infeasible).
    """

    #: set by the engine when the run measures estimator error (``run.track_estimates``)
    estimate_error: EstimateError | None = None

    #: bound by the engine (``bind_estimators``); default: global exponential averages
    task_time: KeyedEstimator
    bandwidth: KeyedEstimator

    def bind_estimators(self, task_time: KeyedEstimator, bandwidth: KeyedEstimator) -> None:
        self.task_time = task_time
        self.bandwidth = bandwidth

    def set_truth(self, truth: Truth, nodes: TruthNodes | None = None) -> None:
        """Give Oracle estimators the engine's ground truth; ``nodes``, when the engine has
        it, gives every node's at once (so a per-node Oracle costs one vector per decision,
        as a cached EWMA does, instead of one call per node)."""
        for est in (getattr(self, "task_time", None), getattr(self, "bandwidth", None)):
            if est is not None:
                est.truth = truth
                est.truth_nodes = nodes

    def place(self, task: TaskView, view: ClusterView, now: float,
              rng: np.random.Generator) -> Placement | None:
        raise NotImplementedError

    def observe_task(self, function: str, node: int, duration_s: float, now: float) -> None:
        """A task of ``function`` ran on ``node`` for ``duration_s`` seconds."""
        self.task_time.update(function, node, duration_s, now)

    def observe_tasks(self, node: int, durations: list[tuple[str, float]], now: float) -> None:
        """``observe_task(function, node, seconds, now)`` for each ``(function, seconds)`` of
        ``durations`` (one report of ``node``), in order. Unless a subclass changes
        ``observe_task``, the estimator takes them in one batch (``KeyedEstimator.update_many``:
        the same estimates)."""
        if type(self).observe_task is PlacementPolicy.observe_task:
            self.task_time.update_many(node, durations, now)
            return
        for function, secs in durations:
            self.observe_task(function, node, secs, now)

    def observe_transfer(self, src: int, dst: int, size_bytes: int, seconds: float, now: float) -> None:
        """``size_bytes`` moved from ``src`` to ``dst`` in ``seconds`` (latency included)."""
        if seconds > 0 and size_bytes > 0:
            self.bandwidth.update(None, dst, size_bytes / seconds, now)


def deliver_reports(policy: PlacementPolicy, node: int, durations: Iterable[tuple[str, float]],
                    transfers: Iterable[tuple[int, int, int, float]], now: float) -> None:
    """**When an estimator receives a sample** — one rule, both engines.

    A node keeps the run time of each task it finishes (``(function, seconds)``) and the
    time of each input it fetches (``(src, dst, size_bytes, seconds)``, lookup to last
    byte) and sends them with its *next heartbeat*; the global scheduler feeds them to
    ``policy``'s ``observe_task`` / ``observe_transfer`` when that heartbeat arrives, at
    ``now`` (the arrival, seconds), tasks first, each list in the order it happened. So a
    sample reaches the estimators up to one ``heartbeat_interval_s`` after the finish —
    the 2018 Ray design (local schedulers report task durations in their heartbeats), and
    what the real runtime does: its node manager buffers them between heartbeats. The
    simulator buffers them per node and delivers them at each heartbeat round, with this
    function, so both engines' estimators see the same samples at the same moment (within
    one heartbeat's propagation).
    """
    acc = policy.estimate_error
    if acc is None:
        if durations:
            policy.observe_tasks(node, durations, now)
    else:
        for function, secs in durations:
            # run.track_estimates: the estimate this sample's key had before it
            acc.add(policy.task_time.estimate(function, node, now), secs)
            policy.observe_task(function, node, secs, now)
    for src, dst, size, secs in transfers:
        policy.observe_transfer(src, dst, size, secs, now)


#: ``scheduler.decide_at`` values (the schema's choices; "submit" is the default)
DECIDE_AT = ("submit", "inputs_ready")


def decides_now(decide_at: str, inputs_exist: bool) -> bool:
    """**When the local scheduler decides where a task runs** — one rule, both engines.

    ``decide_at = "submit"`` (the default): at submission, whether or not its inputs exist,
    as the 2018 Ray raylet does (a task is placeable at once; dependencies are resolved on
    the node it is placed on). An input that does not exist yet enters the decision's
    :class:`~testbed.core.views.TaskView` with size 0 and no locations, so a locality-aware
    policy sees only the inputs that already exist. ``"inputs_ready"``: once every input
    exists (is visible in the object table), so every input's size and location is known.

    Either way, a task placed on a node waits there, holding no worker slot, until its
    inputs are local: the node pulls each input as soon as it exists and the task is placed
    there, and queues the task when the last one has arrived (the real node manager's
    ``accept``, the simulator's ``_assign``)."""
    if decide_at not in DECIDE_AT:
        raise ValueError(f"scheduler.decide_at must be one of {DECIDE_AT}, got {decide_at!r}")
    return inputs_exist or decide_at == "submit"


def reports_run_time(state: str) -> bool:
    """**Which ended attempts give the estimators a run time** — one rule, both engines:
    only a finished attempt's (Trace state ``"finished"``), gathered by its node for its
    next heartbeat (:func:`deliver_reports`). An attempt that *failed* — its function raised,
    or an input's error reached it and it failed at once — or was *lost* with its node or
    worker is no sample of how long the function runs: an early error, or a failed input's
    instant one, would pull the estimate toward 0. (Ray's 2018 local scheduler reports the
    durations of the tasks it completed.) The simulator's tasks end failed or lost without
    running to their end, so it has only finished run times to report; the runtime's node
    managers drop the others with this function."""
    return state == _FINISHED


_FINISHED = TaskState.FINISHED.value


def placement_view(view: ClusterView, demand: dict, where_free: bool) -> ClusterView:
    """**Which nodes the global scheduler chooses among** — one rule, both engines: with
    ``where_free`` — an actor (it holds its resources for its life, so it must never queue
    behind actors that will not finish), or any task when the spillover policy says so
    (``SpilloverPolicy.place_where_free``: it forwarded the task because another node has
    room) — the live nodes whose *available* resources (as of the view) hold the demand, if
    any (:meth:`ClusterView.where_free`); otherwise, and when none has room now, every node
    that can hold it (where it waits)."""
    return view.where_free(demand) if where_free else view


def place_rebuild(policy: PlacementPolicy, task_id: int, name: str, demand: dict, dead: int,
                  view: ClusterView, now: float, rng: np.random.Generator) -> Placement | None:
    """**Where a lost actor is rebuilt** — one rule, both engines: its creation is placed
    again by the global scheduler's ``policy``, like a task forwarded from ``dead`` (the node
    it died with) with no inputs (its checkpoint and lineage come from the GCS), on ``view``,
    in which ``dead`` is no longer alive — as the 2018 Ray design resubmits an actor's
    creation task to be scheduled again. Lost actors are placed one after another (in actor
    order), so a policy that counts its recent assignments spreads them. None: no live
    node can hold it — then the actor *waits* (both engines; it is not given up and spends no
    restart, as Ray keeps an actor restarting until a node can hold it) and this function is
    called again at the first view whose membership (``ClusterView.membership``) differs
    from the one it was tried on."""
    return policy.place(TaskView(task_id, name, demand, (), dead), view, now, rng)


class SpilloverPolicy:
    """The local scheduler's rule: run a task here, or forward it to the global scheduler.

    Engines act on :meth:`forwards`, not on ``should_forward`` directly: a task the node can
    never hold (its demand exceeds the node's *total* resources) is forwarded whatever the
    policy says — the paper's rule ("forward when the node cannot satisfy the task's
    resources"), applied once here for both engines. The policy is still asked first, so it
    sees every task and draws from ``rng`` the same way in both.
    """

    #: does the policy read ``LocalView.free_elsewhere`` / ``free_slots_elsewhere``? (engines
    #: fill them only then: they cost a lookup per decision)
    uses_cluster = False
    #: does the global scheduler place this policy's forwarded tasks among the nodes with room
    #: for them now (placement_view)? The paper's rule: no, on every node that can hold them
    place_where_free = False

    def spillback(self, local: LocalView, now: float) -> int:
        """**Spillback** — how many of the tasks queued on ``local``'s node (none of which can
        start there now) to send back to the global scheduler, asked by both engines at each
        heartbeat the node hears, newest queued first (Ray's raylet spills queued work to
        nodes with room). Default 0: the paper's policies never take a task back."""
        return 0

    def forwards(self, task: TaskView, local: LocalView, now: float, rng: np.random.Generator) -> bool:
        """The decision both engines take: ``should_forward``'s, or True when ``task`` can
        never run on ``local``'s node. Not for subclasses to override."""
        return self.should_forward(task, local, now, rng) or not fits(task.demand, local.total)

    def should_forward(self, task: TaskView, local: LocalView, now: float,
                       rng: np.random.Generator) -> bool:
        raise NotImplementedError
