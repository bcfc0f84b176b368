"""A node manager: the local scheduler and the object-store manager of one logical node.

    driver, workers ──("submit" | "get" | "wait" | "create" | "seal" | "put_inline" | "unpin")──> node
    node ──("run", task)──> idle worker ──("done", ...)──> node
    node ──("forward", spec)──> global scheduler ──("assign", spec)──> some node
    node ──("pull", oid)──> node holding it ──("object", oid, bytes)──> node
    node ──heartbeat ("put", "node", id, load) and object locations ("obj_add")──> GCS shards
    node ──"spawn_worker"──> supervisor (private pipe)

State it owns: the queue of tasks whose inputs are here and which wait for resources and
a worker; tasks waiting for inputs; the node's objects (small ones inline in memory, the
rest in shared memory, see objstore); which client pins which object; the workers.
The shared SpilloverPolicy decides, per submitted task, whether it stays here.
"""
from __future__ import annotations

import os
import time
from collections import deque
from typing import Any

from ..core.faults import may_run_again
from ..core.resources import fits
from ..core.seeding import policy_rng
from ..core.task import TaskState
from ..core.trace import TraceRow
from ..core.views import LocalView, TaskView
from ..policy.base import decides_now, reports_run_time
from . import objstore
from .actors import ONE_CREATION, actor_entry, placement_demand
from . import params
from .context import Context
from .core import object_id
from .errors import ActorDiedError, InfeasibleError, ObjectLostError, WorkerCrashedError, as_failure
from . import transport
from .gcsclient import GcsClient, connect_retry
from .gpus import GpuPool
from .loop import Loop

#: task-table states of an attempt not yet finished, and of one a node holds (or was sent)
_PENDING = frozenset(x.value for x in (TaskState.SUBMITTED, TaskState.RECONSTRUCTING, TaskState.ASSIGNED,
                                       TaskState.QUEUED, TaskState.RUNNING))
_PLACED = frozenset(x.value for x in (TaskState.ASSIGNED, TaskState.QUEUED, TaskState.RUNNING))
#: what a kill of an actor not up yet leaves among its pending calls: "kill" (tb.kill: dead for
#: good) or "crash" (tb.kill(no_restart=False), tb.kill_actor_process: it may restart)
_KILLS = ("kill", "crash")


class Client:
    __slots__ = ("ch", "kind", "id", "pid", "task", "blocked", "awaiting", "held", "fns", "actor", "idle_since",
                 "retiring", "gpu_ids")

    def __init__(self, ch, kind: str, cid: str, pid: int):
        self.ch = ch
        #: "worker" or "driver"
        self.kind = kind
        self.id = cid
        self.pid = pid
        #: the task a worker runs (its record), or None when idle
        self.task: "Task | None" = None
        #: a worker blocked in get/wait has given its CPU back; the ids of the tasks whose
        #: results it waits for (NodeManager.awaited counts them)
        self.blocked = False
        self.awaiting: tuple[bytes, ...] = ()
        #: resources it holds now
        self.held: dict[str, float] = {}
        #: functions this worker has been sent
        self.fns: set[str] = set()
        #: the actor this worker is dedicated to (None: a pooled task worker)
        self.actor: bytes | None = None
        #: when it last became idle (monotonic seconds)
        self.idle_since = time.monotonic()
        #: told to exit because the pool is larger than the node needs (not replaced)
        self.retiring = False
        #: the GPU ids it holds with ``held`` (see gpus.GpuPool)
        self.gpu_ids: list[int] = []


class Actor:
    __slots__ = ("id", "name", "worker", "queue", "busy", "killed", "spec", "restarts", "log", "ckpt",
                 "calls_done", "restarting", "executed", "crashing")

    def __init__(self, actor_id: bytes, name: str, worker: Client, spec: dict | None = None):
        self.id = actor_id
        self.name = name
        #: the creation spec (to rebuild it), restarts so far, the latest checkpoint (pickled
        #: instance) and the calls completed since it, in order; calls completed in all
        self.spec = spec or {}
        self.restarts = 0
        self.log: list[dict] = []
        self.ckpt: bytes | None = None
        self.calls_done = 0
        self.restarting = False
        #: caller -> the highest of its call numbers this actor has run (a call sent again
        #: after a node died is dropped if it ran already: no result is given twice)
        self.executed: dict[str, int] = {}
        #: the dedicated worker holding the instance (and the actor's resources)
        self.worker = worker
        #: calls in arrival order; the next to run is the first whose inputs are here and
        #: whose caller has no earlier call waiting (next_call: Ray's per-caller order)
        self.queue: deque[Task] = deque()
        self.busy = False
        self.killed = False
        #: its process was sent SIGKILL (kill_actor_process) and has not been seen to die yet:
        #: no call is sent to it meanwhile
        self.crashing = False

    def next_call(self) -> "Task | None":
        """Take the call to run next: each caller's calls run in its submission order, and a
        caller whose next call waits for an input does not hold up the others (as in Ray).
        Replays are first in the queue and ready, so they run first, in log order."""
        waiting: set = set()
        for i, t in enumerate(self.queue):
            caller = caller_of(t.spec)
            if caller in waiting:
                continue
            if not t.missing:
                del self.queue[i]
                return t
            waiting.add(caller)
        return None

    def ran(self, spec: dict) -> None:
        """A call ran (or its replay was queued): a repeat of it is dropped from now on."""
        c = spec.get("cseq")
        if c is not None:
            self.executed[c[0]] = max(c[1], self.executed.get(c[0], 0))

    def queue_replays(self, store: bool) -> None:
        """Put the calls since the checkpoint first in the queue, to run again (``store``:
        keeping their results, which were lost with the actor's node)."""
        replays = []
        for spec in self.log:
            r = Task(dict(spec, replay=True, store=store))
            r.attempt = 2
            replays.append(r)
        self.queue.extendleft(reversed(replays))


def caller_of(spec: dict):
    """Who made an actor call (node manager route_call numbers each caller's calls)."""
    c = spec.get("cseq")
    return c[0] if c is not None else None


class Task:
    __slots__ = ("spec", "missing", "attempt", "placed_at", "bytes_in")

    def __init__(self, spec: dict):
        self.spec = spec
        #: object ids (and "fn:<id>") still missing before it can run here
        self.missing: set = set()
        self.attempt = 1
        #: when a scheduler decided the task runs here (wall clock)
        self.placed_at = time.time()
        #: input bytes pulled from other nodes for it
        self.bytes_in = 0


