"""Actors in the simulator: workload shape ``"actors"`` (the paper's §3.2 stateful edges,
§5.1 Fig. 11b).

::

  start: actor a is created on node a % nodes (row Actor.__init__, attempt 1)
  driver d --call j = Actor.step on actor j % actors--> local scheduler of d (decision, the
      call's task-table write: its lineage) --> the actor's mailbox (FIFO: submission order)
  actor: one step at a time on its node: a call (duration x node slowdown), a replay, or,
      after every actor_checkpoint_interval calls applied, a checkpoint (actor_checkpoint_s)
      --> a call's result: object-table write --> its caller (closed loop: the next call)
  node m dies --> each actor on m: its step in progress and the calls waiting for it end
      ("lost"; "failed" once actor_max_restarts rebuilds are used up, and so does every
      later call to it); calls made meanwhile wait, held by their callers
  heartbeat timeout: m declared dead --> each lost actor is rebuilt (in actor order) where
      the placement policy puts it (policy.base.place_rebuild, as in the runtime; with no live
      node to hold it, it waits and is placed by the same rule at the first view whose
      membership changes, e.g. shows a node that joined): a global-scheduler decision,
      a GCS read of its lineage, restoring its checkpoint (actor_checkpoint_s, if it has
      one) = row Actor.__init__ with attempt = rebuild + 1; then the calls applied since its
      last checkpoint are replayed in order (rows Actor.step with attempt > 1; their callers
      had their results already, so nothing is delivered twice); then its mailbox, in order

Trace rows (task_id / job_id): a call is job j's task j; ``Actor.__init__`` of actor a is task
jobs + a (job -1); the k-th checkpoint (0, 1, ...) is task jobs + actors + k, job = the last call
it covers. A call's ``placed_s`` is when it reached the actor's node (after a rebuild: when the
actor was placed again); replays and checkpoints run with ``submitted_s = placed_s`` = the
moment they were decided.

The runtime's overheads ([cluster] task_overhead_s, duration_inflation_s, result_return_s)
apply to actor calls as to tasks, since the runtime dispatches each call (and each replay) to
the actor's worker like a task: the actor is held task_overhead_s before a call or replay
starts (its row's started_s is after it), it runs duration x slowdown + duration_inflation_s,
and a call's result reaches its caller result_return_s after its object-table write (then
the hop). Creations and checkpoints pay none of them (actor_checkpoint_s models a restore).

Choices where the paper is silent: actors hold no CPU (Ray's 0-CPU actors) and run beside
tasks; a checkpoint is written and read in ``actor_checkpoint_s`` and survives any node
(it is in the GCS); a node restored before the timeout counts as declared dead then; a
worker failure (``faults.worker_failures``) does not hit actors. Deterministic: ties go to
the lowest actor / node index, and every step is one event on the kernel's heap.

Counters in ``SimResult.info``: ``actors``, ``actors_rebuilt``, ``actor_calls_replayed``
(replays finished), ``actor_checkpoints``, ``actor_calls_failed``.
"""
from __future__ import annotations

from collections import deque

from ..core.faults import may_run_again
from ..core.task import TaskState
from ..core.trace import TraceRow
from ..policy.base import place_rebuild
from .engine import NAN, _serve
from .faults import FaultySimulation

#: what an actor's current step is
CREATE, CALL, REPLAY, CKPT = "create", "call", "replay", "checkpoint"
#: an actor's status
CREATING, READY, DEAD, GONE = "creating", "ready", "dead", "gone"

STEP = "Actor.step"
INIT = "Actor.__init__"
CHECKPOINT = "Actor.__checkpoint__"

#: Trace states of actor rows (the shared TaskState values)
FINISHED, LOST, FAILED = TaskState.FINISHED.value, TaskState.LOST.value, TaskState.FAILED.value


class _Call:
    __slots__ = ("tid", "driver", "submitter", "duration", "submitted", "placed", "ready_at", "attempt")

    def __init__(self, tid, driver, submitter, duration, submitted):
        #: the job (and task) number
        self.tid = tid
        #: index of the calling driver, and its node when it called
        self.driver = driver
        self.submitter = submitter
        #: seconds on a node of speed 1
        self.duration = duration
        self.submitted = submitted
        #: when it reached the actor's node (NaN while its caller holds it)
        self.placed = NAN
        #: earliest start: its arrival at the actor's node
        self.ready_at = submitted
        #: 1, then +1 for each lost attempt and each replay
        self.attempt = 1


