"""Failures in the simulator: the ``[faults]`` section.

A run without faults never touches this module: ``Simulation(..., faults=...)`` builds a
:class:`FaultySimulation` only when the table injects something, so the event flow of a
fault-free run (``engine.py``) stays as fast as it is. This subclass overrides the few
steps where a failure can intervene and adds the fault events::

  node_failures, kill_every_s --> _kill_node(m), at once:
      attempts queued or running on m end ("lost", finished_s = now); m's resources leave;
      outputs of unfinished jobs stored on m are lost; readers that had not fetched a lost
      input yet go back to waiting for it (an attempt dispatched to a live node ends "lost");
      drivers on m move to the lowest live node
   --> lost attempts: re-executed (a new attempt) while max_retries allows, else "failed"
   --> lost objects still needed (a reader waits, or a sink of a job the driver has not
       received): lineage reconstruction re-executes the producer, recursively through
       its lost inputs (_resume_all); without lineage the readers fail
  heartbeat tick: each dead node misses it; after num_heartbeats_timeout misses the view
      marks it dead. Until then the view shows its last report, the global scheduler may
      still choose it, and a task sent there is lost on arrival (and retried)
  node_additions, restore_after_s --> a node joins (a new index / the same index, empty)
      and the view shows it from the next heartbeat
  worker_failures --> the lowest task id dispatched on the node loses its attempt
  gcs_replica_failures --> a GCS chain member dies: operations on its shard wait out the
      reconfiguration, one in flight is retried, a fresh replica joins later (testbed.sim.gcs)
  a task no node in the view can hold now, but some node ever can, waits at the global
      scheduler and is placed again when the view's membership changes; only a demand no
      configured or added node ever has is "infeasible"

Choices where the Ray paper is silent (see also the README of [faults]):

- Peers notice a crash at once (its processes die, so connections are refused): lost
  attempts are retried and lost objects rebuilt at the failure time. Only the global
  scheduler, which knows nodes through heartbeats, needs the timeout.
- ``max_retries`` bounds the re-executions of a task whatever their cause: its attempt
  lost with its node or worker, lost on arrival, pulled back because an input vanished,
  or its output rebuilt. ``max_retries = 0``: no task ever runs twice.
- An object lives on the node that produced it; copies fetched by readers are not
  locations (the object table holds the creator's node), so it is lost with that node.
  A reader placed on a node and still waiting for its inputs there (it holds no worker
  slot: ``scheduler.decide_at``, testbed.policy.base.decides_now) waits again for an input
  lost meanwhile, and is decided again if that input's loss reaches it in transit; a reader
  dispatched but not yet computing (its worker start or dispatch overhead) loses its attempt.
  A task waiting on a node that dies is lost with it, and its retry is decided at once,
  like a new task.
- Without lineage (``lineage = false``) a task whose attempt was lost is still retried
  (its owner holds the spec), but a lost object is never rebuilt: readers that still
  need it end "failed" (with their dependents). A producer whose object cannot be rebuilt
  keeps its "finished" row; a lost sink the driver had not received yet is counted in
  ``info["results_lost"]`` (its job still ends: the driver gets an error, not a hang).
- A killed worker is the one of the lowest task id dispatched on the node (holding a
  worker slot), whether it computes or still fetches inputs.
- A driver on a dead node moves to the lowest live node (if none is alive, it stays and
  its tasks wait at the global scheduler until a node joins).
- A task waiting for a node is placed again at the first heartbeat whose view's
  membership (nodes, alive) differs from the previous one; no extra decision time.

Counters in ``SimResult.info``: ``reexecuted`` (Trace rows with attempt > 1),
``lost_objects``, ``results_lost``, ``nodes_killed``, ``nodes_added``, ``nodes_restored``,
``gcs_replicas_killed``, ``gcs_replicas_added``, ``gcs_ops_retried``, and
``gcs_reconfigurations`` [(time of the failure, seconds reconfiguring)];
``Simulation.fault_log`` lists ``(time, "kill" | "restore" | "add" | "worker", node)`` and
``(time, "gcs_kill" | "gcs_join", shard)``.

Subclasses (actors) hear of membership through two hooks: ``_node_declared_dead(m)`` (the
heartbeat timeout, or a restore before it) and ``_node_joined(m)`` (an addition or a restore).

The hot path keeps task states only in validation mode; here they are always kept (the
fault handling reads them), and checked only when ``run.validate`` is set.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from ..core import config as C
from ..core.errors import ConfigError
from ..core.faults import RANDOM_KILL_PROTECTED, may_run_again, random_kill_rng, random_victim
from ..core.resources import fits
from ..core.task import TaskState, check_transition
from ..core.trace import TraceRow
from ..core.views import ClusterView, TaskView
from .engine import NAN, Simulation, _Job, _serve, _Task
from .gcs import GcsChains

S = TaskState
WAITING = S.WAITING_FOR_INPUTS
RECONSTRUCTING = S.RECONSTRUCTING
#: states of a task that has not been dispatched yet and counts its missing inputs
_UNDISPATCHED = (WAITING, RECONSTRUCTING)


def resolve_faults(faults: dict | None, cluster: dict | None = None) -> dict:
    """The ``[faults]`` table with defaults filled (idempotent on a resolved one), checked
    against the cluster's GCS shards and chain length."""
    gcs = {k: cluster[k] for k in ("gcs_shards", "gcs_chain_length")} if cluster else {}
    return C.validate_core({"faults": faults or {}, "cluster": gcs})["faults"]