class NodeManager:
    def __init__(self, ctx: Context, index: int, request_fd: int | None):
        self.ctx = ctx
        self.index = index
        self.node_id = ctx.node_id(index)
        self.total = dict(ctx.config["nodes"][index])
        self.avail = dict(self.total)
        #: which GPU ids the running tasks and actors hold (tb.get_gpu_ids)
        self.gpus = GpuPool(self.total.get("GPU", 0.0))
        self.request_fd = request_fd
        #: this node's emulated link bandwidth, bytes/s, once a run changed it
        #: (cluster.bandwidth_changes); None = the config's
        self.link_bw: float | None = None
        self.loop = Loop(f"node-{index}")
        self.loop.listen(ctx.node(index), ctx.secret)
        self.gcs = GcsClient(ctx, self.loop)
        cfg = ctx.config
        spill = ctx.spill_dir(index)
        os.makedirs(spill, exist_ok=True)
        self.store = objstore.StoreServer(ctx.store_prefix(index), int(cfg["object_store_bytes"]), spill)
        #: oid -> bytes for small objects; shared-memory ones live in self.store
        self.inline: dict[bytes, bytes] = {}
        self.sizes: dict[bytes, int] = {}
        self.clients: dict[Any, Client] = {}
        self.idle: deque[Client] = deque()
        self.ready: deque[Task] = deque()
        #: queued tasks a blocked task here waits for, dispatched before self.ready (the CPU a
        #: blocked task gave back goes to the work it waits for, not to new work that would
        #: block too and grow the pool; see enqueue); task id -> how many blocked gets/waits of
        #: this node's workers wait for its results
        self.urgent: deque[Task] = deque()
        self.awaited: dict[bytes, int] = {}
        self.starting = 0
        #: oid -> callbacks to run once the object is on this node
        self.local_waiters: dict[bytes, list] = {}
        #: oid -> callbacks to run once the object exists anywhere
        self.exists_waiters: dict[bytes, list] = {}
        self.watching: set[bytes] = set()
        self.known: dict[bytes, dict] = {}           # oid -> latest object-table entry seen
        #: object id -> the node it is being pulled from
        self.pulling: dict[bytes, int] = {}
        self.peers: dict[int, Any] = {}
        self.gs = None
        self.fns: dict[str, bytes] = {}
        self.fn_fetching: set[str] = set()
        self.durations: list[tuple[str, float]] = []
        self.transfers: list[tuple[int, int, int, float]] = []
        #: one Trace row per task attempt that ended here; the first records_pushed are in the GCS
        self.records: list[tuple] = []
        self.records_pushed = 0
        #: objects that came from other nodes (their bytes count as transferred)
        self.pulled: set[bytes] = set()
        #: objects freed by their owner before they were made here
        self.freed_early: set[bytes] = set()
        #: the cluster as the node table says (index -> latest heartbeat); nodes declared dead
        self.node_info: dict[int, dict] = {}
        #: node_info as a ClusterView for the spillover policy (None: rebuild at next use)
        self._cluster_view = None
        self.dead_nodes: set[int] = set()
        #: demand (as items) -> whether some live node can hold it
        self._feasible: dict[tuple, bool] = {}
        #: task ids whose task-table entry this node is reading to decide on a rebuild
        self.looking: set[bytes] = set()
        self.spec_waits: dict[bytes, int] = {}
        #: actor calls sent on to another node and not answered yet: task id -> (node, spec)
        self.calls_out: dict[bytes, tuple[int, dict]] = {}
        self._gathers: dict[int, dict] = {}
        self.t0 = time.time()
        #: actors living here; where others live (node index); why dead ones died; calls
        #: waiting to learn where their actor lives (kept in order)
        self.actors: dict[bytes, Actor] = {}
        self.actor_loc: dict[bytes, int] = {}
        self.actor_dead: dict[bytes, str] = {}
        self.actor_infeasible: set[bytes] = set()
        self.actor_pending: dict[bytes, list] = {}
        #: actors whose actor-table entry we follow; per (caller here, actor), its last call number
        self.actor_watch: set[bytes] = set()
        self.call_seq: dict[tuple[str, bytes], int] = {}
        #: actors being rebuilt here after their node died: id -> (checkpoint entry, call log)
        self.rebuilds: dict[bytes, dict] = {}
        from ..policy.build import build_policies
        _, self.spillover = build_policies(cfg["scheduler"])
        #: scheduler.decide_at: place a task with inputs at submission, or once they exist
        self.decide_at = cfg["scheduler"].get("decide_at", "submit")
        self.rng = policy_rng(cfg["seed"], "spillover", index)
        for kind in ("hello_worker", "hello_driver", "submit", "assign", "infeasible", "done", "get", "wait",
                     "create", "seal", "put_inline", "unpin", "pull", "object", "nodes", "records",
                     "records_part", "records_reply",
                     "actor_call", "kill_actor", "free", "free_copy", "store_stats", "kill_worker",
                     "link_bandwidth"):
            self.loop.on(kind, getattr(self, "on_" + kind))
        self.loop.on_close = self.on_close
        self.loop.every(cfg["heartbeat_interval_s"], self.heartbeat)
        self.heartbeat()
        self.gcs.subscribe("node", None, self.on_node_entry)
        self.loop.every(max(params.of(ctx, "lost_recheck_min_s"),
                            cfg["heartbeat_interval_s"] * params.of(ctx, "lost_recheck_heartbeats")), self.recheck_lost)
        #: pooled task workers kept however long they idle: one per CPU (min 1), as started
        self.pool_size = max(1, int(self.total.get("CPU", 1)))
        self.idle_timeout_s = params.of(ctx, "idle_worker_timeout_s")
        #: calls an actor restart may replay before it warns (once per actor, naming checkpoint_interval)
        self.replay_warn_calls = params.of(ctx, "replay_warn_calls")
        self.replay_warned: set[bytes] = set()
        self.loop.every(max(self.idle_timeout_s / 2, 0.05), self.trim_idle)

    # --- clients ----------------------------------------------------------------------
    def on_hello_worker(self, ch, wid, pid) -> None:
        c = self.clients[ch] = Client(ch, "worker", f"w{wid}", pid)
        self.starting = max(0, self.starting - 1)
        self.idle.append(c)
        self.dispatch()

    def on_hello_driver(self, ch, req, pid) -> None:
        self.clients[ch] = Client(ch, "driver", f"d{pid}", pid)
        self.loop.send(ch, ("reply", req, self.node_id))

    def on_close(self, ch) -> None:
        for k, pch in list(self.peers.items()):
            if pch is ch:              # a peer's node manager went away: it crashed (or was killed)
                self.peers.pop(k, None)
                self.node_died(k)
                return
        c = self.clients.pop(ch, None)
        if c is None:
            return
        self.store.release_client(c.id)
        self._forget_awaiting(c)
        if c in self.idle:
            self.idle.remove(c)
        if c.retiring:                 # it exited as told (trim_idle): not replaced
            return
        if c.kind == "worker" and c.actor is not None and c.actor in self.actors:
            a = self.actors[c.actor]
            if a.worker is c and not a.killed and may_run_again(a.restarts, a.spec.get("max_restarts", 0)):
                self.restart_actor(a)
            elif a.worker is c:
                self.actor_died(a)
            return
        if c.kind == "worker":
            self._give_back(c)
            if c.task is not None and c.task.spec.get("kind") == "actor_create":
                t, c.task = c.task, None
                self.mark_actor_dead(t.spec["actor_id"], f"actor {t.spec['class_name']} died while being created")
                self.fail(t.spec, WorkerCrashedError(f"the worker creating {t.spec['class_name']} died"))
            elif c.task is not None:                     # it died mid-task
                t, c.task = c.task, None
                if may_run_again(t.attempt - 1, t.spec.get("max_retries", 0)):
                    t.attempt += 1
                    self.ready.appendleft(t)
                else:
                    self.fail(t.spec, WorkerCrashedError(
                        f"the worker running {t.spec['name']} (pid {c.pid}) died"
                        + (f" after {t.attempt} attempts" if t.attempt > 1 else "")))
            self.spawn_worker()
            self.dispatch()

    def trim_idle(self) -> None:
        """Idle pooled workers beyond the node's pool size exit once idle for
        idle_worker_timeout_s, the longest idle first (the pool grows past its size when
        tasks block in get; this shrinks it back)."""
        pooled = sum(1 for c in self.clients.values() if c.kind == "worker" and c.actor is None
                     and not c.retiring)
        now = time.monotonic()
        while pooled > self.pool_size and self.idle and now - self.idle[0].idle_since >= self.idle_timeout_s:
            w = self.idle.popleft()
            w.retiring = True
            pooled -= 1
            self.loop.send(w.ch, ("exit",))

    def spawn_worker(self) -> None:
        if self.request_fd is None:
            return
        self.starting += 1
        try:
            os.write(self.request_fd, b"spawn_worker\n")
        except OSError:
            self.starting -= 1

    # --- submission and placement ------------------------------------------------------
    def on_submit(self, ch, spec) -> None:
        kind = spec.get("kind")
        lineage = self.ctx.config["lineage"]
        fid = spec["fn_id"]
        if spec.get("fn") is not None and fid not in self.fns:
            self.fns[fid] = spec["fn"]
            self.gcs.put("fn", fid, spec["fn"])
        spec["fn"] = None
        spec.setdefault("origin", self.index)
        if lineage or kind != "actor_call":
            # a rebuild (reconstruct: attempt > 1) stays "reconstructing" until it is placed
            state = TaskState.RECONSTRUCTING if spec.get("attempt", 1) > 1 else TaskState.SUBMITTED
            entry = {"name": spec["name"], "origin": spec["origin"], "node": self.index, "state": state.value,
                     "attempt": spec.get("attempt", 1)}
            if lineage and kind != "actor_create":
                entry["spec"] = spec      # the lineage: enough to run the task again (an actor
                #                           call's: to know a lost result is an actor's)
            # written at once, not batched: the lineage must be in the GCS before the task can
            # run (and its node die) elsewhere
            self.gcs.task_update(spec["task_id"], entry)
        if kind == "actor_call":
            if "caller" not in spec:      # the process that made the call: its calls keep their order
                c = self.clients.get(ch)
                spec["caller"] = f"{self.index}/{c.id if c is not None else '?'}"
            self.route_call(spec)
            return
        demand = placement_demand(spec)
        if not self.feasible(demand):
            have = ", ".join(f"node {i}: {n}" for i, n in self.live_nodes().items())
            what = f"actor {spec['class_name']}" if kind == "actor_create" else f"task {spec['name']}"
            msg = f"{what} asks for {demand}, which no node has ({have})"
            if "placement_resources" in spec:
                msg += "; an actor that asks for no resources needs 1 CPU to be placed (as in Ray)"
            if kind == "actor_create":
                self.mark_actor_dead(spec["actor_id"], msg, infeasible=True)
            self.fail(spec, InfeasibleError(msg))
            return
        # decided now unless the rule waits for inputs and one does not exist yet (only then are
        # the task's refs looked at: submission is the hot path)
        pending = () if decides_now(self.decide_at, False) else [
            a[1] for a in list(spec["args"]) + list(spec["kwargs"].values())
            if a[0] == "r" and not self.exists(a[1])]
        if pending:
            # decided once every input exists (policy.base.decides_now)
            left = set(pending)

            def exists(o):
                left.discard(o)
                if not left:
                    self.decide(spec)
            for o in pending:
                self.when_exists(o, lambda o=o: exists(o))
            return
        self.decide(spec)

    def exists(self, oid: bytes) -> bool:
        """Does ``oid`` exist somewhere (here, or a location in the object table)?"""
        return self.is_local(oid) or bool((self.known.get(oid) or {}).get("locations"))

    def decide(self, spec) -> None:
        """The local scheduler decides where the task runs (policy.base.decides_now: at
        submission, or once its inputs exist), pinned tasks aside."""
        kind = spec.get("kind")
        pin = spec.get("pin_node")
        if pin is not None and pin in self.dead_nodes:
            pin = spec["pin_node"] = None         # a rebuild of work pinned to a node that died
        if pin is None:                           # pinned: the runner's drivers run on that node
            tv = self.task_view(spec)
            if self.spillover.forwards(tv, self.local_view(), time.time() - self.t0, self.rng):
                self.forward(spec, tv)            # the global scheduler says where (and records it)
                return
        target = self.index if pin is None else int(pin)
        if kind == "actor_create":                # where it goes, before it goes (see rebuild_actors)
            self.gcs.put("actor", spec["actor_id"], actor_entry(spec, target))
        if target == self.index:
            self.accept(spec)
        else:
            self.loop.send(self.peer(target), ("assign", spec))

    def local_view(self) -> LocalView:
        """This node as its local scheduler sees it, and (for a spillover policy that reads it)
        the rest of the cluster as of the heartbeats heard last (ClusterView.elsewhere)."""
        if not self.spillover.uses_cluster:
            return LocalView(self.index, self.total, self.avail, self.queued(), self.running(), len(self.idle))
        free, slots = self.cluster_view().elsewhere(self.index)
        return LocalView(self.index, self.total, self.avail, self.queued(), self.running(), len(self.idle),
                         free, slots)

    def cluster_view(self):
        """The other nodes' last heartbeats (the node table this node hears), as a ClusterView
        (cached until the next entry arrives)."""
        if self._cluster_view is None:
            from ..core.views import make_cluster_view
            n = max([self.index, *self.node_info]) + 1
            nodes = []
            for i in range(n):
                info = self.node_info.get(i)
                alive = info is not None and i not in self.dead_nodes and i != self.index
                res = info["Resources"] if info else {}
                nodes.append({"total": res, "available": info["Available"] if info else {},
                              "queue_length": info["queue_length"] if info else 0,
                              "running": info["running"] if info else 0, "alive": alive})
            self._cluster_view = make_cluster_view(nodes)
        return self._cluster_view

    def spill_back(self) -> None:
        """At each heartbeat: send back to the global scheduler as many queued tasks (newest
        first) as the spillover policy says (SpilloverPolicy.spillback: while other nodes have
        room, work does not wait here); the urgent queue's too, after the others (a task a
        blocked one waits for runs as well elsewhere: the urgent queue orders, it does not pin)."""
        if not self.queued():
            return
        k = self.spillover.spillback(self.local_view(), time.time() - self.t0)
        for q in (self.ready, self.urgent):
            keep = deque()
            while q and k > 0:
                t = q.pop()
                if t.spec.get("pin_node") is not None:     # pinned here (a runner's driver): stays
                    keep.appendleft(t)
                    continue
                k -= 1
                # a new placement of the same attempt: the task table takes the global
                # scheduler's "assigned" over this node's "queued" (gcs.Shard.task_update)
                t.spec["hop"] = t.spec.get("hop", 0) + 1
                self.forward(t.spec, self.task_view(t.spec))
            q.extend(keep)

    def task_view(self, spec) -> TaskView:
        from ..core.views import InputView
        inputs = []
        for a in list(spec["args"]) + list(spec["kwargs"].values()):
            if a[0] == "r":
                entry = self.known.get(a[1])
                size = self.sizes.get(a[1], entry["size"] if entry else 0)
                locs = tuple(entry["locations"]) if entry else ((self.index,) if a[1] in self.sizes else ())
                inputs.append(InputView(size, locs))
        return TaskView(int.from_bytes(spec["task_id"][:8], "little"), spec["name"], placement_demand(spec),
                        tuple(inputs), self.index)

    def forward(self, spec, tv) -> None:
        spec["spilled"] = True
        if self.gs is None:
            self.gs = self.loop.add(connect_retry(self.ctx.global_scheduler(), self.ctx.secret))
        self.loop.send(self.gs, ("forward", spec, tv))

    def on_assign(self, ch, spec) -> None:
        self.accept(spec)

    def on_infeasible(self, ch, spec, message) -> None:
        self.fail(spec, InfeasibleError(message))

    def accept(self, spec) -> None:
        """The task runs here: wait for its inputs (and its function), then queue it."""
        t = Task(spec)
        t.attempt = spec.get("attempt", 1)
        if spec.get("kind") != "actor_call":
            self.gcs.task_update(spec["task_id"], {"node": self.index, "state": TaskState.QUEUED.value, "attempt": t.attempt,
                                                   "hop": spec.get("hop", 0)})
        for a in list(spec["args"]) + list(spec["kwargs"].values()):
            if a[0] == "r" and not self.is_local(a[1]):
                t.missing.add(a[1])
        fid = spec["fn_id"]
        if fid not in self.fns:
            t.missing.add("fn:" + fid)
            self.fetch_fn(fid)
        if spec.get("rebuild"):
            t.missing.add("rebuild")
            self.fetch_actor_state(t)
        if not t.missing:
            self.enqueue(t)
            return
        for m in list(t.missing):
            if isinstance(m, bytes):
                self.when_local(m, lambda m=m, t=t: self._arrived(t, m))
            else:
                self.local_waiters.setdefault(m, []).append(lambda m=m, t=t: self._arrived(t, m))

    def fetch_actor_state(self, t: Task) -> None:
        """An actor rebuilt here after its node died: its latest checkpoint and the calls it
        completed since (both in the GCS), before its constructor (or restore) runs."""
        aid = t.spec["actor_id"]
        got: dict = {}

        def one(name, value):
            got[name] = value
            if len(got) == 2:
                ck = got["ckpt"] or {}
                t.spec["restore"] = ck.get("ckpt")
                t.spec["calls_done"] = ck.get("calls_done", 0)
                self.rebuilds[aid] = {"ckpt": ck, "log": list(got["log"] or [])}
                self._arrived(t, "rebuild")
        self.gcs.get("actor_ckpt", aid, lambda v: one("ckpt", v))
        self.gcs.get("actor_log", aid, lambda v: one("log", v))

    def _arrived(self, t: Task, what) -> None:
        t.missing.discard(what)
        if not t.missing:
            self.enqueue(t)

    def enqueue(self, t: Task) -> None:
        """A task whose inputs are here waits for resources and a worker: at the back of the
        queue, or of the urgent queue if a blocked task here waits for it (nested tasks run depth
        first, so a deep or wide nest on few CPUs finishes instead of starting every queued
        task on a worker of its own, each blocking in turn)."""
        (self.urgent if t.spec["task_id"] in self.awaited else self.ready).append(t)
        self.dispatch()

    def fetch_fn(self, fid: str) -> None:
        if fid in self.fn_fetching:
            return
        self.fn_fetching.add(fid)

        def got(data):
            self.fn_fetching.discard(fid)
            self.fns[fid] = data
            for cb in self.local_waiters.pop("fn:" + fid, ()):
                cb()
        self.gcs.get("fn", fid, got, wait=True)

    def running(self) -> int:
        return sum(1 for c in self.clients.values() if c.kind == "worker" and c.task is not None)

    def queued(self) -> int:
        return len(self.ready) + len(self.urgent)

    def dispatch(self) -> None:
        while self.ready or self.urgent:
            q = self.urgent or self.ready
            t = q[0]
            demand = t.spec["resources"]
            if not fits(placement_demand(t.spec), self.avail):
                return
            if not self.idle:
                if self.starting == 0:
                    self.spawn_worker()
                return
            gpu_ids = self.gpus.take(demand.get("GPU", 0.0))
            if gpu_ids is None:              # enough GPU by count, but spread over the ids: wait
                return
            q.popleft()
            w = self.idle.popleft()
            for k, v in demand.items():
                self.avail[k] = self.avail.get(k, 0.0) - v
            w.held = dict(demand)
            w.gpu_ids = gpu_ids
            w.task = t
            if t.spec.get("kind") == "actor_create":
                w.actor = t.spec["actor_id"]
                self.run_on(w, t, "actor_init")
                self.spawn_worker()          # the pool keeps its size: this one is the actor's now
            else:
                self.run_on(w, t)

    def run_on(self, w: Client, t: Task, kind: str = "run") -> None:
        spec = t.spec
        task = dict(spec)
        fid = spec["fn_id"]
        if fid is not None:
            task["fn"] = None if fid in w.fns else self.fns[fid]
            w.fns.add(fid)
        task["gpu_ids"] = w.gpu_ids               # a task's, or its actor's for the actor's life
        task["args"] = [self.resolve(a, w) for a in spec["args"]]
        task["kwargs"] = {k: self.resolve(a, w) for k, a in spec["kwargs"].items()}
        t.bytes_in = sum(self.sizes.get(a[1], 0) for a in list(spec["args"]) + list(spec["kwargs"].values())
                         if a[0] == "r" and a[1] in self.pulled)
        self.loop.send(w.ch, (kind, task))

    def resolve(self, a, client: Client):
        if a[0] == "v":
            return a
        return ("o", a[1], self.descriptor(a[1], client))

    # --- objects ------------------------------------------------------------------------
    def is_local(self, oid: bytes) -> bool:
        return oid in self.inline or self.store.contains(oid)

    def descriptor(self, oid: bytes, client: Client):
        data = self.inline.get(oid)
        if data is not None:
            return ("inline", data)
        seg, off, size = self.store.get(oid, pin_for=client.id)
        return ("shm", seg, off, size)

    def descriptors(self, oids: list[bytes], client: Client) -> list:
        """Every object's descriptor, each pinned for ``client``; if they cannot all be in
        memory at once (StoreFull while restoring a spilled one), none stays pinned."""
        out = []
        try:
            for o in oids:
                out.append(self.descriptor(o, client))
        except objstore.StoreFull:
            for o, d in zip(oids, out):
                if d[0] == "shm":
                    self.store.unpin(o, client.id)
            raise
        return out

    def store_full_text(self, oids: list[bytes], exc: Exception) -> str:
        need = sum(self.sizes.get(o, 0) for o in dict.fromkeys(oids))
        return (f"get of {len(oids)} objects ({need / 2**20:.1f} MiB) cannot be met: they do not fit in node "
                f"{self.index}'s object store together (object_store_bytes={self.store.capacity_bytes}; a get "
                f"keeps every object it returns in memory): {exc}. Get fewer objects at a time, or start the "
                f"cluster with a larger object_store_bytes")

    def add_object(self, oid: bytes, size: int) -> None:
        if oid in self.freed_early:            # nobody can ask for it any more
            self.freed_early.discard(oid)
            self.inline.pop(oid, None)
            if self.store.contains(oid):
                self.store.delete(oid)
            self.exists_waiters.pop(oid, None)   # free_when_made's: it was made here
            self.unwatch(oid)
            self.known.pop(oid, None)
            return
        first = oid not in self.sizes
        self.sizes[oid] = size
        self.calls_out.pop(oid[:16], None)
        if oid in self.watching:           # it is here now: its table entry need not follow us
            self.watching.discard(oid)
            self.gcs.unsubscribe("obj", oid)
        if first:
            self.gcs.obj_add(oid, self.index, size, later=True)
        for cb in self.local_waiters.pop(oid, ()):
            cb()
        for cb in self.exists_waiters.pop(oid, ()):
            cb()

    def when_local(self, oid: bytes, cb) -> None:
        if self.is_local(oid):
            cb()
            return
        self.local_waiters.setdefault(oid, []).append(cb)
        self.watch(oid)
        entry = self.known.get(oid)
        if entry is not None:
            self.maybe_pull(oid, entry)
        elif self.dead_nodes:           # its producer may have died before we started waiting
            self.reconstruct(oid)

    def when_exists(self, oid: bytes, cb) -> None:
        if self.exists(oid):
            cb()
            return
        self.exists_waiters.setdefault(oid, []).append(cb)
        self.watch(oid)
        if self.dead_nodes and oid not in self.known:
            self.reconstruct(oid)

    def watch(self, oid: bytes) -> None:
        if oid not in self.watching:
            self.watching.add(oid)
            self.gcs.subscribe("obj", oid, self.on_obj_entry)

    def on_obj_entry(self, table, oid, entry) -> None:
        if entry is None:
            return
        self.known[oid] = entry
        if entry["locations"]:
            for cb in self.exists_waiters.pop(oid, ()):
                cb()
        if oid in self.local_waiters:
            self.maybe_pull(oid, entry)

    def maybe_pull(self, oid: bytes, entry: dict) -> None:
        """Fetch ``oid`` from a live node holding it; if it existed but every copy died with
        its node, rebuild it."""
        if oid in self.pulling or self.is_local(oid):
            return
        src = next((n for n in entry["locations"] if n != self.index and n not in self.dead_nodes), None)
        if src is None:
            if entry.get("size") is not None:      # it was made, and every copy is gone
                self.reconstruct(oid)
            return
        try:
            ch = self.peer(src)
        except OSError:
            self.node_died(src)
            return
        self.pulling[oid] = src
        self.loop.send(ch, ("pull", oid, self.index, time.time()))

    def peer(self, index: int):
        if index in self.dead_nodes:
            raise ConnectionError(f"node {index} is dead")
        ch = self.peers.get(index)
        if ch is None or ch.closed:
            # peers have reported (heartbeats) before anyone sends them work: their sockets
            # exist, so a missing one means a dead node — no retrying
            ch = self.peers[index] = self.loop.add(transport.connect(self.ctx.node(index), self.ctx.secret,
                                                                     timeout=params.of(self.ctx, "peer_connect_timeout_s")))
        return ch

    def on_pull(self, ch, oid, requester, asked_at) -> None:
        data = self.inline.get(oid)
        if data is not None:
            self.loop.send(ch, ("object", oid, "inline", data, asked_at, self.index))
        elif self.store.contains(oid):
            self.loop.send(ch, ("object", oid, "shm", bytes(self.store.view(oid)), asked_at, self.index))
        else:
            self.loop.send(ch, ("object", oid, "missing", b"", asked_at, self.index))

    def on_object(self, ch, oid, kind, data, asked_at, src) -> None:
        cfg = self.ctx.config
        bw = cfg["link_bandwidth_bytes_per_s"]
        own = cfg.get("link_bandwidth_per_node")
        if self.link_bw is not None:
            bw = self.link_bw                   # changed during the run (cluster.bandwidth_changes)
        elif own is not None and self.index < len(own):
            bw = own[self.index]                # this node's own link (cluster.link_bandwidth)
        delay = cfg["link_latency_s"] + (len(data) / bw if bw else 0.0)

        def land():
            self.pulling.pop(oid, None)
            if kind == "missing":
                entry = self.known.get(oid)
                if entry is not None and oid in self.local_waiters:
                    entry = dict(entry, locations=[n for n in entry["locations"] if n != src])
                    self.known[oid] = entry
                    self.maybe_pull(oid, entry) if entry["locations"] else self.reconstruct(oid)
                return
            if kind == "inline":
                self.inline[oid] = data
            else:
                self.store.create(oid, len(data))
                self.store.view(oid)[:] = data
                self.store.seal(oid)
            self.transfers.append((src, self.index, len(data), time.time() - asked_at))
            self.pulled.add(oid)
            self.add_object(oid, len(data))
        if delay > 0:
            self.loop.later(delay, land)
        else:
            land()

    def on_put_inline(self, ch, oid, data) -> None:
        self.inline[oid] = data
        self.add_object(oid, len(data))

    def on_create(self, ch, req, oid, size) -> None:
        try:
            c = self.clients.get(ch)
            seg, off = self.store.create(oid, size, client_id=c.id if c else None)
        except objstore.StoreFull as exc:
            self.loop.send(ch, ("reply", req, (None, str(exc))))
            return
        self.loop.send(ch, ("reply", req, (seg, off)))

    def on_seal(self, ch, oid, size) -> None:
        self.store.seal(oid)
        self.add_object(oid, size)

    def on_free(self, ch, oids) -> None:
        """The owner dropped its last ref: the object's memory can be reused (once readers
        that still view it have unpinned it)."""
        for oid in oids:
            elsewhere = [n for n in self.live_copies(oid) if n != self.index]
            if oid in self.inline:
                del self.inline[oid]
            elif self.store.contains(oid):
                self.store.delete(oid)
            else:
                self.freed_early.add(oid)      # its task has not finished yet (here or elsewhere)
                self.free_when_made(oid)
                continue
            self.sizes.pop(oid, None)
            self.pulled.discard(oid)
            self.known.pop(oid, None)
            self.gcs.obj_remove(oid, self.index)
            # a copy this node fetched: the node that made it frees the original. The owner's
            # last ref is gone and the id never left its process (core.escape), so no other
            # process can ask for any copy of it
            self.free_copies(oid, elsewhere)

    def free_copies(self, oid: bytes, nodes) -> None:
        for n in nodes:
            try:
                self.loop.send(self.peer(n), ("free_copy", [oid]))
            except OSError:
                pass                           # a dead node's copies are gone anyway

    def free_when_made(self, oid: bytes) -> None:
        """An object freed before it exists: if it is made on another node, free it there
        once the object table shows it (made here, add_object drops it)."""
        def made():
            self.freed_early.discard(oid)
            self.unwatch(oid)
            self.free_copies(oid, [n for n in self.live_copies(oid) if n != self.index])
            self.known.pop(oid, None)
        self.exists_waiters.setdefault(oid, []).append(made)
        self.watch(oid)

    def unwatch(self, oid: bytes) -> None:
        if oid in self.watching:
            self.watching.discard(oid)
            self.gcs.unsubscribe("obj", oid)

    def on_free_copy(self, ch, oids) -> None:
        """Another node's owner freed these objects and this node holds a copy (it made them,
        or fetched them): delete it. An object not here is not remembered (unlike on_free)."""
        for oid in oids:
            if oid in self.inline:
                del self.inline[oid]
            elif self.store.contains(oid):
                self.store.delete(oid)
            else:
                continue
            self.sizes.pop(oid, None)
            self.pulled.discard(oid)
            self.known.pop(oid, None)
            self.gcs.obj_remove(oid, self.index)

    def on_store_stats(self, ch, req) -> None:
        st = self.store.stats
        self.loop.send(ch, ("reply", req, {"used_bytes": self.store.used_bytes, "spilled": st.spilled,
                                           "inline_objects": len(self.inline), "objects": len(self.sizes),
                                           "known": len(self.known), "freed_early": len(self.freed_early)}))

    def on_unpin(self, ch, oids) -> None:
        c = self.clients.get(ch)
        if c is None:
            return
        for oid in oids:
            self.store.unpin(oid, c.id)

    # --- tasks ending -------------------------------------------------------------------
    def _give_back(self, w: Client) -> None:
        self.gpus.give(w.gpu_ids, w.held.get("GPU", 0.0))
        w.gpu_ids = []
        for k, v in w.held.items():
            self.avail[k] = self.avail.get(k, 0.0) + v
        w.held = {}

    def record(self, t: "Task", node: int, start: float, end: float, state: str, pid: int = 0) -> None:
        """One Trace row (see testbed.core.trace), times as wall-clock seconds."""
        sp = t.spec
        if len(self.records) == self.records_pushed:     # the rows of one loop pass, in one write
            self.loop.later(0.0, self.push_records)
        row = TraceRow(task_id=sp["task_id"], job_id=sp.get("job_id", -1), function=sp["name"],
                       submitter=sp.get("origin", self.index), node=node,
                       submitted_s=sp.get("submitted_at", t.placed_at), placed_s=t.placed_at, started_s=start,
                       finished_s=end, spilled=bool(sp.get("spilled")), predicted_wait_s=sp.get("pred"),
                       bytes_transferred=t.bytes_in, attempt=t.attempt, state=state)
        self.records.append((*row, pid))             # a plain tuple on the wire: RECORD_COLUMNS

    def on_done(self, ch, task_id, results, failed, start, end, ckpt=None) -> None:
        w = self.clients.get(ch)
        if w is None:
            return
        t = w.task
        if t is not None and t.spec.get("replay") and not t.spec.get("store"):
            results = []          # a restart here re-running a call whose result is here already
        for i, r in enumerate(results):
            oid = object_id(task_id, i)
            if r[0] == "inline":
                self.inline[oid] = r[1]
                self.add_object(oid, len(r[1]))
            else:
                self.add_object(oid, r[1])
        if t is not None:
            self.record(t, self.index, start, end, TaskState.FAILED.value if failed else TaskState.FINISHED.value, w.pid)
        if t is not None and w.actor is not None:
            w.task = None
            if t.spec.get("kind") == "actor_create":
                old = self.actors.get(w.actor)
                if failed:
                    why = self._error_text(object_id(task_id, 0))
                    self._give_back(w)
                    self.actors.pop(w.actor, None)
                    self.mark_actor_dead(w.actor, f"actor {t.spec['class_name']} failed in its constructor: {why}")
                    self.loop.send(w.ch, ("exit",))
                    return
                if old is not None and old.restarting:      # a restart here: replay, then carry on
                    old.worker, old.restarting, old.busy = w, False, False
                    if old.killed:                 # tb.kill came while it restarted: it dies now
                        self.kill_process(w)
                        return
                    self.gcs.put("actor", old.id, actor_entry(old.spec, self.index, "alive", old.restarts))
                    old.queue_replays(store=False)
                    self.dispatch_actor(old)
                    return
                a = self.actors[w.actor] = Actor(w.actor, t.spec["class_name"], w,
                                                 {k: v for k, v in t.spec.items() if k not in ONE_CREATION})
                self.actor_loc[a.id] = self.index
                rb = self.rebuilds.pop(a.id, None) if t.spec.get("rebuild") else None
                if rb is not None:
                    self.resume_rebuilt(a, t, rb)
                self.gcs.put("actor", a.id, actor_entry(a.spec, self.index, "alive", a.restarts))
                if rb is not None:
                    self.dispatch_actor(a)
                for spec in self.actor_pending.pop(a.id, ()):
                    if spec in _KILLS:             # tb.kill came while it was being created
                        self.on_kill_actor(None, a.id, spec == "crash")
                    else:
                        self.route_call(spec)      # after a kill: they fail when it has died
            else:
                a = self.actors.get(w.actor)
                if a is not None:
                    a.busy = False
                    if not t.spec.get("replay"):
                        a.calls_done += 1
                        a.log.append(t.spec)
                        a.ran(t.spec)
                        # the call log outlives this node: a rebuild elsewhere replays it
                        self.gcs.extend("actor_log", a.id, [t.spec], later=True)
                        self.gcs.task_update(task_id, {"state": TaskState.FINISHED.value, "node": self.index, "seq": a.calls_done,
                                                       "attempt": t.attempt}, later=True)
                        if ckpt is not None:
                            a.ckpt, a.log = ckpt, []
                            self.gcs.put("actor_ckpt", a.id, {"ckpt": ckpt, "calls_done": a.calls_done,
                                                              "executed": dict(a.executed)})
                            self.gcs.put("actor_log", a.id, [])
                            ck = Task(dict(t.spec, name=f"{a.name}.__checkpoint__", task_id=task_id[:15] + b"c"))
                            ck.attempt = 1
                            self.record(ck, self.index, end, time.time(), TaskState.FINISHED.value, w.pid)
                    self.dispatch_actor(a)
            return
        if t is not None:
            state = TaskState.FAILED.value if failed else TaskState.FINISHED.value
            if reports_run_time(state):       # a failed attempt's time is no sample (policy.base)
                self.durations.append((t.spec["name"], end - start))
            self.gcs.task_update(task_id, {"node": self.index, "state": state, "attempt": t.attempt,
                                           "hop": t.spec.get("hop", 0)}, later=True)
        w.task = None
        w.blocked = False
        self._forget_awaiting(w)
        self._give_back(w)
        w.idle_since = time.monotonic()
        self.idle.append(w)
        self.dispatch()

    def fail(self, spec, error: BaseException) -> None:
        """Every return of the task becomes ``error`` (raised by get)."""
        if isinstance(error, ActorDiedError) and error.actor_id is None and spec.get("actor_id") is not None:
            error.actor_id = spec["actor_id"].hex()       # which actor died (as Ray's actor_id)
        now = time.time()
        state = TaskState.INFEASIBLE.value if isinstance(error, InfeasibleError) else TaskState.FAILED.value
        self.record(Task(spec), -1 if state == TaskState.INFEASIBLE.value else self.index, float("nan"), now, state)
        for i in range(spec["num_returns"]):
            self.store_failure(object_id(spec["task_id"], i), error)

    def store_failure(self, oid: bytes, error: BaseException) -> None:
        """``error`` in the object's place: ``get`` raises it, a task given it fails with it."""
        data = objstore.to_bytes(objstore.serialize(as_failure(error)))
        self.inline[oid] = data
        self.add_object(oid, len(data))

    # --- actors ----------------------------------------------------------------------------
    def resume_rebuilt(self, a: Actor, t: Task, rb: dict) -> None:
        """An actor whose node died now lives here, restored from its checkpoint: replay the
        calls it completed since (their results were lost with the node: keep them this
        time), then run the calls that wait for it, in order."""
        ck, log = rb["ckpt"], rb["log"]
        a.restarts = t.attempt - 1
        a.ckpt = ck.get("ckpt")
        a.executed = dict(ck.get("executed", {}))
        a.log = list(log)
        a.calls_done = ck.get("calls_done", 0) + len(log)
        for spec in log:
            a.ran(spec)
        self.warn_replay(a, len(log))
        a.queue_replays(store=True)

    def warn_replay(self, a: Actor, n: int) -> None:
        """A restart replays ``n`` calls (every call since the last checkpoint, its whole
        history without one): past replay_warn_calls, say once per actor how to bound it."""
        if n <= self.replay_warn_calls or a.id in self.replay_warned:
            return
        self.replay_warned.add(a.id)
        import sys
        every = a.spec.get("checkpoint_interval", 0)
        since = "since its last checkpoint" if every else "(its whole history: it has no checkpoint)"
        print(f"testbed warning: actor {a.name} restarted on node {self.index} and replays {n} calls {since}; "
              f"a restart replays every call since the last checkpoint, so set "
              f"@tb.remote(checkpoint_interval=K) (the actor is pickled every K calls; "
              f"__getstate__/__setstate__ choose what is kept) to bound it. Shown once per actor; "
              f"the threshold is the runtime parameter replay_warn_calls.", file=sys.stderr, flush=True)

    def route_call(self, spec) -> None:
        """Send an actor call on towards its actor, keeping each caller's order."""
        aid = spec["actor_id"]
        if "cseq" not in spec:            # numbered per caller where it was made: the actor
            caller = spec.get("caller", str(self.index))   # keeps each caller's order, drops repeats
            n = self.call_seq[caller, aid] = self.call_seq.get((caller, aid), 0) + 1
            spec["cseq"] = (caller, n)
        a = self.actors.get(aid)
        if a is not None:
            self.actor_enqueue(a, spec)
            return
        if aid in self.actor_dead:
            why = self.actor_dead[aid]
            self.fail(spec, InfeasibleError(why) if aid in self.actor_infeasible else ActorDiedError(why))
            return
        pend = self.actor_pending.get(aid)
        if pend is not None:                 # still learning where it lives: keep the order
            pend.append(spec)
            return
        loc = self.actor_loc.get(aid)
        if loc is not None and loc != self.index and loc not in self.dead_nodes:
            try:
                ch = self.peer(loc)
            except OSError:
                self.node_died(loc)
                self.route_call(spec)
                return
            self.calls_out[spec["task_id"]] = (loc, spec)
            self.loop.send(ch, ("actor_call", spec))
            return
        self.actor_loc.pop(aid, None)
        self.actor_pending[aid] = [spec]
        self.await_actor(aid)

    def await_actor(self, aid: bytes) -> None:
        """Learn where an actor lives from the actor table, waiting (by subscription) while
        it is being created or rebuilt, or its entry still names a node that died."""
        if aid not in self.actor_watch:
            self.actor_watch.add(aid)
            self.gcs.subscribe("actor", aid, self.on_actor_entry)
        self.gcs.get("actor", aid, lambda info, aid=aid: info is not None and self.on_actor_entry("actor", aid, info))

    def on_actor_entry(self, table, aid, info) -> None:
        if aid not in self.actor_pending or aid in self.actors:
            return
        if info["state"] == "dead" or (info["state"] == "alive" and info["node"] not in self.dead_nodes):
            self.actor_found(aid, info)

    def actor_found(self, aid: bytes, info: dict) -> None:
        pend = self.actor_pending.pop(aid, [])
        if info["state"] == "dead":
            self.actor_dead[aid] = info["error"]
            if info.get("infeasible"):
                self.actor_infeasible.add(aid)
        else:
            self.actor_loc[aid] = info["node"]
        for spec in pend:
            if spec in _KILLS:
                self.on_kill_actor(None, aid, spec == "crash")
            else:
                self.route_call(spec)

    def on_actor_call(self, ch, spec) -> None:
        aid = spec["actor_id"]
        if aid in self.actors or aid in self.actor_dead:
            self.route_call(spec)
        else:                                # not (or no longer) here: find it again
            self.actor_loc.pop(aid, None)
            self.route_call(spec)

    def actor_enqueue(self, a: Actor, spec) -> None:
        c = spec.get("cseq")
        if c is not None and c[1] <= a.executed.get(c[0], 0):
            return              # sent again after a node died, but it ran: replayed or lost, never twice
        t = Task(spec)
        t.attempt = spec.get("attempt", 1)
        for x in list(spec["args"]) + list(spec["kwargs"].values()):
            if x[0] == "r" and not self.is_local(x[1]):
                t.missing.add(x[1])
        a.queue.append(t)
        for m in list(t.missing):
            self.when_local(m, lambda m=m, t=t, a=a: (t.missing.discard(m), self.dispatch_actor(a)))
        self.dispatch_actor(a)

    def dispatch_actor(self, a: Actor) -> None:
        if a.busy or a.restarting or a.killed or a.crashing or not a.queue or a.id not in self.actors:
            return
        t = a.next_call()
        if t is None:
            return
        a.busy = True
        a.worker.task = t
        self.run_on(a.worker, t)

    def on_kill_actor(self, ch, aid, crash_only=False) -> None:
        a = self.actors.get(aid)
        if a is not None:
            if a.killed:
                return
            a.killed = not crash_only
            if not a.restarting:           # restarting: the new process dies once it is up
                a.crashing = True
                self.kill_process(a.worker)
            return
        if aid in self.actor_dead:
            return
        loc = self.actor_loc.get(aid)
        if loc is not None and loc != self.index:
            self.loop.send(self.peer(loc), ("kill_actor", aid, crash_only))
        elif aid in self.actor_pending:
            self.actor_pending[aid].append("crash" if crash_only else "kill")
        else:
            self.actor_pending[aid] = ["crash" if crash_only else "kill"]
            self.await_actor(aid)

    def kill_process(self, w: Client) -> None:
        """SIGKILL a worker; its connection closing (on_close) tells the rest."""
        try:
            os.kill(w.pid, 9)
        except ProcessLookupError:
            pass

    def restart_actor(self, a: Actor) -> None:
        """The actor's process died: start it again here from its last checkpoint (or its
        constructor), then replay the calls completed since; calls arriving meanwhile wait in
        its queue. The call it was running runs again only under the actor's
        ``max_task_retries`` (Ray's rule, default 0): else it fails with ActorDiedError, so a
        call that kills its actor is not re-run after every restart."""
        w = a.worker
        self._give_back(w)
        a.restarts += 1
        a.restarting = True
        a.busy = False
        a.crashing = False
        t = w.task
        if t is not None and t.spec.get("kind") == "actor_call" and not t.spec.get("replay"):
            limit = a.spec.get("max_task_retries", 0)
            if may_run_again(t.attempt - 1, limit):
                t.attempt += 1
                a.queue.appendleft(t)
            else:
                a.ran(t.spec)              # a copy sent again after a node died is dropped too
                self.fail(t.spec, ActorDiedError(
                    f"actor {a.name}'s process died while running {t.spec['name']}"
                    + (f" ({t.attempt} attempts)" if t.attempt > 1 else "")
                    + f"; the actor was restarted, the call not retried (max_task_retries={limit})"))
        a.queue = deque(t for t in a.queue if not t.spec.get("replay"))   # replays are rebuilt from the log
        w.task = None
        spec = dict(a.spec, restore=a.ckpt, calls_done=a.calls_done - len(a.log), attempt=a.restarts + 1)
        self.warn_replay(a, len(a.log))
        t = Task(spec)
        t.attempt = a.restarts + 1
        self.ready.appendleft(t)
        self.dispatch()

    def actor_died(self, a: Actor) -> None:
        self.actors.pop(a.id, None)
        self._give_back(a.worker)
        why = (f"actor {a.name} was killed with tb.kill()" if a.killed
               else f"actor {a.name} died (its process exited)")
        self.mark_actor_dead(a.id, why)
        calls = ([a.worker.task] if a.worker.task is not None else []) + list(a.queue)
        a.worker.task = None
        a.queue.clear()
        for t in calls:
            self.fail(t.spec, ActorDiedError(why))
        self.dispatch()                # its resources are free again

    def mark_actor_dead(self, aid: bytes, why: str, infeasible: bool = False) -> None:
        self.actor_dead[aid] = why
        if infeasible:
            self.actor_infeasible.add(aid)
        self.gcs.put("actor", aid, {"node": self.index, "state": "dead", "error": why, "infeasible": infeasible})
        for spec in self.actor_pending.pop(aid, ()):
            if spec not in _KILLS:
                self.fail(spec, InfeasibleError(why) if infeasible else ActorDiedError(why))

    def _error_text(self, oid: bytes) -> str:
        try:
            err = objstore.deserialize_bytes(self.inline[oid])
            return getattr(err, "cause_repr", None) or str(err)
        except Exception:  # noqa: BLE001
            return "see the constructor's traceback"

    # --- membership and failures ---------------------------------------------------------
    def feasible(self, demand: dict) -> bool:
        """Can some live node hold ``demand``? (cached until the membership changes)"""
        key = tuple(demand.items())
        ok = self._feasible.get(key)
        if ok is None:
            ok = self._feasible[key] = any(fits(demand, n) for n in self.live_nodes().values())
        return ok

    def live_nodes(self) -> dict[int, dict]:
        """Resources of every node not declared dead (configured ones until they report)."""
        out = {i: dict(r) for i, r in enumerate(self.ctx.config["nodes"])}
        for i, info in self.node_info.items():
            out[i] = info["Resources"]
        return {i: r for i, r in sorted(out.items()) if i not in self.dead_nodes}

    def on_node_entry(self, table, key, info) -> None:
        i = info["Index"]
        self._cluster_view = None
        if info["Alive"]:
            if i not in self.dead_nodes:
                if i not in self.node_info:
                    self._feasible.clear()     # a node joined
                self.node_info[i] = info
        else:
            self.node_died(i)

    def node_died(self, k: int) -> None:
        """Node k is gone with its objects: pull elsewhere or rebuild what anyone here waits for."""
        if k in self.dead_nodes or k == self.index:
            return
        self.dead_nodes.add(k)
        self.node_info.pop(k, None)
        self._cluster_view = None
        self._feasible.clear()
        ch = self.peers.pop(k, None)
        if ch is not None:
            try:
                ch.close()
            except OSError:
                pass
        for aid, loc in list(self.actor_loc.items()):
            if loc == k:
                del self.actor_loc[aid]
        # calls sent to an actor that died with its node: the global scheduler rebuilds the
        # actor elsewhere (or declares it dead); they go there, before newer ones, in order
        again: dict[bytes, list] = {}
        for tid, (loc, spec) in list(self.calls_out.items()):
            if loc == k:
                del self.calls_out[tid]
                lost = Task(spec)
                lost.attempt = spec.get("attempt", 1)
                self.record(lost, k, float("nan"), time.time(), TaskState.LOST.value)
                again.setdefault(spec["actor_id"], []).append(dict(spec, attempt=lost.attempt + 1))
        for aid, specs in again.items():
            self.actor_pending[aid] = specs + self.actor_pending.get(aid, [])
            self.await_actor(aid)
        for oid, entry in list(self.known.items()):
            if k in entry["locations"]:
                self.known[oid] = dict(entry, locations=[n for n in entry["locations"] if n != k])
        for oid, src in list(self.pulling.items()):
            if src == k:
                del self.pulling[oid]
        for oid in self.waited_for():
            if self.live_copies(oid):
                self.maybe_pull(oid, self.known[oid])
            else:
                self.reconstruct(oid, dead=k)

    def waited_for(self) -> list[bytes]:
        """Objects someone here waits for that are not here (each once)."""
        waited = [o for o in list(self.local_waiters) + list(self.exists_waiters) if isinstance(o, bytes)]
        # an object freed before it was made is only watched to free it (free_when_made): never rebuilt
        return [o for o in dict.fromkeys(waited) if not self.is_local(o) and o not in self.freed_early]

    def live_copies(self, oid: bytes) -> list[int]:
        """Live nodes the object table (as last seen) says hold ``oid``."""
        return [n for n in (self.known.get(oid) or {}).get("locations", []) if n not in self.dead_nodes]

    def reconstruct(self, oid: bytes, dead: int | None = None) -> None:
        """Rebuild a lost object by running the task that made it again (its lost inputs are
        rebuilt the same way when that task waits for them). Safe to call often: it reads the
        task table and acts only if the latest attempt is gone."""
        tid = oid[:16]
        if tid in self.looking:
            return
        self.looking.add(tid)

        def got(entry):
            self.looking.discard(tid)
            if self.is_local(oid) or self.live_copies(oid):
                return                        # it is here, or on a live node
            if entry is not None and entry.get("spec") is None and self.ctx.config["lineage"]:
                # the submitter's write (with the spec) can reach the table after the global
                # scheduler's or the node's: look again shortly rather than give up
                n = self.spec_waits.get(tid, 0)
                if n < 50:
                    self.spec_waits[tid] = n + 1
                    self.loop.later(params.of(self.ctx, "spec_wait_retry_s"), lambda: self.reconstruct(oid, dead))
                    return
            self.spec_waits.pop(tid, None)
            if entry is None or entry.get("spec") is None:
                if (self.known.get(oid) or {}).get("size") is not None or entry is not None:
                    why = "no lineage to rebuild it" if entry is not None else "it was put, not computed"
                    self.lost(oid, f"object {oid.hex()[:16]} was lost with its node and {why}")
                return
            node, state = entry.get("node"), entry.get("state")
            gone = node in self.dead_nodes or node == dead
            if state in _PENDING and not gone:
                return                        # the latest attempt is on its way on a live node
            if state == TaskState.FAILED.value or entry["spec"].get("kind") == "actor_create":
                return
            if entry["spec"].get("kind") == "actor_call":
                self.actor_result_lost(oid, entry)
                return
            spec = dict(entry["spec"])
            attempt = entry.get("attempt", 1) + 1
            limit = spec.get("max_retries", 3)
            if not may_run_again(attempt - 2, limit):
                self.lost(oid, f"object {oid.hex()[:16]} was lost and its task {spec['name']} was already "
                               f"re-run {limit} times")
                return
            if gone and state in _PLACED:
                lost = Task(spec)
                lost.attempt = attempt - 1
                self.record(lost, node, float("nan"), time.time(), TaskState.LOST.value)
            self.gcs.task_update(tid, {"state": TaskState.RECONSTRUCTING.value, "attempt": attempt, "node": self.index})
            spec.update(attempt=attempt, hop=0, origin=self.index, spilled=False, pred=None, submitted_at=time.time())
            self.on_submit(None, spec)
        self.gcs.get("task", tid, got)

    def actor_result_lost(self, oid: bytes, entry: dict) -> None:
        """An actor call's result is gone with a node. The actor's rebuild replays the calls
        after its checkpoint (and stores their results again), and a call that had not run
        runs there; a result from before the checkpoint cannot come back."""
        if entry.get("state") != TaskState.FINISHED.value or entry.get("node") not in self.dead_nodes:
            return
        spec = entry["spec"]

        def got_actor(info):
            if info is not None and info.get("state") == "dead":
                self.lost(oid, f"the result of {spec['name']} was lost with its node, and the actor is dead: "
                               f"{info.get('error')}",
                          lambda why: ActorDiedError(why, actor_id=spec["actor_id"].hex()))
                return
            self.gcs.get("actor_ckpt", spec["actor_id"], got_ckpt)

        def got_ckpt(ck):
            if ck and entry.get("seq", 0) <= ck["calls_done"] and not self.is_local(oid):
                self.lost(oid, f"the result of {spec['name']} was lost with its node; the actor was rebuilt "
                               f"from a later checkpoint, so the call is not replayed")
        self.gcs.get("actor", spec["actor_id"], got_actor)

    def recheck_lost(self) -> None:
        """While some node is dead, look again at what we wait for: a producer may have been
        lost after we checked it (a rebuild that died too, a task sent to a dying node)."""
        if not self.dead_nodes:
            return
        for oid in self.waited_for():
            if oid not in self.pulling and not self.live_copies(oid):
                self.reconstruct(oid)

    def lost(self, oid: bytes, why: str, error=None) -> None:
        """Nothing can rebuild ``oid``: whoever waits for it gets ObjectLostError (or ``error``)."""
        self.store_failure(oid, (error or ObjectLostError)(why))

    def on_link_bandwidth(self, ch, index, bytes_per_s) -> None:
        """Node ``index``'s emulated link runs at ``bytes_per_s`` for objects landing from now on
        (sent to any node, forwarded like kill_worker)."""
        if index != self.index:
            try:
                self.loop.send(self.peer(index), ("link_bandwidth", index, bytes_per_s))
            except OSError:
                pass                            # a dead node has no link to change
            return
        self.link_bw = float(bytes_per_s)

    def on_kill_worker(self, ch, index) -> None:
        if index != self.index:
            try:
                self.loop.send(self.peer(index), ("kill_worker", index))
            except OSError:
                pass
            return
        workers = sorted((c for c in self.clients.values() if c.kind == "worker" and c.actor is None),
                         key=lambda c: (c.task is None, c.pid))
        if workers:
            try:
                os.kill(workers[0].pid, 9)
            except ProcessLookupError:
                pass

    # --- get and wait ---------------------------------------------------------------------
    def _block(self, c: Client, oids: list[bytes]) -> None:
        """A worker waits inside its task: give its CPU back so others can run (as Ray does),
        first the queued tasks it waits for."""
        if c.kind == "worker" and c.task is not None and not c.blocked:
            c.blocked = True
            c.awaiting = tuple(dict.fromkeys(o[:16] for o in oids))
            for tid in c.awaiting:
                self.awaited[tid] = self.awaited.get(tid, 0) + 1
            self.promote(c.awaiting)
            cpu = c.held.pop("CPU", 0.0)
            if cpu:
                self.avail["CPU"] = self.avail.get("CPU", 0.0) + cpu
                c.held["_CPU_released"] = cpu
            self.dispatch()

    def promote(self, tids: tuple[bytes, ...]) -> None:
        """Move the queued tasks among ``tids`` to the urgent queue (see enqueue). They were
        usually submitted just before the get that waits for them: looked for from the back."""
        want = set(tids)
        found = []
        for t in reversed(self.ready):
            if t.spec["task_id"] in want:
                found.append(t)
                if len(found) == len(want):
                    break
        for t in reversed(found):             # in their queue order
            self.ready.remove(t)
            self.urgent.append(t)

    def _forget_awaiting(self, c: Client) -> None:
        for tid in c.awaiting:
            n = self.awaited.get(tid, 0) - 1
            if n > 0:
                self.awaited[tid] = n
            else:
                self.awaited.pop(tid, None)
        c.awaiting = ()

    def _unblock(self, c: Client) -> None:
        if c.blocked:
            c.blocked = False
            self._forget_awaiting(c)
            cpu = c.held.pop("_CPU_released", 0.0)
            if cpu:
                self.avail["CPU"] = self.avail.get("CPU", 0.0) - cpu    # may oversubscribe briefly
                c.held["CPU"] = cpu

    def on_get(self, ch, req, oids, timeout) -> None:
        c = self.clients.get(ch)
        if c is None:
            return
        missing = [o for o in oids if not self.is_local(o)]
        state = {"left": set(missing), "done": False}

        def finish(timed_out: bool = False):
            if state["done"]:
                return
            state["done"] = True
            self._unblock(c)
            if timed_out:
                self.loop.send(ch, ("reply", req, "timeout"))
                return
            try:
                descs = self.descriptors(oids, c)
            except objstore.StoreFull as exc:       # they do not fit in memory together
                self.loop.send(ch, ("reply", req, ("store_full", self.store_full_text(oids, exc))))
                return
            self.loop.send(ch, ("reply", req, descs))

        if not missing:
            finish()
            return
        self._block(c, missing)
        for o in missing:
            self.when_local(o, lambda o=o: (state["left"].discard(o), state["left"] or finish()))
        if timeout is not None:
            self.loop.later(timeout, lambda: finish(True))

    def on_wait(self, ch, req, oids, num_returns, timeout) -> None:
        c = self.clients.get(ch)
        if c is None:
            return
        state = {"ready": [], "done": False}

        def finish():
            if state["done"]:
                return
            state["done"] = True
            self._unblock(c)
            self.loop.send(ch, ("reply", req, list(state["ready"])))

        def one(o):
            if not state["done"] and o not in state["ready"]:
                state["ready"].append(o)
                if len(state["ready"]) >= num_returns:
                    finish()

        for o in oids:
            self.when_exists(o, lambda o=o: one(o))
        if not state["done"]:
            self._block(c, [o for o in oids if o not in state["ready"]])
            if timeout is not None:
                self.loop.later(timeout, finish)

    # --- reporting ------------------------------------------------------------------------
    def heartbeat(self) -> None:
        info = {"NodeID": self.node_id, "Index": self.index, "Alive": True, "Resources": self.total,
                "Available": {k: max(0.0, v) for k, v in self.avail.items()},
                "queue_length": self.queued(), "running": self.running(), "time": time.time(),
                "durations": self.durations, "transfers": self.transfers}
        self.durations, self.transfers = [], []
        self.gcs.put("node", self.node_id, info)
        self.spill_back()

    def push_records(self) -> None:
        """Task rows go to the GCS as soon as the loop is done with the messages at hand
        (several in one write), so they survive this node's death."""
        new = self.records[self.records_pushed:]
        if new:
            self.records_pushed = len(self.records)
            self.gcs.extend("records", self.node_id, new)

    def on_nodes(self, ch, req) -> None:
        def got(table):
            rows = sorted(table.values(), key=lambda r: r["Index"])
            self.loop.send(ch, ("reply", req, [{k: r[k] for k in ("NodeID", "Alive", "Resources", "Index", "Available")}
                                               for r in rows]))
        self.gcs.scan_all("node", got)

    def on_records(self, ch, req) -> None:
        """Every task row of the cluster: live nodes send theirs; dead nodes' rows come from
        what they pushed to the GCS before they died (up to their last heartbeat)."""
        rid = id(ch) ^ req
        others = [i for i in self.live_nodes() if i != self.index]
        dead = sorted(self.dead_nodes)
        g = self._gathers[rid] = {"rows": list(self.records), "left": len(others) + (1 if dead else 0),
                                  "ch": ch, "req": req}
        for i in others:
            try:
                self.loop.send(self.peer(i), ("records_part", rid, self.index))
            except OSError:
                g["left"] -= 1
        if dead:
            ids = {self.ctx.node_id(k) for k in dead}
            def got(table):
                for node_id, lst in table.items():
                    if node_id in ids:
                        g["rows"].extend(lst)
                self.on_records_reply(None, rid, [])
            self.gcs.scan_all("records", got)
        if g["left"] == 0:
            self._gathered(rid)
        else:
            self.loop.later(params.of(self.ctx, "records_gather_timeout_s"), lambda: rid in self._gathers and self._gathered(rid))   # a node died meanwhile

    def on_records_part(self, ch, rid, asker) -> None:
        self.loop.send(ch, ("records_reply", rid, list(self.records)))

    def on_records_reply(self, ch, rid, rows) -> None:
        g = self._gathers.get(rid)
        if g is None:
            return
        g["rows"].extend(rows)
        g["left"] -= 1
        if g["left"] == 0:
            self._gathered(rid)

    def _gathered(self, rid) -> None:
        g = self._gathers.pop(rid)
        self.loop.send(g["ch"], ("reply", g["req"], g["rows"]))

    def close(self) -> None:
        self.store.close()


def main(ctx: Context, index: int, request_fd: int | None) -> None:
    import signal
    nm = NodeManager(ctx, index, request_fd)
    signal.signal(signal.SIGTERM, lambda *_: nm.loop.stop())
    try:
        nm.loop.run()
    finally:
        nm.close()
        nm.loop.close()