class _Actor:
    __slots__ = ("idx", "tid", "node", "status", "mailbox", "log", "replay", "applied", "ckpt", "busy",
                 "epoch", "restarts", "decided")

    def __init__(self, idx, tid):
        self.idx = idx
        #: task id of its Actor.__init__ rows
        self.tid = tid
        #: node it lives on (-1: none)
        self.node = -1
        self.status = CREATING
        #: calls not applied yet, in submission order (the head may be running)
        self.mailbox: deque[_Call] = deque()
        #: calls applied since the last checkpoint, in order (what a rebuild replays)
        self.log: list[_Call] = []
        #: calls still to replay in the rebuild under way
        self.replay: deque[_Call] = deque()
        #: calls applied to the state in memory; and that state's index at the last checkpoint
        self.applied = 0
        self.ckpt = 0
        #: the step under way: (kind, call or None, start time), or None
        self.busy: tuple | None = None
        #: bumped when the actor is lost: a step event of an older epoch is void
        self.epoch = 0
        self.restarts = 0
        #: when the current creation was decided (its row's submitted_s)
        self.decided = 0.0


class ActorSimulation(FaultySimulation):
    """Workload shape ``"actors"`` on the fault model of :class:`FaultySimulation`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        spec = self.workload.spec
        self._ckpt_every: int = spec.actor_checkpoint_interval
        self._ckpt_s: float = spec.actor_checkpoint_s
        self._max_restarts: int = spec.actor_max_restarts
        jobs = self.workload.total_jobs
        self.actors = [_Actor(a, jobs + a) for a in range(spec.actors)]
        #: task id of the next checkpoint row
        self._next_ckpt_tid = jobs + spec.actors
        #: per node: the actors living there (actor index -> actor, in arrival order)
        self._actors_on: list[dict[int, _Actor]] = [{} for _ in range(self.n)]
        #: per dead node not declared yet: its actors waiting to be rebuilt
        self._awaiting: dict[int, list[_Actor]] = {}
        #: (actor, the node it died with, the view membership it was last tried on) waiting
        #: for a live node to rebuild it on
        self._homeless: list[tuple[_Actor, int, tuple]] = []
        self.calls_done = self.actors_rebuilt = self.replays = self.checkpoints = self.calls_failed = 0

    def run(self):
        res = super().run()
        res.info.update(actors=len(self.actors), actors_rebuilt=self.actors_rebuilt,
                        actor_calls_replayed=self.replays, actor_checkpoints=self.checkpoints,
                        actor_calls_failed=self.calls_failed)
        return res

    def _ended_tasks(self) -> int:
        return self.calls_done

    def _row(self, tid, job, function, submitter, node, submitted, placed, started, finished, attempt, state):
        if attempt > 1:
            self.reexecuted += 1
        self.trace.add(TraceRow(task_id=tid, job_id=job, function=function, submitter=submitter, node=node,
                                submitted_s=submitted, placed_s=placed, started_s=started, finished_s=finished,
                                spilled=False, predicted_wait_s=NAN, bytes_transferred=0, attempt=attempt,
                                state=state))

    # -- start: every actor is created, round-robin over the nodes ---------------------
    def _start_processes(self) -> None:
        super()._start_processes()
        creator = self.driver_nodes[0]
        for a in self.actors:
            m = a.idx % self.n
            # the actor-table write, then the creation message to its node
            t = self._gcs_write(a.tid, 0.0) + (self._lat if m != creator else 0.0)
            self._place(a, m, 0.0)
            self._begin(a, CREATE, None, t, 0.0)

    def _place(self, a: _Actor, m: int, decided: float) -> None:
        a.node = m
        a.status = CREATING
        a.decided = decided
        self._actors_on[m][a.idx] = a

    # -- calls -------------------------------------------------------------------------
    def _submit(self, driver: int, t_sub: float) -> bool:
        nxt = self.workload.next_task(driver, t_sub)
        if nxt is None:
            return False
        j, duration = nxt[0], nxt[2]
        node = self.driver_nodes[driver]
        self.next_tid += 1
        c = _Call(j, driver, node, duration, t_sub)
        a = self.actors[self.workload.actor_of(j)]
        if a.status is GONE:
            self._fail_call(c, t_sub)
            return True
        now = self.env._now
        t = t_sub
        if self._ldec:
            t = _serve(self.sched_free, node, now, t, self._ldec)
        ack = self._gcs_write(j, t)                # the call's lineage (task table)
        if self._critical:
            t = ack
        c.ready_at = t
        if a.status is not DEAD:                   # on its way to the actor's node
            self._send(a, c, t)
        a.mailbox.append(c)
        self._pump(a)
        return True

    def _send(self, a: _Actor, c: _Call, t: float) -> None:
        """``c`` is sent at ``t`` to ``a``'s node."""
        c.ready_at = t + (self._lat if a.node != c.submitter else 0.0)
        c.placed = c.ready_at

    def _deliver(self, c: _Call, visible: float) -> None:
        """The caller sees ``c``'s result at ``visible``; a closed-loop driver calls again then
        (Simulator._next_job: an event, so that calls reach a mailbox in the order they are made)."""
        self.jobs_done += 1
        if self.jobs_done >= self.workload.total_jobs:
            self._stop()
        elif self.workload.arrival == "closed":
            self._next_job(c.driver, visible)

    def _fail_call(self, c: _Call, when: float) -> None:
        """``c``'s actor is gone for good: the call fails (its caller gets an error, no hang)."""
        self._row(c.tid, c.tid, STEP, c.submitter, -1, c.submitted, NAN, NAN, when, c.attempt, FAILED)
        self.calls_failed += 1
        self._later(0.0, c, self._call_failed)

    def _call_failed(self, c: _Call) -> None:
        self.pending -= 1
        self._deliver(c, self.env._now)

    # -- an actor's steps --------------------------------------------------------------
    def _begin(self, a: _Actor, kind: str, c: _Call | None, start: float, dur: float) -> None:
        a.busy = (kind, c, start)
        self.pending += 1
        self.env.call_in(start + dur - self.env._now, self._step_done, (a, a.epoch))

    def _pump(self, a: _Actor) -> None:
        """Start ``a``'s next step if it is idle: a checkpoint due, a replay, or the next call."""
        if a.busy is not None or a.status is not READY:
            return
        now = self.env._now
        k = self._ckpt_every
        slow = self.slow[a.node]
        if k and a.applied > a.ckpt and a.applied % k == 0:
            self._begin(a, CKPT, a.log[-1] if a.log else None, now, self._ckpt_s)
        elif a.replay:
            c = a.replay.popleft()
            c.attempt += 1
            self._begin(a, REPLAY, c, now + self._overhead, c.duration * slow + self._inflation)
        elif a.mailbox:
            c = a.mailbox[0]
            start = c.ready_at if c.ready_at > now else now
            self._begin(a, CALL, c, start + self._overhead, c.duration * slow + self._inflation)

    def _step_done(self, arg) -> None:
        self.pending -= 1
        a, epoch = arg
        if epoch != a.epoch:                       # the actor was lost meanwhile
            return
        kind, c, start = a.busy
        a.busy = None
        now = self.env._now
        m = a.node
        if kind is CALL:
            a.mailbox.popleft()
            a.applied += 1
            a.log.append(c)
            self.calls_done += 1
            self._row(c.tid, c.tid, STEP, c.submitter, m, c.submitted, c.placed, start, now, c.attempt, FINISHED)
            ack = self._gcs_write(c.tid, now)      # object table: the result's location
            visible = (ack if self._critical else now) + self._ret
            self._deliver(c, visible + (self._lat if m != c.submitter else 0.0))
        elif kind is REPLAY:
            a.applied += 1
            self.replays += 1
            self._row(c.tid, c.tid, STEP, c.submitter, m, a.decided, a.decided, start, now, c.attempt, FINISHED)
        elif kind is CKPT:
            a.ckpt = a.applied
            a.log.clear()
            self.checkpoints += 1
            self._row(self._next_ckpt_tid, c.tid if c is not None else -1, CHECKPOINT, m, m, start, start, start,
                      now, 1, FINISHED)
            self._next_ckpt_tid += 1
        else:
            a.status = READY
            self._row(a.tid, -1, INIT, m, m, a.decided, a.decided, start, now, a.restarts + 1, FINISHED)
        self._pump(a)

    # -- failures ----------------------------------------------------------------------
    def _kill_node(self, m: int) -> None:
        if not self.alive[m]:
            return
        super()._kill_node(m)
        lost = [self._actors_on[m][i] for i in sorted(self._actors_on[m])]
        self._actors_on[m] = {}
        for a in lost:
            self._lose(a)

    def _can_restart(self, a: _Actor) -> bool:
        return may_run_again(a.restarts, self._max_restarts)

    def _lose(self, a: _Actor) -> None:
        """``a``'s node died: its step under way and the calls sent to it end; it waits for
        the cluster to notice (then it is rebuilt), or is gone if it may not restart."""
        now = self.env._now
        m = a.node
        restart = self._can_restart(a)
        state = LOST if restart else FAILED
        a.epoch += 1
        running = None
        if a.busy is not None:
            kind, c, start = a.busy
            a.busy = None
            started = start if start <= now else NAN
            if kind is CREATE:
                self._row(a.tid, -1, INIT, m, m, a.decided, a.decided, started, now, a.restarts + 1, LOST)
            elif kind is CKPT:
                self._row(self._next_ckpt_tid, c.tid if c is not None else -1, CHECKPOINT, m, m, start, start,
                          started, now, 1, LOST)
                self._next_ckpt_tid += 1
            elif kind is REPLAY:
                self._row(c.tid, c.tid, STEP, c.submitter, m, a.decided, a.decided, started, now, c.attempt, LOST)
            else:
                running = c
                self._row(c.tid, c.tid, STEP, c.submitter, m, c.submitted, c.placed, started, now, c.attempt, state)
        for c in a.mailbox:                        # every call waiting for it was sent to m
            if c is not running:
                self._row(c.tid, c.tid, STEP, c.submitter, m, c.submitted, c.placed, NAN, now, c.attempt, state)
            c.attempt += 1
            c.placed = NAN
        a.node = -1
        a.replay.clear()
        if not restart:
            a.status = GONE
            self.calls_failed += len(a.mailbox)
            for c in a.mailbox:
                self._later(0.0, c, self._call_failed)
            a.mailbox.clear()
            a.log.clear()
            return
        a.status = DEAD
        a.applied = a.ckpt                         # the state in memory is gone
        self.pending += 1                          # waits for the heartbeat timeout
        self._awaiting.setdefault(m, []).append(a)

    def _add_node(self, spec: dict) -> None:
        self._actors_on.append({})                 # before the base class announces the node
        super()._add_node(spec)

    def _node_declared_dead(self, m: int) -> None:
        for a in self._awaiting.pop(m, ()):
            self.pending -= 1
            self._rebuild_actor(a, m)

    def _membership_changed(self) -> None:
        super()._membership_changed()
        members = self.view.membership
        homeless, self._homeless = self._homeless, []
        for a, dead, tried in homeless:
            if tried == members:                   # tried on this membership already: wait on
                self._homeless.append((a, dead, tried))
            else:
                self._rebuild_actor(a, dead)

    def _rebuild_actor(self, a: _Actor, dead: int) -> None:
        """Re-create ``a``, lost with node ``dead``, where the placement policy puts it (the
        rule both engines share, :func:`testbed.policy.base.place_rebuild`), then replay its
        log. With no live node in the view to hold it (or the one chosen is dead, which the
        view does not show yet) it waits, and is placed again by the same rule at the first
        view whose membership changes (:meth:`_membership_changed`), as the runtime's global
        scheduler does."""
        now = self.env._now
        p = place_rebuild(self.placement, a.tid, INIT, {}, dead, self.view, now, self.rng)
        if p is None or not self.alive[p.node]:
            self._homeless.append((a, dead, self.view.membership))   # waits for a node
            return
        target = int(p.node)
        a.restarts += 1
        self.actors_rebuilt += 1
        self._place(a, target, now)
        # the global scheduler places it, the node reads its lineage (and checkpoint) from the GCS
        r = self.gs_next
        self.gs_next = (r + 1) % self._n_gs
        t = _serve(self.gs_free, r, now, now + self._lat, self._gdec)
        t = self._gcs_read(a.tid, t)
        a.decided = now
        a.applied = a.ckpt
        a.replay = deque(a.log)
        for c in a.mailbox:                        # their callers send them to the new node
            self._send(a, c, max(c.ready_at, t))
        self._begin(a, CREATE, None, t, self._ckpt_s if a.ckpt > 0 else 0.0)