class FaultySimulation(Simulation):
    """A :class:`~testbed.sim.engine.Simulation` that injects the ``[faults]`` table's failures."""

    def __init__(self, cluster: dict, workload, placement, spillover, seed: int = 0, keep_rows: bool = True,
                 validate: bool = False, max_sim_time_s: float = 1e7, faults: dict | None = None,
                 decide_at: str = "submit"):
        f = resolve_faults(faults, cluster)
        super().__init__(cluster, workload, placement, spillover, seed=seed, keep_rows=keep_rows,
                         validate=validate, max_sim_time_s=max_sim_time_s, faults=f, decide_at=decide_at)
        #: check transitions (run.validate); states are tracked either way (the base class
        #: records them only when ``validate`` is true)
        self._check = validate
        self.validate = True
        self.lineage: bool = f["lineage"]
        self.max_retries: int = f["max_retries"]
        self.restore_after_s: float = f["restore_after_s"]
        #: missed heartbeats after which the view marks a node dead
        self._detect_after: int = cluster["num_heartbeats_timeout"]
        #: random kills draw from their own stream (the policies' draws stay as without faults)
        self._fault_rng = random_kill_rng(seed)
        #: additions in time order (ties: list order); they get indices n, n + 1, ...
        self._additions = sorted(f["node_additions"], key=lambda a: a["at_s"])
        self._check_node_indices(f)
        #: every node the cluster ever has: a demand none of them holds is "infeasible"
        self._ever = list(self.total) + [_node_total(a) for a in self._additions]
        #: tasks between a scheduling decision and their arrival in a node's queue (a
        #: decision in progress, or waiting for a node): they must not be readied twice
        self._pipeline: set[_Task] = set()
        #: tasks waiting at the global scheduler for a node that can hold them
        self._parked: list[_Task] = []
        #: multi-task jobs submitted and not done yet (insertion order)
        self._jobs_live: dict[_Job, bool] = {}
        self.fault_log: list[tuple[float, str, int]] = []
        self.reexecuted = self.lost_objects = self.results_lost = 0
        self.nodes_killed = self.nodes_added = self.nodes_restored = 0
        #: the GCS chains (which members live; when operations may proceed)
        self._chains = GcsChains(cluster["gcs_shards"], cluster["gcs_chain_length"], cluster["gcs_reconfigure_s"],
                                 f["gcs_replace_replicas"], f["gcs_replica_failures"])
        #: GCS operations sent again because a chain member died while they were in flight
        self.gcs_retries = 0
        #: attempts that finished (the lineage a flush may move to disk)
        self._finished_count = 0
        #: the membership (nodes, alive) of the last view the global scheduler got
        self._members = self.view.membership
        if f["gcs_replica_failures"]:
            self._gcs_write = self._gcs_write_failing
            self._gcs_read = self._gcs_read_failing

    def _check_node_indices(self, f: dict) -> None:
        n0 = self.n
        added_at = [a["at_s"] for a in self._additions]
        for key in ("node_failures", "worker_failures"):
            for i, x in enumerate(f[key]):
                k, at = x["node"], x["at_s"]
                if k >= n0 + len(added_at) or (k >= n0 and added_at[k - n0] > at):
                    raise ConfigError(f"node {k} does not exist at {at} s (nodes 0..{n0 - 1}, then "
                                      f"{len(added_at)} added in time order)", key=f"faults.{key}[{i}].node")

    # -- per-node state ----------------------------------------------------------------
    def _build_nodes(self) -> None:
        self.alive = None       # the first snapshot (in the base) is of a cluster all alive
        super()._build_nodes()
        n = self.n
        #: truth: is each node up
        self.alive: list[bool] = [True] * n
        #: per node: task id -> task dispatched there (holding a worker slot)
        self._running_on: list[dict[int, _Task]] = [{} for _ in range(n)]
        #: per node: tasks of unfinished multi-task jobs whose output is stored there
        self._objects_on: list[dict[_Task, None]] = [{} for _ in range(n)]
        #: dead nodes the view does not know about yet: node -> [missed heartbeats,
        #: last report (available by resource, queue length, running) or None,
        #: tasks lost on arrival there, (task, retry) to settle once it is declared dead]
        self._undetected: dict[int, list] = {}

    def _heartbeat_offsets(self):
        """Staggered heartbeats (cluster.heartbeat_stagger_s) are not yet modelled with
        faults: nodes report in one synchronized round."""
        return None

    def _snapshot(self) -> ClusterView:
        if self.alive is None:
            return super()._snapshot()
        names, n = self.names, self.n
        avail = np.array([[a.get(k, 0.0) for k in names] for a in self.avail]).reshape(n, len(names))
        queue = np.array(self.qlen, dtype=np.int64)
        running = np.array(self.running, dtype=np.int64)
        alive = np.array(self.alive, dtype=bool)
        for m, (_, report, _) in self._undetected.items():
            if report is not None:          # the view still shows the node's last heartbeat
                a, q, r = report
                alive[m] = True
                avail[m] = [a.get(k, 0.0) for k in names]
                queue[m], running[m] = q, r
        self.view_version += 1
        return ClusterView(version=self.view_version, as_of=self.env._now, resource_names=names,
                           total=self._total_arr, available=avail, queue_length=queue,
                           running=running, alive=alive, slots=self._slots)

    def _feasible_anywhere(self, task: _Task) -> bool:
        ok = self._feasible_cache.get(task.dkey)
        if ok is None:
            ok = self._feasible_cache[task.dkey] = any(fits(task.demand, t) for t in self._ever)
        return ok

    # -- run -----------------------------------------------------------------------------
    def run(self):
        res = super().run()
        res.info.update(reexecuted=self.reexecuted, lost_objects=self.lost_objects,
                        results_lost=self.results_lost,
                        nodes_killed=self.nodes_killed, nodes_added=self.nodes_added,
                        nodes_restored=self.nodes_restored,
                        gcs_replicas_killed=len(self._chains.reconfigurations),
                        gcs_replicas_added=self._chains.added,
                        gcs_ops_retried=self.gcs_retries, gcs_reconfigurations=self._chains.reconfigurations)
        return res

    def _ended_tasks(self) -> int:
        return self._finished_count

    def _start_processes(self) -> None:
        super()._start_processes()
        f = self.faults
        # one-shot fault events are counted as pending (a run waiting for a node to join
        # is not stuck); the periodic random kill is not (it alone cannot unblock anything)
        for a in self._additions:           # first: a failure of an added node at its join time follows it
            self._later(a["at_s"], a, self._add_node)
        for x in f["node_failures"]:
            self._later(x["at_s"], x["node"], self._node_failure)
        for x in f["worker_failures"]:
            self._later(x["at_s"], x["node"], self._worker_failure)
        if f["kill_every_s"] > 0:
            self.env.call_in(f["kill_every_s"], self._random_kill, None)
        # not counted as pending: a GCS failure or join never unblocks anything
        for i, x in enumerate(f["gcs_replica_failures"]):
            self.env.call_in(x["at_s"], self._gcs_replica_failure, (i, x))

    # -- heartbeat rounds (the base round, engine.Simulation._heartbeat_round, plus liveness)
    def _heartbeat_tick(self) -> list:
        """Each dead node misses this heartbeat; one that has missed num_heartbeats_timeout
        is declared dead (the view taken now drops it). Returns [(node, its lost-on-arrival
        tasks)] declared, settled when this round's view reaches the global scheduler."""
        declared = []
        for m, st in list(self._undetected.items()):
            st[0] += 1
            if st[0] >= self._detect_after:
                del self._undetected[m]     # declared dead: the view drops it
                declared.append((m, st[2]))
        return declared

    def _view_arrived(self, declared: list) -> None:
        """The global scheduler learns of the nodes declared dead (their lost-on-arrival tasks
        are settled, what lived there is rebuilt), and places the tasks waiting for a node if
        the view's membership changed."""
        for m, lost in declared:
            self._settle_lost_on_arrival(lost)
            self._node_declared_dead(m)
        super()._view_arrived(declared)
        members = self.view.membership
        if members != self._members:
            self._members = members
            self._membership_changed()

    def _membership_changed(self) -> None:
        """The global scheduler's view shows other nodes, or other nodes alive, than the last
        one (ClusterView.membership): what waits for a node is tried again (a subclass adds
        what it keeps waiting)."""
        if self._parked:
            self._place_parked()

    def _to(self, t: _Task, state: TaskState) -> None:
        if self._check:
            check_transition(t.state, state, t.tid)
        t.state = state

    # -- scheduling hooks --------------------------------------------------------------
    def _ready(self, t: _Task) -> None:
        if t.state is S.SUBMITTED and t.job is not None:
            self._jobs_live[t.job] = True
        self._pipeline.add(t)
        if not self.alive[t.submitter]:
            d = self.driver_nodes[t.driver]
            if not self.alive[d]:           # no live node at all: wait for one
                t.spilled = True
                self._parked.append(t)
                return
            t.submitter = d                 # the driver moved; its local scheduler decides
        super()._ready(t)

    def _global_place(self, t: _Task, tv: TaskView) -> None:
        if t.state is S.FAILED:             # failed while the global scheduler held it
            self._pipeline.discard(t)
            return
        if t.remaining and not self._at_submit:   # an input was lost meanwhile: wait for it again
            self._pipeline.discard(t)
            self._wait_again(t)
            return
        if t.deps:                          # input locations may have changed since the local decision
            tv = self._task_view(t)
        super()._global_place(t, tv)

    def _infeasible(self, t: _Task, when: float) -> None:
        if self._feasible_anywhere(t):
            # the global scheduler found no node in its view that can hold the task now;
            # a node that can may join or come back: wait
            self._parked.append(t)
            return
        self._pipeline.discard(t)
        super()._infeasible(t, when)

    def _place_parked(self) -> None:
        parked, self._parked = self._parked, []
        for t in parked:
            tv = TaskView(t.tid, t.function, t.demand, (), t.submitter) if not t.deps else None
            self._global_place(t, tv)

    def _assign(self, t: _Task, m: int, at: float) -> None:
        if not self.alive[m]:               # lost on arrival (or it waits again), as _enqueue
            self._enqueue(t, m, at)
            return
        super()._assign(t, m, at)

    def _enqueue(self, t: _Task, m: int, ready_at: float) -> None:
        if not self.alive[m]:
            # the view that chose m does not know it is dead: the task is lost on arrival
            t.node = m
            self._later(max(ready_at - self.env._now, 0.0), (t, m), self._arrive)
            return
        if self._still_wanted(t):
            super()._enqueue(t, m, ready_at)

    def _spilled_back(self, t: _Task) -> None:
        t.node = -1                         # at the global scheduler again, in no node's queue
        self._pipeline.add(t)

    def _still_wanted(self, t: _Task) -> bool:
        """``t`` leaves the pipeline on reaching a node: False if it failed meanwhile, or an
        input was lost meanwhile (then it waits for that input again)."""
        self._pipeline.discard(t)
        if t.state is S.FAILED:
            return False
        if t.remaining:
            self._wait_again(t)
            return False
        return True

    def _arrive(self, arg) -> None:
        """A task sent to a node that was dead when it was sent arrives there."""
        self.pending -= 1
        t, m = arg
        if not self._still_wanted(t):
            return
        if self.alive[m]:                   # restored meanwhile
            if t.deps:                      # its inputs come to m first
                self._assign(t, m, self.env._now)
            else:
                super()._enqueue(t, m, self.env._now)
            return
        self._to(t, S.QUEUED)
        retry = self._can_retry(t)
        self._end_attempt(t, TaskState.LOST.value if retry else TaskState.FAILED.value)
        self._to(t, S.LOST)
        if m in self._undetected:
            # its sender, the global scheduler, learns of the loss when it declares m dead
            # (placing it again now would see the same view); counted as pending till then
            self.pending += 1
            self._undetected[m][2].append((t, retry))
        else:
            self._settle([(t, retry)], [])

    def _settle_lost_on_arrival(self, lost: list[tuple[_Task, bool]]) -> None:
        if lost:
            self.pending -= len(lost)
            self._settle(lost, [])

    def _wait_again(self, t: _Task) -> None:
        """``t`` was being scheduled when one of its inputs was lost: it waits for it again
        (it is readied when the input is back; not an attempt)."""
        if t.state is RECONSTRUCTING:
            self._to(t, WAITING)
        t.node = -1
        t.seq += 1
        t.placed = t.pred = NAN
        t.spilled = False

    def _start(self, t: _Task, m: int) -> None:
        super()._start(t, m)
        self._running_on[m][t.tid] = t

    # -- completion ----------------------------------------------------------------------
    def _finish(self, t: _Task) -> None:
        """As the base ``_finish``; the node stops counting the task as dispatched there."""
        del self._running_on[t.node][t.tid]
        self._finished_count += 1
        if t.attempt > 1:
            self.reexecuted += 1
        if t.job is not None:               # its output is stored there (until its job ends)
            self._objects_on[t.node][t] = None
        super()._finish(t)

    def _input_arrived(self, dep: _Task, i: int, visible: float) -> None:
        # only a task not dispatched yet counts its missing inputs (a retried or rebuilt
        # reader may already have this one), and one in the pipeline is readied already
        if dep.state not in _UNDISPATCHED:
            return
        dep.remaining -= 1
        if visible > dep.inputs_at:
            dep.inputs_at = visible
        m = dep.node
        if m >= 0:
            if self.alive[m]:               # placed on m (at submission): m pulls it now
                self._fetch(dep, m, i, visible if visible > dep.ready_at else dep.ready_at)
                if not dep.remaining:
                    self._inputs_local(dep)
            # else: on its way to a node that died; it is lost on arrival (_arrive)
        elif not dep.remaining and dep not in self._pipeline:
            self._ready(dep)

    def _job_done(self, j: _Job) -> None:
        # a job ended by a failure is closed by a deferred event; a loss at that instant
        # may have reopened it (a sink being rebuilt): then its last task closes it
        if j.outstanding or self._jobs_live.pop(j, None) is None:
            return
        for x in j.tasks:
            loc = j.loc[x.idx]
            if loc >= 0:
                self._objects_on[loc].pop(x, None)
        super()._job_done(j)

    def _ended(self, arg) -> None:
        """A job ended by a failure, without a finish event (deferred like ``_ended_infeasible``)."""
        self.pending -= 1
        t, j = arg
        if j is None:
            self._job_done_single(t, self.env._now)
        else:
            self._job_done(j)

    # -- fault events ----------------------------------------------------------------------
    def _node_failure(self, m: int) -> None:
        self.pending -= 1
        self._kill_node(m)

    def _random_kill(self, _) -> None:
        if self.done:
            return
        victim = random_victim((m for m in range(self.n) if self.alive[m]), self.faults["min_live_nodes"],
                               self._fault_rng, protected=RANDOM_KILL_PROTECTED)
        if victim is not None:
            self._kill_node(victim)
        self.env.call_in(self.faults["kill_every_s"], self._random_kill, None)

    def _worker_failure(self, m: int) -> None:
        self.pending -= 1
        if not self.alive[m] or not self._running_on[m]:
            return
        self.fault_log.append((self.env._now, "worker", m))
        t = self._running_on[m][min(self._running_on[m])]
        self._release(t)
        self._cancel_finishes([t])
        retry = self._can_retry(t)
        self._end_attempt(t, TaskState.LOST.value if retry else TaskState.FAILED.value)
        self._to(t, S.LOST)
        self._settle([(t, retry)], [])
        if self.qlen[m]:
            self._dispatch(m)

    def _kill_node(self, m: int) -> None:
        if not self.alive[m]:
            return
        now = self.env._now
        self.alive[m] = False
        self.nodes_killed += 1
        self.fault_log.append((now, "kill", m))
        v = self.view
        report = None
        if m < v.n_nodes and v.alive[m]:
            report = ({k: float(v.available[m, c]) for c, k in enumerate(v.resource_names)},
                      int(v.queue_length[m]), int(v.running[m]))
        self._undetected[m] = [0, report, []]
        # the node's processes die: its queue, its workers, its resources, its store
        victims = [t for q in self.queues[m].values() for t in q] + list(self._running_on[m].values())
        # ... and the tasks placed there waiting for their inputs (decided at submission)
        for j in self._jobs_live:
            for t in j.tasks:
                if t.node == m and t.state in _UNDISPATCHED:
                    self._pipeline.discard(t)
                    t.seq += 1              # an arrival of its inputs there does not happen
                    victims.append(t)
        cancel = list(self._running_on[m].values())
        self.queues[m] = {}
        self.qlen[m] = self.running[m] = 0
        self._running_on[m] = {}
        self.avail[m] = {k: 0.0 for k in self.total[m]}
        self.store_used[m] = 0.0
        self._durs[m], self._xfers[m] = [], []     # its unsent heartbeat report dies with it
        ended: list[tuple[_Task, bool]] = []
        for t in sorted(victims, key=lambda x: x.tid):
            retry = self._can_retry(t)
            self._end_attempt(t, TaskState.LOST.value if retry else TaskState.FAILED.value)
            self._to(t, S.LOST)
            ended.append((t, retry))
        # objects stored there are lost; so are the copies readers fetched there
        lost = list(self._objects_on[m])
        self._objects_on[m] = {}
        for j in self._jobs_live:
            if j.stored:
                j.stored = [x for x in j.stored if x[0] != m]
        for x in lost:
            x.job.loc[x.idx] = -1
        self.lost_objects += len(lost)
        freed: list[int] = []
        for x in lost:
            for d in x.dependents:
                s = d.state
                if s in _UNDISPATCHED:
                    d.remaining += 1
                elif s is S.QUEUED or (s is S.RUNNING and d.started > now):
                    # dispatched to a live node but has not fetched the input: pulled back
                    if s is S.QUEUED:
                        self.queues[d.node][d.dkey].remove(d)
                        self.qlen[d.node] -= 1
                    else:
                        self._release(d)
                        cancel.append(d)
                        freed.append(d.node)
                    retry = self._can_retry(d) and self._inputs_recoverable(d)
                    self._end_attempt(d, TaskState.LOST.value if retry else TaskState.FAILED.value)
                    self._to(d, S.LOST)
                    ended.append((d, retry))
        self._cancel_finishes(cancel)
        self._move_drivers()
        self._settle(ended, lost)
        for n in dict.fromkeys(freed):
            if self.alive[n] and self.qlen[n]:
                self._dispatch(n)
        if self.restore_after_s > 0:
            self._later(self.restore_after_s, m, self._restore_node)

    def _restore_node(self, m: int) -> None:
        """The killed node ``m`` comes back, empty, with its resources."""
        self.pending -= 1
        if self.alive[m]:
            return
        self.alive[m] = True
        st = self._undetected.pop(m, None)  # it registers again; the view shows it at the next heartbeat
        if st is not None:                  # ... and the global scheduler learns what it lost
            self._settle_lost_on_arrival(st[2])
        self.avail[m] = dict(self.total[m])
        self.nodes_restored += 1
        self.fault_log.append((self.env._now, "restore", m))
        self._move_drivers()
        if st is not None:
            self._node_declared_dead(m)     # what ran there before is gone
        self._node_joined(m)

    def _add_node(self, spec: dict) -> None:
        """A new node joins with the next index; the view shows it at the next heartbeat."""
        self.pending -= 1
        total = _node_total(spec)
        m = self.n
        self.n += 1
        self.names = sorted(set(self.names) | set(total))
        self.total.append(total)
        self.avail.append(dict(total))
        self.slow.append(1.0 / spec["speed"])
        self.bw.append(float(self.cfg["bandwidth_bytes_per_s"]))
        self.queues.append({})
        for arr in (self.qlen, self.running):
            arr.append(0)
        for arr in (self.sched_free, self.link_free, self.store_used):
            arr.append(0.0)
        self._durs.append([])
        self._xfers.append([])
        self.alive.append(True)
        self._running_on.append({})
        self._objects_on.append({})
        self._refresh_totals()
        self.nodes_added += 1
        self.fault_log.append((self.env._now, "add", m))
        self._move_drivers()
        self._node_joined(m)

    def _node_declared_dead(self, m: int) -> None:
        """Hook: the cluster now knows node ``m`` died (a subclass rebuilds what was there)."""

    def _node_joined(self, m: int) -> None:
        """Hook: node ``m`` was added or came back (empty)."""

    # -- GCS replica failures (testbed.sim.gcs) -------------------------------------------
    def _gcs_replica_failure(self, arg) -> None:
        i, x = arg
        if self.done:
            return
        shard, now = x["shard"], self.env._now
        ch = self._chains
        ch.kill(shard, now, f"faults.gcs_replica_failures[{i}]")
        self.fault_log.append((now, "gcs_kill", shard))
        if ch.replace:
            # after the reconfiguration, a fresh replica copies the shard's state, then joins
            copy_s = self._gcs_memory_bytes() / self._n_gcs / self.cfg["bandwidth_bytes_per_s"]
            self.env.call_in(ch.reconfigure_s + copy_s, self._gcs_replica_join, shard)

    def _gcs_replica_join(self, shard: int) -> None:
        self._chains.join(shard)
        self.fault_log.append((self.env._now, "gcs_join", shard))

    def _gcs_op(self, shard: int, t: float, write: bool) -> float:
        """An operation reaching ``shard`` at ``t``: it waits out a reconfiguration, and is
        sent again after one that starts while it is in flight; returns when it completes
        (a write: acknowledged by the tail)."""
        self.gcs_ops += 1
        ch = self._chains
        now = self.env._now
        service = self._gcs_s if write else self._gcs_read_s
        b = ch.begin(shard, t)
        while True:
            end = _serve(self.gcs_free, shard, now, b, service)
            if write:
                end += (ch.members_at(shard, b) - 1) * self._hop_s
            k = ch.failure_within(shard, b, end)
            if k is None:
                return end
            self.gcs_retries += 1
            b = ch.begin(shard, k)

    def _gcs_write_failing(self, key: int, t: float) -> float:
        return self._gcs_op(key % self._n_gcs, t, True)

    def _gcs_read_failing(self, key: int, t: float) -> float:
        return self._gcs_op(key % self._n_gcs, t, False)

    def _move_drivers(self) -> None:
        """Drivers on dead nodes move to the lowest live node (if any)."""
        live = next((m for m in range(self.n) if self.alive[m]), None)
        if live is None:
            return
        for d, node in enumerate(self.driver_nodes):
            if not self.alive[node]:
                self.driver_nodes[d] = live

    # -- losing, retrying, rebuilding ----------------------------------------------------
    def _can_retry(self, t: _Task) -> bool:
        return may_run_again(t.attempt - 1, self.max_retries)

    def _rebuildable(self, x: _Task) -> bool:
        """Can the lost output of the finished task ``x`` be rebuilt?"""
        return self.lineage and self._can_retry(x)

    def _inputs_recoverable(self, t: _Task) -> bool:
        """Will every input of ``t`` exist again (available, being produced, or rebuildable)?"""
        j = t.job
        for d in t.deps:
            if j.loc[d] < 0:
                p = j.tasks[d]
                s = p.state
                if s is S.FAILED or s is S.INFEASIBLE or (s is S.FINISHED and not self._rebuildable(p)):
                    return False
        return True

    def _release(self, t: _Task) -> None:
        """``t``, dispatched to the live node ``t.node``, gives its worker and resources back."""
        m = t.node
        avail = self.avail[m]
        for k, v in t.dkey:
            avail[k] = avail.get(k, 0.0) + v
        self.running[m] -= 1
        del self._running_on[m][t.tid]

    def _cancel_finishes(self, tasks: list[_Task]) -> None:
        """Remove the pending finish events of ``tasks`` (their attempts ended) from the heap."""
        if not tasks:
            return
        self.pending -= self.env.cancel_calls(self._finish, tasks)

    def _end_attempt(self, t: _Task, state: str) -> None:
        """Record the Trace row of ``t``'s current attempt, ended now in ``state``."""
        now = self.env._now
        attempt = t.attempt
        if attempt > 1:
            self.reexecuted += 1
        # a decision or a start computed ahead (closed form) that lies after now did not happen
        placed = t.placed if t.placed <= now else NAN
        started = t.started if t.started <= now else NAN
        self.trace.add(TraceRow(task_id=t.tid, job_id=t.job_id, function=t.function, submitter=t.submitter,
                                node=t.node, submitted_s=t.submitted, placed_s=placed, started_s=started,
                                finished_s=now, spilled=t.spilled, predicted_wait_s=t.pred,
                                bytes_transferred=t.bytes_in, attempt=attempt, state=state))

    def _new_attempt(self, t: _Task) -> None:
        """``t`` (LOST) becomes its next attempt, RECONSTRUCTING, with per-attempt fields reset."""
        t.attempt += 1
        t.node = -1
        t.seq += 1
        t.placed = t.started = t.pred = NAN
        t.spilled = False
        t.bytes_in = 0
        t.transfers = None
        self._to(t, RECONSTRUCTING)

    def _rebuild(self, x: _Task) -> bool:
        """Start re-executing the finished task ``x`` whose output was lost; False if it cannot be."""
        if not self._rebuildable(x):
            return False
        self._to(x, S.LOST)
        self._new_attempt(x)
        x.job.outstanding += 1              # the job waits for it again
        return True

    def _settle(self, ended: list[tuple[_Task, bool]], lost: list[_Task]) -> None:
        """After a failure: retry or fail the attempts that ended (state LOST), then rebuild
        the lost objects still needed, or fail whatever needed them."""
        work: deque[_Task] = deque()
        for t, retry in ended:
            if retry:
                self._new_attempt(t)
                work.append(t)
            else:
                self._to(t, S.FAILED)
                self._fail_after(t)
        self._resume_all(work)
        for x in lost:
            if x.state is not S.FINISHED or x.job.loc[x.idx] >= 0:
                continue                    # being rebuilt already (a retried reader needed it)
            j = x.job
            waiting = [d for d in x.dependents if d.state in _UNDISPATCHED]
            sink = not x.dependents and j in self._jobs_live
            if not waiting and not sink:
                continue                    # every reader has its copy: not needed
            if self._rebuild(x):
                self._resume_all(deque([x]))
                continue
            for d in waiting:
                self._fail(d)
            if sink:                        # the driver will never receive it
                self.results_lost += 1

    def _resume_all(self, work: deque[_Task]) -> None:
        """Send RECONSTRUCTING tasks on: ready if their inputs exist, else waiting for them
        (rebuilding the lost ones, recursively), or failed if one can never exist."""
        now = self.env._now
        while work:
            t = work.popleft()
            if t.state is not RECONSTRUCTING:
                continue
            j = t.job
            t.inputs_at = now
            missing = []
            if j is not None:
                for d in t.deps:
                    if j.loc[d] >= 0:
                        if j.avail[d] > t.inputs_at:
                            t.inputs_at = j.avail[d]
                    else:
                        missing.append(j.tasks[d])
            t.remaining = len(missing)
            if not missing:
                self._ready(t)
                continue
            self._to(t, WAITING)
            if not self._inputs_recoverable(t):
                self._fail(t)
                continue
            for p in missing:
                if p.state is S.FINISHED and self._rebuild(p):
                    work.append(p)
            if self._at_submit and t.state is WAITING:
                self._ready(t)              # resubmitted: decided now, like a new task

    def _fail(self, t: _Task) -> None:
        """``t`` (not dispatched) can never run: record it "failed", and every task waiting
        for it, transitively."""
        stack = [t]
        while stack:
            d = stack.pop()
            if d.state not in _UNDISPATCHED:
                continue
            if d.state is RECONSTRUCTING:
                self._to(d, WAITING)
            self._end_attempt(d, TaskState.FAILED.value)
            self._to(d, S.FAILED)
            stack.extend(self._settle_failed(d))

    def _fail_after(self, t: _Task) -> None:
        """``t`` just failed (its row is written): fail what waits for it."""
        for d in self._settle_failed(t):
            self._fail(d)

    def _settle_failed(self, t: _Task) -> list[_Task]:
        """Account for ``t``'s failure in its job; returns its dependents that wait for it."""
        self._pipeline.discard(t)
        j = t.job
        if j is None:
            self._later(0.0, (t, None), self._ended)
            return []
        j.outstanding -= 1
        if not j.outstanding:
            self._later(0.0, (t, j), self._ended)
        return [d for d in t.dependents if d.state in _UNDISPATCHED]


def _node_total(spec: dict) -> dict[str, float]:
    """Total resources of an added node (the shape of ``Simulation.total``'s entries)."""
    res = {"CPU": float(spec["cpus"]), "GPU": float(spec["gpus"]),
           **{k: float(v) for k, v in spec["resources"].items()}}
    return {k: v for k, v in res.items() if v > 0}
