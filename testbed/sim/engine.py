"""A SimPy model of a Ray-style cluster, driving the shared policy objects.

Data flow of one task (d: the submitting driver's node, m: the node that runs it)::

  driver(d) --submit--> local scheduler(d) --SpilloverPolicy--+-- keep ----> node d
                                                              `-- forward --> global scheduler replica
                                                                  (service time, PlacementPolicy on the
                                                                   ClusterView of the last heartbeat) --> node m
  node m: each remote input is fetched over m's link as soon as it exists (a task with inputs
          waits here, holding no worker slot) --> GCS task write --> queue(m)
  queue(m) --resources free--> compute duration x slowdown(m)
           --> finish: GCS object write --> inputs of dependents appear / driver sees the result
                                         --> closed loop: the driver submits its next job

The local scheduler decides at submission, before a task's inputs exist (an input not made
yet is size 0 with no location in the TaskView), or once they all exist: scheduler.decide_at,
one rule with the runtime (:func:`testbed.policy.base.decides_now`).
  heartbeat tick (every heartbeat_interval_s): node loads --> a new, immutable ClusterView;
           each node's task run times and transfer times since the last tick --> the
           placement policy's estimators (policy.base.deliver_reports, as in the runtime);
           both reach the global scheduler heartbeat_delay_s after the tick (one round,
           _heartbeat_round, which the fault model extends through two hooks)

Heartbeats come in one synchronized round by default. With ``cluster.heartbeat_stagger_s`` > 0
each node ticks at its own offset (drawn per node from the run's seed) and its report alone
changes its entries of the view and its ``ClusterView.reports`` count, as the real global
scheduler sees the nodes' independent timers: a policy's count of tasks sent to a node since
its report then resets for that node alone (core.views.since_report), and PaperWaitTime sends
a burst to the node that has just reported. It costs one event per node per interval and a
view rebuild at the first decision after each report.

Event flow (the simulator's speed is its event flow): a task costs one event (its
finish) plus one per forwarded decision and one per open-loop arrival. Servers with a fixed
service time — local schedulers, global scheduler replicas, GCS shards, network links —
are FIFO queues computed in closed form from a "busy until" time, not processes: a task
that must wait for one carries an earliest-start time (``ready_at``) instead of an event.
A request's completion is its arrival at the server + its wait + the service (the Lindley
recursion). Two approximations follow, both small while no server is saturated: a server
queues requests in the order they are issued rather than the order they arrive (one that
arrives before an earlier-issued request is served in the idle time before that one, in
pieces if need be; exact when requests arrive in issue order; see :class:`FifoServers`), and a worker slot is
taken when a task is dispatched, even if its dispatch message lands a few microseconds later.

Determinism: every tie is broken by insertion order (SimPy's event ids, FIFO deques),
randomness comes from generators seeded from the run's seed, and the workload's content
depends only on (seed, job number) — so the same config and seed give the same Trace.

Faults (the ``[faults]`` section: node crashes, worker kills, node additions and
restores, lineage reconstruction, retries) live in :mod:`testbed.sim.faults`:
``Simulation(..., faults=...)`` returns its subclass :class:`~testbed.sim.faults.FaultySimulation`
when the table injects anything, so a fault-free run executes exactly the code below.
The workload shapes that are not task DAGs have their own subclasses (of that one):
``"actors"`` :class:`~testbed.sim.actors.ActorSimulation` and ``"gcs_client"``
:class:`~testbed.sim.gcs_client.GcsClientSimulation`.

The GCS (``[cluster] gcs_*``): each shard is a FIFO server; with ``gcs_chain_length`` L > 1
a write also passes L - 1 more members (L - 1 hops of latency + service; pipelined, so the
head's queue sets the throughput). Its memory is modelled as ``gcs_entry_bytes`` per task
submitted, less the entries of ended tasks flushed every ``gcs_flush_interval_s``; it is
sampled at heartbeats into ``info["gcs_memory"]`` (at most ``MEMORY_SAMPLES`` samples,
thinned by halves). Replica failures are :mod:`testbed.sim.gcs`'s.
"""
from __future__ import annotations

import gc
import math
import time
from bisect import bisect_right
from collections import deque
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.faults import driver_nodes
from ..policy.base import decides_now, deliver_reports, placement_view, reports_run_time
from ..core.resources import EPS, fits
from ..core.seeding import policy_rng
from ..core.result import RunResult
from ..core.task import TaskState, check_transition
from ..core.trace import FLUSH_ROWS, TraceRecorder, TraceRow
from ..core.views import ClusterView, InputView, LocalView, TaskView
from ..policy.base import PlacementPolicy, SpilloverPolicy
from ..workloads import Workload
from .kernel import Kernel

NAN = math.nan
_tuple_new = tuple.__new__
#: a server's ended bookings are dropped once it holds more than this many (a memory bound;
#: the search skips them anyway)
PRUNE_BOOKINGS = 32
#: GCS memory samples kept per run (beyond it every other one is dropped and the rate halves)
MEMORY_SAMPLES = 2048
#: the cyclic garbage collector's first threshold while a run is driven (Python's default:
#: 700). A run allocates a few tracked objects per task (the task, heap entries, its Trace
#: row) that live for thousands of events: at 700 they survive into the older generations
#: and every full collection scans them all again (15-25% of a bench run's time, measured).
#: At this many, most die before their first collection; cyclic garbage (a finished
#: multi-task job) is still collected, within this many allocations. Restored after the run.
GC_YOUNG_OBJECTS = 100_000
#: the heartbeat offsets' stream tag (``SeedSequence([seed, HEARTBEAT_STREAM])``), apart from
#: the policy, workload and fault streams, so staggering changes no other draw
HEARTBEAT_STREAM = 0x4EA27

_FINISHED = TaskState.FINISHED.value
#: a finish reports its run time to the estimators (policy.base.reports_run_time: only
#: finished attempts do; the simulator's failed and lost attempts never reach _finish)
_REPORTS_FINISH = reports_run_time(_FINISHED)


@contextmanager
def _young_gc(threshold0: int):
    """Run the body with the garbage collector's first threshold at ``threshold0`` (the
    others unchanged), then restore it. No effect on results: nothing in a simulation
    depends on when garbage is collected."""
    old = gc.get_threshold()
    if old[0]:                          # 0: automatic collection is off; leave it so
        gc.set_threshold(max(threshold0, old[0]), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


class _Task:
    __slots__ = ("tid", "job", "job_id", "driver", "idx", "function", "duration", "demand", "dkey",
                 "out_bytes", "deps", "dependents", "remaining", "inputs_at", "submitted", "placed",
                 "ready_at", "started", "node", "spilled", "pred", "bytes_in", "transfers", "state",
                 "submitter", "attempt", "seq")

    def __init__(self, tid, job, job_id, driver, idx, function, duration, demand, dkey, out_bytes, deps,
                 submitted, submitter):
        self.tid = tid
        #: the _Job of a multi-task job; None for a single-task job (the common, fast case)
        self.job = job
        self.job_id = job_id
        #: index of the submitting driver
        self.driver = driver
        #: index within the job
        self.idx = idx
        self.function = function
        #: seconds on a node of speed 1
        self.duration = duration
        #: resources held while running, and the same as a hashable tuple (its demand class)
        self.demand = demand
        self.dkey = dkey
        self.out_bytes = out_bytes
        self.deps = deps
        self.dependents: list[_Task] = _NO_DEPENDENTS
        self.remaining = len(deps)
        self.inputs_at = submitted      # when the last input became visible
        self.submitted = submitted
        self.placed = NAN
        self.ready_at = submitted
        self.started = NAN
        self.node = -1
        self.spilled = False
        self.pred = NAN
        self.bytes_in = 0
        self.transfers = None
        self.state = TaskState.SUBMITTED
        self.submitter = submitter
        #: 1, then 2, 3, ... when a failure makes it run again (the Trace's attempt column)
        self.attempt = 1
        #: bumped whenever a scheduled move of the task (its inputs' arrival) is superseded
        self.seq = 0


_NO_DEPENDENTS: list = []
#: the view of an input that does not exist yet
_NO_INPUT = InputView(0, ())


class FifoServers:
    """``n`` servers with fixed service times, computed in closed form from their bookings
    (no process, no event). The one server rule of the simulator: local schedulers, global
    scheduler replicas, GCS shards and links all use it, through :func:`_serve`.

    A request is issued at ``now`` and reaches its server at ``t >= now`` (``t - now`` is
    a link latency, or the wait for an earlier step): it is served in the earliest idle
    time at or after its arrival that holds its service, so it completes at arrival +
    wait + service. Requests are booked in the order they are issued: when they arrive in
    that order this is the FIFO Lindley recursion exactly; one that arrives before an
    earlier-issued request fills the idle time before it instead of queueing behind it, in
    pieces when no gap holds it whole (lowest priority behind booked work, preemptive-resume),
    so a request that has not arrived yet never holds up one that has and no idle time is
    lost: a saturated server's throughput ceiling is exact.
    """
    __slots__ = ("starts", "ends")

    def __init__(self, n: int):
        #: per server: its booked busy intervals [start, end), sorted and disjoint (s)
        #: (never empty: an idle server keeps its last booking, or [0, 0))
        self.starts: list[list[float]] = [[0.0] for _ in range(n)]
        self.ends: list[list[float]] = [[0.0] for _ in range(n)]

    def append(self, busy_until: float) -> None:
        """One more server (a node joined), idle from ``busy_until``."""
        self.starts.append([busy_until])
        self.ends.append([busy_until])


def _serve(free: FifoServers, i: int, now: float, t: float, service: float) -> float:
    """A request issued at ``now`` to server ``i`` of ``free``, reaching it at ``t >= now``;
    returns when it completes (``>= t + service``). See :class:`FifoServers`."""
    E = free.ends[i]
    last = E[-1]
    if t >= last:                       # arrives after all booked work: starts at once
        end = t + service
        if last <= now:                 # every booking has ended: this one is all that matters
            if len(E) == 1:
                free.starts[i][0] = t
                E[0] = end
            else:
                free.starts[i] = [t]
                free.ends[i] = [end]
        elif t == last:
            E[-1] = end
        else:
            free.starts[i].append(t)
            E.append(end)
        return end
    S = free.starts[i]
    if t >= S[-1]:                      # arrives during the last booking: queued behind it
        end = last + service
        E[-1] = end
        return end
    if len(E) > PRUNE_BOOKINGS and E[0] <= now:   # bookings that ended can no longer matter
        k = bisect_right(E, now)
        del S[:k], E[:k]
    # it takes the idle time at or after its arrival, in pieces if no gap holds it whole
    # (lowest priority behind what is booked, preemptive-resume): no idle time is lost, so
    # a saturated server's throughput ceiling stays exact
    j = bisect_right(E, t)              # the first booking still busy at t
    s = t
    rem = service
    while j < len(E):
        st = S[j]
        if s < st:                      # idle time [s, st) before booking j
            if st - s >= rem:           # the rest fits: done here
                end = s + rem
                if j and s == E[j - 1]:
                    E[j - 1] = end
                    if end == st:
                        E[j - 1] = E[j]
                        del S[j], E[j]
                elif end == st:
                    S[j] = s
                else:
                    S.insert(j, s)
                    E.insert(j, end)
                return end
            rem -= st - s               # fill the whole gap, carry the rest on
            if j and s == E[j - 1]:
                E[j - 1] = E[j]
                del S[j], E[j]
                j -= 1
            else:
                S[j] = s
        s = E[j]
        j += 1
    end = s + rem
    E[-1] = end
    return end


class _Job:
    __slots__ = ("job", "driver", "tasks", "outstanding", "loc", "avail", "size", "stored")

    def __init__(self, job, driver_node):
        self.job = job
        self.driver = driver_node
        self.tasks: list[_Task] = []
        self.outstanding = len(job.tasks)
        n = len(job.tasks)
        self.loc = [-1] * n        # node holding each task's output
        self.avail = [0.0] * n     # when each output became visible (object-table write done)
        self.size = [0] * n
        self.stored: list[tuple[int, int]] = []   # (node, bytes) held in object stores


#: the engine-neutral result type lives in the core; the old name stays importable
SimResult = RunResult


def faults_active(faults: dict | None) -> bool:
    """Does a ``[faults]`` table inject anything (a failure, an addition, random kills)?"""
    return bool(faults) and bool(faults.get("node_failures") or faults.get("node_additions")
                                 or faults.get("worker_failures") or faults.get("kill_every_s", 0) > 0
                                 or faults.get("gcs_replica_failures"))


def _engine_class(workload, faults):
    """The Simulation subclass a workload shape and a [faults] table need (None: the base)."""
    shape = getattr(getattr(workload, "spec", None), "shape", None)
    if shape == "actors":
        from .actors import ActorSimulation
        return ActorSimulation
    if shape == "gcs_client":
        from .gcs_client import GcsClientSimulation
        return GcsClientSimulation
    if faults_active(faults):
        from .faults import FaultySimulation
        return FaultySimulation
    return None


class Simulation:
    """One simulated run of a workload on a cluster with given policies.

    ``cluster`` is the resolved ``[cluster]`` table; ``placement`` and ``spillover`` are
    policy objects (estimators already bound); ``workload`` a
    :class:`testbed.workloads.Workload`; ``faults`` the ``[faults]`` table (None: none).
    With faults to inject, constructing a ``Simulation`` gives a
    :class:`~testbed.sim.faults.FaultySimulation` (as ``pathlib.Path`` gives a ``PosixPath``);
    a subclass of ``Simulation`` injects faults only if it derives from that one.
    """

    def __new__(cls, *args, **kwargs):
        faults = kwargs["faults"] if "faults" in kwargs else args[8] if len(args) > 8 else None
        workload = kwargs["workload"] if "workload" in kwargs else args[1] if len(args) > 1 else None
        if cls is Simulation:
            cls = _engine_class(workload, faults) or cls
        return super().__new__(cls)

    def __init__(self, cluster: dict, workload, placement: PlacementPolicy, spillover: SpilloverPolicy,
                 seed: int = 0, keep_rows: bool = True, validate: bool = False,
                 max_sim_time_s: float = 1e7, faults: dict | None = None, decide_at: str = "submit"):
        self.cfg = cluster
        #: scheduler.decide_at: a task with inputs is decided at submission (True) or once
        #: its inputs exist (False) — policy.base.decides_now
        self._at_submit = decides_now(decide_at, False)
        #: the [faults] table as given (None: no faults)
        self.faults = faults
        self.workload = workload
        self.placement = placement
        self.spillover = spillover
        self.seed = seed
        self.validate = validate
        self.max_sim_time_s = max_sim_time_s
        self.rng = policy_rng(seed, "placement")   # spillover draws from it too (core.seeding)
        #: the spillover policy reads the cluster (LocalView.free_elsewhere), and spills back
        self._sp_cluster = bool(getattr(spillover, "uses_cluster", False))
        self._spillback = type(spillover).spillback is not SpilloverPolicy.spillback
        #: forwarded tasks are placed among the nodes with room for them (policy.base.placement_view)
        self._where_free = bool(getattr(spillover, "place_where_free", False))
        self.trace = TraceRecorder(keep_rows=keep_rows)
        #: the recorder's row buffer, appended to directly on the hot path
        self._rows = self.trace.buf
        # config scalars read on every task (attribute access beats a dict lookup)
        self._lat = cluster["latency_s"]
        self._ldec = cluster["local_decision_s"]
        self._gdec = cluster["global_decision_s"]
        self._gcs_s = cluster["gcs_write_s"]
        self._critical = cluster["gcs_on_critical_path"]
        self._n_gcs = cluster["gcs_shards"]
        self._gcs_read_s = cluster["gcs_read_s"]
        self._n_gs = cluster["global_schedulers"]
        #: rebuild the ClusterView at every placement decision (no heartbeat staleness)
        self._fresh_view = cluster["view_fresh_per_decision"]
        #: rebuild the ClusterView before the next placement decision (always, with a fresh
        #: view; after a node's own heartbeat, with staggered ones)
        self._rebuild_view = self._fresh_view
        #: modelled overheads of the real runtime (config.py's [cluster] docs; 0 by default)
        self._overhead = cluster["task_overhead_s"]
        self._inflation = cluster["duration_inflation_s"]
        self._ret = cluster["result_return_s"]
        self._hb_delay = cluster["heartbeat_delay_s"]
        self._wstart = cluster["worker_start_s"]
        #: a write's cost per chain member after the head: a hop, then that member's write
        self._hop_s = self._lat + self._gcs_s
        #: a write's extra time down the rest of the chain (pipelined: only its latency)
        self._chain_extra = (cluster["gcs_chain_length"] - 1) * self._hop_s
        if self._chain_extra > 0:
            self._gcs_write = self._gcs_write_chain
        #: GCS memory model: bytes per task entry; entries flushed so far; key/value bytes
        #: stored by GCS clients; samples (t_s, bytes), every _mem_stride heartbeats
        self._entry_bytes = cluster["gcs_entry_bytes"]
        self.gcs_flushed = 0
        self.gcs_kv_bytes = 0
        self.gcs_memory: list[tuple[float, float]] = [(0.0, 0.0)]
        self._mem_stride = 1
        self._mem_tick = 0
        self._mem_peak = 0.0       # the highest value seen (just before each flush, and sampled)
        #: single-task jobs take the workload's fast path (no Job/TaskSpec objects)
        # (unless a subclass changed next_job: then it must see every job)
        self._single = workload.tasks_per_job == 1 and type(workload).next_job is Workload.next_job
        #: id(shared resources dict) -> (its items as a tuple, the dict, kept alive)
        self._dkeys: dict[int, tuple] = {}
        self.env = Kernel()
        self._build_nodes()
        #: per node: its heartbeats' offset from the synchronized round, seconds (None:
        #: one synchronized round; cluster.heartbeat_stagger_s)
        self._offsets = self._heartbeat_offsets()
        self.placement.set_truth(self._truth, self._truth_nodes)

    # -- cluster ---------------------------------------------------------------------
    def _build_nodes(self) -> None:
        c = self.cfg
        totals, speeds = [], []
        if c["node_groups"]:
            for g in c["node_groups"]:
                res = {"CPU": float(g["cpus"]), "GPU": float(g["gpus"]), **{k: float(v) for k, v in g["resources"].items()}}
                for _ in range(g["count"]):
                    totals.append(res)
                    speeds.append(1.0 / g["speed"])
        else:
            res = {"CPU": c["cpus_per_node"], "GPU": c["gpus_per_node"],
                   **{k: float(v) for k, v in c["resources"].items()}}
            for _ in range(c["nodes"]):
                totals.append(res)
                speeds.append(1.0)
        n = len(totals)
        for i in range(max(0, n - c["slow_nodes"]), n):
            speeds[i] *= c["slow_factor"]
        self.n = n
        self.names = sorted({k for t in totals for k in t})
        self.total = [{k: t.get(k, 0.0) for k in self.names if t.get(k, 0.0) > 0} for t in totals]
        self.avail = [dict(t) for t in self.total]
        #: task-time multiplier per node (1 = nominal speed); cluster.slowdowns change it mid-run
        self.slow = speeds
        #: each node's link bandwidth, bytes/s (its input fetches); cluster.link_bandwidth sets
        #: it per node, cluster.bandwidth_changes change it mid-run
        self.bw = [float(c["bandwidth_bytes_per_s"])] * n
        for x in c["link_bandwidth"]:
            for i in x["nodes"]:
                self.bw[i] = float(x["bytes_per_s"])
        self.queues: list[dict[tuple, deque]] = [dict() for _ in range(n)]
        self.qlen = [0] * n
        self.running = [0] * n
        self.sched_free = FifoServers(n)
        self.link_free = FifoServers(n)
        self.store_used = [0.0] * n
        #: per node: task run times (function, s) and input fetches (src, dst, bytes, s) since
        #: its last heartbeat; the next round delivers them (policy.base.deliver_reports)
        self._durs: list[list] = [[] for _ in range(n)]
        self._xfers: list[list] = [[] for _ in range(n)]
        self.spilled_bytes = 0
        self.gcs_free = FifoServers(c["gcs_shards"])
        self.gcs_ops = 0
        self.gs_free = FifoServers(c["global_schedulers"])
        self.gs_next = 0
        self._refresh_totals()
        self.view_version = 0
        self.view = self._snapshot()
        self._feasible_cache: dict[tuple, bool] = {}
        #: the view whose feasibility masks (demand class -> list of bool) _feas holds
        self._feas_view: ClusterView | None = None
        self._feas: dict[tuple, list] = {}

    def _refresh_totals(self) -> None:
        """The per-node total-resource array the views share, and the worker slots."""
        n = self.n
        self._total_arr = np.array([[t.get(k, 0.0) for k in self.names] for t in self.total]).reshape(n, len(self.names))
        self._slots = np.maximum(self._total_arr[:, self.names.index("CPU")], 1.0) if "CPU" in self.names else np.ones(n)

    def _snapshot(self) -> ClusterView:
        names = self.names
        avail = np.array([[a.get(k, 0.0) for k in names] for a in self.avail]).reshape(self.n, len(names))
        self.view_version += 1
        return ClusterView(version=self.view_version, as_of=self.env._now, resource_names=names,
                           total=self._total_arr, available=avail, queue_length=self.qlen,
                           running=self.running, slots=self._slots)

    def _heartbeat_offsets(self) -> np.ndarray | None:
        """Node m's heartbeats tick at ``offset[m] + k x heartbeat_interval_s`` (k >= 1), the
        offsets drawn uniformly in [0, ``heartbeat_stagger_s``) from the run's seed (their own
        stream, :data:`HEARTBEAT_STREAM`); None when the stagger is 0 (one synchronized round)."""
        stagger = self.cfg["heartbeat_stagger_s"]
        if stagger <= 0 or self._fresh_view:
            return None
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, HEARTBEAT_STREAM]))
        offsets = rng.uniform(0.0, stagger, self.n)
        # what the global scheduler last heard from each node (available, queue, running),
        # and how many of its reports it has had (ClusterView.reports: per-node resets of
        # recent-assignment counts, core.views.since_report)
        self._rep_avail = np.array([[a.get(k, 0.0) for k in self.names] for a in self.avail]).reshape(self.n, len(self.names))
        self._rep_queue = np.array(self.qlen, dtype=np.int64)
        self._rep_running = np.array(self.running, dtype=np.int64)
        self._rep_count = np.full(self.n, self.view_version, np.int64)   # the first view's
        return offsets

    def _reported_view(self) -> ClusterView:
        """With staggered heartbeats: a view of each node's last report, rebuilt (at the next
        decision) after any node's report, as the real global scheduler does."""
        self._rebuild_view = False
        self.view_version += 1
        return ClusterView(version=self.view_version, as_of=self.env._now, resource_names=self.names,
                           total=self._total_arr, available=self._rep_avail, queue_length=self._rep_queue,
                           running=self._rep_running, slots=self._slots, reports=self._rep_count)

    def _truth(self, quantity, function, node, now):
        if quantity == "bandwidth":
            return self.bw[node] if node is not None else sum(self.bw) / self.n
        mean = self.workload.mean_duration(function, now)
        slow = self.slow[node] if node is not None else sum(self.slow) / self.n
        return mean * slow

    def _truth_nodes(self, quantity, function, n_nodes, now):
        """``_truth`` for nodes ``0 .. n_nodes-1`` at once (the per-node Oracle's vector)."""
        if quantity == "bandwidth":
            return np.full(n_nodes, float(self.cfg["bandwidth_bytes_per_s"]))
        if getattr(self, "_slow_seen", None) != self.slow:      # nodes added or slowed
            self._slow_seen, self._slow_arr = list(self.slow), np.array(self.slow, dtype=float)
        return self.workload.mean_duration(function, now) * self._slow_arr[:n_nodes]

    def _feasible_anywhere(self, task: _Task) -> bool:
        ok = self._feasible_cache.get(task.dkey)
        if ok is None:
            ok = self._feasible_cache[task.dkey] = any(fits(task.demand, t) for t in self.total)
        return ok

    # -- run -----------------------------------------------------------------------------
    def run(self) -> SimResult:
        with _young_gc(GC_YOUNG_OBJECTS):
            return self._run()

    def _run(self) -> SimResult:
        wl = self.workload
        self.jobs_done = 0
        self.next_tid = 0
        self.pending = 0
        self.stuck = False
        self.done = False
        self.driver_nodes = self._driver_nodes()
        t0 = time.perf_counter()
        self._start_processes()
        for d in range(wl.n_drivers):
            if wl.arrival == "closed":
                for _ in range(wl.in_flight):
                    if not self._submit(d, 0.0):
                        break
            else:
                self._later(wl.next_arrival_gap(d), d, self._arrival)
        if self.jobs_done < wl.total_jobs:
            self.env.drive(until=self.max_sim_time_s)
        wall = time.perf_counter() - t0
        metrics = self.trace.summary()
        self.gcs_memory.append((self.env._now, self._gcs_memory_bytes()))
        info = {"wall_s": wall, "sim_end_s": self.env._now, "nodes": self.n, "jobs_done": self.jobs_done,
                "jobs": wl.total_jobs, "gcs_ops": self.gcs_ops, "spilled_store_bytes": self.spilled_bytes,
                # GCS memory model: samples (t_s, bytes), its peak, task entries flushed to disk
                "gcs_memory": self.gcs_memory, "gcs_memory_peak_bytes": max(self._mem_peak, max(b for _, b in self.gcs_memory)),
                "gcs_flushed_entries": self.gcs_flushed, "gcs_reconfigurations": [],
                "complete": self.jobs_done == wl.total_jobs, "stuck": self.stuck,
                # fault counters (testbed.sim.faults): attempts beyond the first, objects lost
                # with their node, job results lost before the driver got them, node deaths,
                # nodes added, nodes restored
                "reexecuted": 0, "lost_objects": 0, "results_lost": 0, "nodes_killed": 0, "nodes_added": 0,
                "nodes_restored": 0,
                # cluster.heartbeat_stagger_s: each node's heartbeat offset, seconds (None: one round)
                "heartbeat_offsets_s": None if self._offsets is None else self._offsets.tolist()}
        return SimResult(trace=self.trace.frame(), metrics=metrics, info=info)

    def _start_processes(self) -> None:
        """Processes that run beside the workload (heartbeats; fault injection in a subclass)."""
        self.env.process(self._heartbeats())
        if self._offsets is not None:
            interval = self.cfg["heartbeat_interval_s"]
            for m, off in enumerate(self._offsets.tolist()):
                self.env.call_in(interval + off, self._node_heartbeat, m)
        if self.cfg["gcs_flush_interval_s"] > 0:
            self.env.call_in(self.cfg["gcs_flush_interval_s"], self._gcs_flush, None)
        for x in self.cfg["slowdowns"]:
            self.env.call_in(x["at_s"], self._slow_down, (x["node"], x["factor"]))
        for x in self.cfg["bandwidth_changes"]:
            self.env.call_in(x["at_s"], self._bandwidth_change, (tuple(x["nodes"]), x["factor"]))

    def _slow_down(self, arg) -> None:
        """cluster.slowdowns: node ``m``'s tasks that start from now on take ``factor`` times
        as long (those running keep their finish time)."""
        m, factor = arg
        self.slow[m] *= factor

    def _bandwidth_change(self, arg) -> None:
        """cluster.bandwidth_changes: transfers onto the nodes (() = every node) booked from
        now on run at ``factor`` times their link's bandwidth."""
        nodes, factor = arg
        for m in nodes or range(self.n):
            self.bw[m] *= factor

    # -- the GCS's memory ------------------------------------------------------------------
    def _ended_tasks(self) -> int:
        """Tasks whose lineage may be flushed: here, Trace rows written (in a fault-free run,
        one per task that ended)."""
        return self.trace.n_rows + len(self._rows)

    def _gcs_memory_bytes(self) -> float:
        return (self.next_tid - self.gcs_flushed) * self._entry_bytes + self.gcs_kv_bytes

    def _gcs_flush(self, _) -> None:
        """Every gcs_flush_interval_s: ended tasks' entries go to disk (not on any critical path)."""
        if self.done:
            return
        before = self._gcs_memory_bytes()
        if before > self._mem_peak:
            self._mem_peak = before
        self.gcs_flushed = max(self.gcs_flushed, min(self.next_tid, self._ended_tasks()))
        self.env.call_in(self.cfg["gcs_flush_interval_s"], self._gcs_flush, None)

    def _sample_gcs_memory(self) -> None:
        self._mem_tick += 1
        if self._mem_tick < self._mem_stride:
            return
        self._mem_tick = 0
        mem = self.gcs_memory
        mem.append((self.env._now, self._gcs_memory_bytes()))
        if len(mem) >= MEMORY_SAMPLES:
            # keep the peak: thin to every other sample, then put the dropped maximum back
            peak = max(range(len(mem)), key=lambda i: mem[i][1])
            kept = mem[::2]
            if peak % 2:
                kept.append(mem[peak])
                kept.sort()
            self.gcs_memory = kept
            self._mem_stride *= 2

    def _driver_nodes(self) -> list[int]:
        wl = self.workload
        given = list(getattr(wl.spec, "driver_nodes", []) or [])
        if given:
            if len(given) != wl.n_drivers:
                raise ConfigError(f"lists {len(given)} nodes for {wl.n_drivers} drivers", key="workload.driver_nodes")
            for x in given:
                if not 0 <= x < self.n:
                    raise ConfigError(f"node {x} does not exist (the cluster has nodes 0..{self.n - 1})",
                                      key="workload.driver_nodes")
            return given
        f = self.faults or {}
        return driver_nodes((), wl.n_drivers, self.n, (x["node"] for x in f.get("node_failures", ())),
                            f.get("kill_every_s", 0.0), f.get("min_live_nodes", 1))

    def _heartbeats(self):
        """The heartbeat rounds, one every ``heartbeat_interval_s`` (:meth:`_heartbeat_round`);
        after a round that leaves nothing pending while jobs remain, the run ends "stuck"."""
        interval = self.cfg["heartbeat_interval_s"]
        while not self.done:
            yield self.env.timeout(interval)
            self._heartbeat_round()
            if not self.pending and not self.done:
                # nothing can ever happen again, yet jobs remain: never wait forever
                self.stuck = True
                self._stop()
                return

    def _heartbeat_round(self) -> None:
        """One tick: every node's load becomes a new ClusterView and its samples since its
        last heartbeat are sent with it; both reach the global scheduler now, or
        ``heartbeat_delay_s`` later (:meth:`_deliver_view`). A subclass adds to a round with
        two hooks: :meth:`_heartbeat_tick` (at the tick, before the view is taken; what it
        returns travels with the view) and :meth:`_view_arrived` (when the view arrives)."""
        news = self._heartbeat_tick()
        if self._offsets is not None:
            # each node reports on its own tick (_node_heartbeat); the round keeps its hooks
            self._view_arrived(news)
        elif self._hb_delay:
            # the round's view and reports reach the global scheduler heartbeat_delay_s later
            # (counted as pending: what arrives with it may unblock a task)
            reports = (self._durs, self._xfers)
            self._durs = [[] for _ in range(self.n)]
            self._xfers = [[] for _ in range(self.n)]
            self._later(self._hb_delay, (self._snapshot(), reports, news), self._deliver_view)
        else:
            self.view = self._snapshot()
            self._deliver_reports()
            self._view_arrived(news)
        self._sample_gcs_memory()

    def _heartbeat_tick(self) -> Any:
        """Hook: called at each heartbeat tick before its view is taken; the value is passed
        to :meth:`_view_arrived` when that view reaches the global scheduler."""
        return None

    def _view_arrived(self, news: Any) -> None:
        """A heartbeat round's view (``self.view``) and reports reached the global scheduler
        (and the nodes): queued work may spill back. A subclass extends it; ``news`` is what
        :meth:`_heartbeat_tick` returned at its tick."""
        if self._spillback:
            self._spill_back()

    def _deliver_reports(self, reports: tuple[list, list] | None = None) -> None:
        """The heartbeat round: each node's samples since its last one reach the placement
        policy's estimators now (node order; the one rule of both engines,
        :func:`testbed.policy.base.deliver_reports`). ``reports``: (durations, transfers) per
        node taken at the round's tick (default: the buffers now)."""
        now = self.env._now
        pl = self.placement
        durs, xfers = reports if reports is not None else (self._durs, self._xfers)
        for m in range(len(durs)):
            if durs[m] or xfers[m]:
                deliver_reports(pl, m, durs[m], xfers[m], now)
                durs[m], xfers[m] = [], []

    def _deliver_view(self, arg) -> None:
        """A heartbeat's view (and the reports sent with it) reach the global scheduler
        ``heartbeat_delay_s`` after its tick."""
        self.pending -= 1
        view, reports, news = arg
        if view.version > self.view.version:
            self.view = view
        self._deliver_reports(reports)
        self._view_arrived(news)

    def _node_heartbeat(self, m: int) -> None:
        """Node ``m``'s own heartbeat (``heartbeat_stagger_s`` > 0): its load and its samples
        since its last one reach the global scheduler ``heartbeat_delay_s`` later."""
        if self.done:
            return
        self.env.call_in(self.cfg["heartbeat_interval_s"], self._node_heartbeat, m)
        a = self.avail[m]
        report = (m, [a.get(k, 0.0) for k in self.names], self.qlen[m], self.running[m],
                  self._durs[m], self._xfers[m])
        self._durs[m], self._xfers[m] = [], []
        if self._hb_delay:
            self.env.call_in(self._hb_delay, self._node_report, report)
        else:
            self._node_report(report)

    def _node_report(self, report) -> None:
        """Node ``m``'s heartbeat reaches the global scheduler: its entries of the view and its
        report count change (the view is rebuilt at the next decision), and its samples reach
        the estimators (policy.base.deliver_reports)."""
        m, avail, queue, running, durs, xfers = report
        self._rep_avail[m] = avail
        self._rep_queue[m] = queue
        self._rep_running[m] = running
        self._rep_count[m] += 1
        self._rebuild_view = True
        if durs or xfers:
            deliver_reports(self.placement, m, durs, xfers, self.env._now)

    def _stop(self) -> None:
        self.done = True
        self.env.stopped = True

    # -- submission ----------------------------------------------------------------------
    def _arrival(self, d) -> None:
        if self._submit(d, self.env._now):
            # the pending count is unchanged: this arrival's event becomes the next one's
            self.env.call_in(self.workload.next_arrival_gap(d), self._arrival, d)
        else:
            self.pending -= 1

    def _submit(self, driver: int, t_sub: float) -> bool:
        """The driver submits its next job at ``t_sub`` (>= now). False when none is left."""
        node = self.driver_nodes[driver]
        if self._single:
            nxt = self.workload.next_task(driver, t_sub)
            if nxt is None:
                return False
            job_id, function, duration, demand, out_bytes = nxt
            dkey = self._dkeys.get(id(demand))
            if dkey is None:
                dkey = self._dkeys[id(demand)] = (tuple(demand.items()), demand)
            t = _Task(self.next_tid, None, job_id, driver, 0, function, duration, demand, dkey[0],
                      out_bytes, (), t_sub, node)
            self.next_tid += 1
            self._ready(t)
            return True
        job = self.workload.next_job(driver, t_sub)
        if job is None:
            return False
        j = _Job(job, node)
        tasks = j.tasks
        for spec in job.tasks:
            t = _Task(self.next_tid, j, job.job_id, driver, spec.index, spec.function, spec.duration_s,
                      spec.resources, tuple(spec.resources.items()), spec.output_bytes, spec.deps, t_sub, node)
            self.next_tid += 1
            tasks.append(t)
            for d in spec.deps:
                dep = tasks[d]
                if dep.dependents is _NO_DEPENDENTS:
                    dep.dependents = []
                dep.dependents.append(t)
        if self.validate:
            for t in tasks:
                if t.remaining:
                    self._to(t, TaskState.WAITING_FOR_INPUTS)
        at_submit = self._at_submit
        for t in tasks:
            if (at_submit or not t.remaining) and t.state is not TaskState.FAILED:
                self._ready(t)
        return True

    # -- scheduling ----------------------------------------------------------------------
    def _to(self, t: _Task, state: TaskState) -> None:
        """Record a state change; validation mode checks it is a legal transition. The hot
        path sets only the states other code reads (FAILED, INFEASIBLE) when not validating."""
        if self.validate:
            check_transition(t.state, state, t.tid)
        t.state = state

    def _task_view(self, t: _Task) -> TaskView:
        if not t.deps:
            return TaskView(t.tid, t.function, t.demand, (), t.submitter)
        j = t.job
        # an input not produced yet: size 0, no location (as the runtime's view of it)
        inputs = tuple(InputView(j.size[d], (j.loc[d],)) if j.loc[d] >= 0 else _NO_INPUT for d in t.deps)
        return TaskView(t.tid, t.function, t.demand, inputs, t.submitter)

    def _ready(self, t: _Task) -> None:
        """The local scheduler decides where ``t`` runs: at its submission, or once all its
        inputs exist (visible from ``t.inputs_at``), by ``scheduler.decide_at``."""
        now = self.env._now
        ok = self._feasible_cache.get(t.dkey)
        if ok is None:
            ok = self._feasible_anywhere(t)
        if not ok:
            self._infeasible(t, max(now, t.inputs_at))
            return
        d = t.submitter
        t_dec = t.inputs_at if t.inputs_at > now else now
        if self._ldec:
            t_dec = _serve(self.sched_free, d, now, t_dec, self._ldec)
        # the views as plain tuples (a NamedTuple's keyword-checking __new__ costs a call);
        # the LocalView as _local_view builds it, inline when it needs no ClusterView
        tv = _tuple_new(TaskView, (t.tid, t.function, t.demand, (), d)) if not t.deps else self._task_view(t)
        if self._sp_cluster:
            local = self._local_view(d)
        else:
            avail = self.avail[d]
            local = _tuple_new(LocalView, (d, self.total[d], avail, self.qlen[d], self.running[d],
                                           int(avail.get("CPU", 0.0) + EPS), None, 0))
        if not self.spillover.forwards(tv, local, now, self.rng):
            t.placed = t_dec
            if t.deps:
                self._assign(t, d, t_dec)
            else:
                self._enqueue(t, d, t_dec)
            return
        self._forward(t, tv, t_dec)

    def _local_view(self, d: int) -> LocalView:
        """Node ``d``'s local scheduler's view of itself (and, for a spillover policy that
        reads it, of the rest of the cluster as of the last heartbeat: ClusterView.elsewhere)."""
        avail = self.avail[d]
        free, slots = self.view.elsewhere(d) if self._sp_cluster else (None, 0)
        return _tuple_new(LocalView, (d, self.total[d], avail, self.qlen[d], self.running[d],
                                      int(avail.get("CPU", 0.0) + EPS), free, slots))

    def _forward(self, t: _Task, tv: TaskView, t_dec: float) -> None:
        """``t`` goes to the global scheduler (decided at ``t_dec`` on its node)."""
        now = self.env._now
        t.spilled = True
        r = self.gs_next
        self.gs_next = (r + 1) % self._n_gs
        t_g = _serve(self.gs_free, r, now, t_dec + self._lat, self._gdec)
        if t_g <= now:
            self._global_place(t, tv)
        else:
            self.pending += 1
            self.env.call_in(t_g - now, self._global_event, (t, tv))

    def _spill_back(self) -> None:
        """At a heartbeat each node with queued tasks asks its spillover policy how many to
        send back to the global scheduler (SpilloverPolicy.spillback; newest first); they
        are placed again, like tasks forwarded now."""
        now = self.env._now
        sp = self.spillover
        for m in range(self.n):
            if not self.qlen[m]:
                continue
            k = sp.spillback(self._local_view(m), now)
            for q in reversed(list(self.queues[m].values())):
                while k and q:
                    t = q.pop()
                    k -= 1
                    self.qlen[m] -= 1
                    self._to(t, TaskState.ASSIGNED)
                    self._spilled_back(t)
                    self._forward(t, self._task_view(t), now)
                if not k:
                    break

    def _spilled_back(self, t: _Task) -> None:
        """Hook: ``t`` left its node's queue for the global scheduler (spillback)."""

    def _later(self, delay: float, value, callback) -> None:
        """Call ``callback(event)`` after ``delay``; counted, so a stuck run is noticed."""
        self.pending += 1
        self.env.call_in(delay, callback, value)

    def _global_event(self, arg) -> None:
        self.pending -= 1
        t, tv = arg
        self._global_place(t, tv)

    def _global_place(self, t: _Task, tv: TaskView) -> None:
        now = self.env._now
        if self._rebuild_view:
            self.view = self._snapshot() if self._fresh_view else self._reported_view()
        view = placement_view(self.view, t.demand, self._where_free) if self._where_free else self.view
        p = self.placement.place(tv, view, now, self.rng)
        if p is None:
            self._infeasible(t, now)
            return
        m = p[0]
        if self._feas_view is not self.view:            # the choice is checked on the view's masks
            self._feas_view = self.view
            self._feas = {}
        ok = self._feas.get(t.dkey)
        if ok is None:
            ok = self._feas[t.dkey] = self.view.feasible(t.demand).tolist()
        if not 0 <= m < self.n or not ok[m]:
            raise RuntimeError(f"placement policy {type(self.placement).__name__} chose node {m}, "
                               f"which cannot hold {dict(t.demand)}")
        t.placed = now
        if p[1] is not None:
            t.pred = p[1]
        if t.deps:
            self._assign(t, m, now + self._lat)
        else:
            self._enqueue(t, m, now + self._lat)

    # -- inputs ----------------------------------------------------------------------------
    def _assign(self, t: _Task, m: int, at: float) -> None:
        """The decision to run ``t`` (it has inputs) reaches node ``m`` at ``at``: the node
        pulls each input that exists now, and the others as each appears
        (:meth:`_input_arrived`); ``t`` queues when the last one is local, holding no worker
        slot before (policy.base.decides_now)."""
        t.node = m
        t.ready_at = at
        j = t.job
        for d in t.deps:
            if j.loc[d] >= 0:
                a = j.avail[d]
                self._fetch(t, m, d, a if a > at else at)
        if not t.remaining:
            self._inputs_local(t)

    def _fetch(self, t: _Task, m: int, d: int, asked: float) -> None:
        """Node ``m`` asks at ``asked`` for input ``d`` of ``t``: where it is (a GCS read),
        then its bytes over ``m``'s link, one transfer after another; ``t.ready_at`` moves
        to the last byte. The observed time of a fetch (an estimator sample) runs from the
        lookup to the last byte, link queueing included."""
        j = t.job
        src, size = j.loc[d], j.size[d]
        if src == m or size <= 0:
            return
        found = self._gcs_read(j.tasks[d].tid, asked)
        t1 = _serve(self.link_free, m, self.env._now, found, size / self.bw[m]) + self._lat
        t.bytes_in += size
        if t.transfers is None:
            t.transfers = []
        t.transfers.append((src, size, t1 - found))
        self._store(j, m, size)
        if t1 > t.ready_at:
            t.ready_at = t1

    def _inputs_local(self, t: _Task) -> None:
        """Every input of ``t`` exists and is on its way to (or on) ``t.node``: queue it there
        when the last one has arrived."""
        r = t.ready_at if t.ready_at > t.inputs_at else t.inputs_at
        t.ready_at = r
        now = self.env._now
        if t.bytes_in and r > now:          # inputs in transit: no slot is held meanwhile
            t.seq += 1
            self._later(r - now, (t, t.seq), self._inputs_landed)
        else:
            self._enqueue(t, t.node, r)

    def _inputs_landed(self, arg) -> None:
        self.pending -= 1
        t, seq = arg
        if seq == t.seq:                    # not superseded (a failure moved the task meanwhile)
            self._enqueue(t, t.node, t.ready_at)

    def _gcs_write(self, key: int, t: float) -> float:
        """A write issued at ``t`` to the shard owning ``key``; returns when it is acknowledged."""
        self.gcs_ops += 1
        return _serve(self.gcs_free, key % self._n_gcs, self.env._now, t, self._gcs_s)

    def _gcs_write_chain(self, key: int, t: float) -> float:
        """``_gcs_write`` on chains of more than one replica: the tail acknowledges."""
        self.gcs_ops += 1
        return _serve(self.gcs_free, key % self._n_gcs, self.env._now, t, self._gcs_s) + self._chain_extra

    def _gcs_read(self, key: int, t: float) -> float:
        """A read issued at ``t`` to the shard owning ``key`` (served by its tail); returns
        when it is answered."""
        self.gcs_ops += 1
        return _serve(self.gcs_free, key % self._n_gcs, self.env._now, t, self._gcs_read_s)

    def _enqueue(self, t: _Task, m: int, ready_at: float) -> None:
        ack = self._gcs_write(t.tid, ready_at)     # task table: spec + status (the lineage)
        if self._critical:
            ready_at = ack
        t.node = m
        t.ready_at = ready_at
        if self.validate:
            self._to(t, TaskState.QUEUED)
        dkey = t.dkey
        q = self.queues[m].get(dkey)
        if not q:
            # nothing of this demand class waits here: start now if it fits (a non-empty
            # class queue means its head did not fit at the last finish, so neither does t)
            avail = self.avail[m]
            for k, v in dkey:
                if avail.get(k, 0.0) + EPS < v:
                    break
            else:
                for k, v in dkey:
                    avail[k] = avail.get(k, 0.0) - v
                self._start(t, m)
                return
            if q is None:
                q = self.queues[m][dkey] = deque()
        q.append(t)
        self.qlen[m] += 1

    def _dispatch(self, m: int) -> None:
        """Start queued tasks on ``m`` while resources allow (FIFO within a demand class)."""
        avail = self.avail[m]
        for dkey, q in self.queues[m].items():
            while q:
                ok = True
                for k, v in dkey:
                    if avail.get(k, 0.0) + EPS < v:
                        ok = False
                        break
                if not ok:
                    break
                t = q.popleft()
                self.qlen[m] -= 1
                for k, v in dkey:
                    avail[k] = avail.get(k, 0.0) - v
                self._start(t, m)

    def _start(self, t: _Task, m: int) -> None:
        now = self.env._now
        self.running[m] += 1
        start = t.ready_at if t.ready_at > now else now
        if start < self._wstart:
            start = self._wstart
        start += self._overhead                    # the slot is held from here (dispatch, turnaround)
        t.started = start
        if self.validate:
            self._to(t, TaskState.RUNNING)
        self.pending += 1
        self.env.call_in(start + t.duration * self.slow[m] + self._inflation - now, self._finish, t)

    def _store(self, j: _Job, m: int, size: int) -> None:
        if size <= 0:
            return
        j.stored.append((m, size))
        used = self.store_used[m] + size
        cap = self.cfg["object_store_bytes"]
        if used > cap:   # LRU spill to disk: modelled as bytes spilled, not as later slow reads
            self.spilled_bytes += int(used - cap)
            used = cap
        self.store_used[m] = used

    # -- completion ----------------------------------------------------------------------
    def _finish(self, t: _Task) -> None:
        self.pending -= 1
        now = self.env._now
        m = t.node
        avail = self.avail[m]
        for k, v in t.dkey:
            avail[k] = avail.get(k, 0.0) + v
        self.running[m] -= 1
        if self.validate:
            self._to(t, TaskState.FINISHED)
        # the estimators get these samples with m's next heartbeat (_deliver_reports)
        if _REPORTS_FINISH:
            self._durs[m].append((t.function, now - t.started))
        if t.transfers:
            self._xfers[m].extend((src, m, size, secs) for src, size, secs in t.transfers)
        buf = self._rows
        # the hot path's one row per task: TraceRow's fields, positionally, as a plain tuple
        # (the recorder reads rows in NAMES order; building a TraceRow here, even through
        # tuple.__new__, cost ~1.5% of sim-100-nodes CPU time — measured, see the commit)
        buf.append((t.tid, t.job_id, t.function, t.submitter, m, t.submitted, t.placed,
                    t.started, now, t.spilled, t.pred, t.bytes_in, t.attempt, _FINISHED))
        if len(buf) >= FLUSH_ROWS:
            self.trace.flush()
        ack = self._gcs_write(t.tid, now)          # object table: the output's location and size
        visible = (ack if self._critical else now) + self._ret
        j = t.job
        if j is None:                              # single-task job: the driver gets the result
            if t.out_bytes:
                self._store_free(m, t.out_bytes)
            self._job_done_single(t, visible + (self._lat if m != t.submitter else 0.0))
            if self.qlen[m]:
                self._dispatch(m)
            return
        i = t.idx
        j.loc[i] = m
        j.size[i] = t.out_bytes
        self._store(j, m, t.out_bytes)
        j.avail[i] = visible
        for dep in t.dependents:
            self._input_arrived(dep, i, visible)
        j.outstanding -= 1
        if not j.outstanding:
            self._job_done(j)
        if self.qlen[m]:
            self._dispatch(m)

    def _input_arrived(self, dep: _Task, i: int, visible: float) -> None:
        """Input ``i`` of ``dep`` became visible at ``visible``: a node ``dep`` is placed on
        pulls it now; once all are visible, ``dep`` queues there (placed at submission) or
        its local scheduler decides (``decide_at = "inputs_ready"``)."""
        dep.remaining -= 1
        if visible > dep.inputs_at:
            dep.inputs_at = visible
        if dep.state is TaskState.FAILED:
            return
        if dep.node >= 0:
            self._fetch(dep, dep.node, i, visible if visible > dep.ready_at else dep.ready_at)
            if not dep.remaining:
                self._inputs_local(dep)
        elif not dep.remaining and not self._at_submit:
            self._ready(dep)

    def _store_free(self, m: int, size: int) -> None:
        """A single-task job's output: created on ``m`` and freed once the driver has it."""
        if size > self.cfg["object_store_bytes"] - self.store_used[m]:
            self.spilled_bytes += int(size - max(0.0, self.cfg["object_store_bytes"] - self.store_used[m]))

    def _job_done_single(self, t: _Task, seen: float) -> None:
        self.jobs_done += 1
        if self.jobs_done >= self.workload.total_jobs:
            self._stop()
        elif self.workload.arrival == "closed":
            self._next_job(t.driver, seen)

    def _next_job(self, driver: int, seen: float) -> None:
        """Closed loop: ``driver`` submits its next job when it sees the last one's result, at
        ``seen`` — as an event, so its local scheduler decides with the node as it is then
        (the finish that made the result has freed its slot and dispatched the queue), as in
        the runtime, where the submission follows the driver's get."""
        now = self.env._now
        self._later(seen - now if seen > now else 0.0, driver, self._submit_at)

    def _submit_at(self, driver: int) -> None:
        self.pending -= 1
        self._submit(driver, self.env._now)

    def _infeasible(self, t: _Task, when: float) -> None:
        """No node can ever hold ``t``: record it and fail everything downstream (once each,
        even when several of a task's inputs are infeasible)."""
        self._to(t, TaskState.INFEASIBLE)
        self.trace.add(TraceRow(task_id=t.tid, job_id=t.job_id, function=t.function, submitter=t.submitter,
                                node=-1, submitted_s=t.submitted, placed_s=NAN, started_s=NAN, finished_s=when,
                                spilled=t.spilled, predicted_wait_s=NAN, bytes_transferred=0,
                                attempt=t.attempt, state=TaskState.INFEASIBLE.value))
        j = t.job
        if j is not None:
            j.outstanding -= 1
            stack = list(t.dependents)
            while stack:
                dep = stack.pop()
                if dep.state is TaskState.FAILED:
                    continue
                self._to(dep, TaskState.FAILED)
                self.trace.add(TraceRow(task_id=dep.tid, job_id=dep.job_id, function=dep.function,
                                        submitter=dep.submitter, node=-1, submitted_s=dep.submitted, placed_s=NAN,
                                        started_s=NAN, finished_s=when, spilled=False, predicted_wait_s=NAN,
                                        bytes_transferred=0, attempt=dep.attempt, state=TaskState.FAILED.value))
                j.outstanding -= 1
                stack.extend(dep.dependents)
            if j.outstanding:
                return
        # The job ended without an event; its driver's next submission must not recurse
        # into this one (a closed loop of infeasible jobs would exhaust the stack).
        self._later(0.0, (t, j, when), self._ended_infeasible)

    def _ended_infeasible(self, arg) -> None:
        self.pending -= 1
        t, j, when = arg
        if j is None:
            self._job_done_single(t, when)
        else:
            self._job_done(j)

    def _job_done(self, j: _Job) -> None:
        now = self.env._now
        lat = self.cfg["latency_s"]
        seen = now
        for t in j.tasks:                       # the driver gets the job's sinks
            if not t.dependents and j.loc[t.idx] >= 0:
                seen = max(seen, j.avail[t.idx] + (lat if j.loc[t.idx] != j.driver else 0.0))
        for m, size in j.stored:                # no live reference remains: free the objects
            self.store_used[m] = max(0.0, self.store_used[m] - size)
        self.jobs_done += 1
        if self.jobs_done >= self.workload.total_jobs:
            self._stop()
            return
        if self.workload.arrival == "closed":
            self._next_job(j.job.driver, seen)
