"""The global scheduler: places the tasks that local schedulers forward.

    node manager ──("forward", spec, TaskView)──> global scheduler
    global scheduler ──("assign", spec)──> chosen node manager    (or ("infeasible", spec, why))
    GCS node table ──("pub", "node", id, heartbeat)──> global scheduler (load, durations, transfers)

It runs the shared PlacementPolicy on a ClusterView rebuilt from the latest heartbeats —
as stale as the heartbeat interval, as in the simulator — and feeds the policy's
estimators the task durations and transfer times each node reports in its heartbeat, when
that heartbeat arrives (policy.base.deliver_reports, the simulator's rule too).

It is also the cluster's liveness monitor: a node whose heartbeats stop for
num_heartbeats_timeout intervals is declared dead (written to the GCS node table, which
every node manager follows, so they rebuild what was lost). Nodes that join appear at
their first heartbeat.
"""
from __future__ import annotations

import time

import numpy as np

from ..core.faults import may_run_again
from ..core.seeding import policy_rng
from ..core.task import TaskState
from ..core.views import ClusterView, TaskView
from ..policy.base import deliver_reports, place_rebuild, placement_view
from .actors import actor_entry, placement_demand
from . import params
from .context import Context
from . import transport
from .gcsclient import GcsClient
from .loop import Loop


class GlobalScheduler:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.loop = Loop("gsched")
        self.loop.listen(ctx.global_scheduler(), ctx.secret)
        self.gcs = GcsClient(ctx, self.loop)
        from ..policy.build import build_policies
        self.placement, self.spillover = build_policies(ctx.config["scheduler"])
        self.rng = policy_rng(ctx.config["seed"], "placement")
        self.t0 = time.time()
        #: per node index: latest heartbeat, when it arrived (monotonic), declared dead
        self.info: dict[int, dict] = {}
        self.last_seen: dict[int, float] = {}
        self.dead: set[int] = set()
        self.version = 0
        #: per node index: heartbeats received (a view's ``reports``: recent-assignment counts
        #: reset per node, core.views.since_report)
        self.reports: dict[int, int] = {}
        self.view: ClusterView | None = None
        self.nodes: dict[int, object] = {}
        # the configured nodes, until their first heartbeats arrive
        start = time.monotonic()
        for i, res in enumerate(ctx.config["nodes"]):
            self.info[i] = {"NodeID": ctx.node_id(i), "Index": i,
                            "Alive": True, "Resources": res, "Available": res, "queue_length": 0, "running": 0}
            # a node that never reports is declared dead too, after a start-up grace
            self.last_seen[i] = start + params.of(ctx, "node_startup_grace_s")
        #: lost actors no live node could hold: (creation spec, TaskView, the view
        #: membership they were last tried on), in the order they were lost
        self.waiting_rebuilds: list[tuple[dict, TaskView, tuple]] = []
        self.gcs.subscribe("node", None, self.on_heartbeat)
        self.loop.on("forward", self.on_forward)
        interval = ctx.config["heartbeat_interval_s"]
        self.timeout_s = interval * ctx.config["num_heartbeats_timeout"]
        self.loop.every(interval, self.check_liveness)

    def now(self) -> float:
        return time.time() - self.t0

    def on_heartbeat(self, table, key, info) -> None:
        i = info["Index"]
        if not info["Alive"] or i in self.dead:
            return
        self.info[i] = info
        self.reports[i] = self.reports.get(i, 0) + 1      # this node's report count (ClusterView.reports)
        self.last_seen[i] = time.monotonic()
        # the samples since this node's last heartbeat reach the estimators now (the rule
        # both engines share: policy.base.deliver_reports)
        deliver_reports(self.placement, i, info.get("durations", ()), info.get("transfers", ()), self.now())
        self.view = None     # rebuilt on the next decision
        self.retry_rebuilds()

    def retry_rebuilds(self) -> None:
        """Lost actors waiting for a node are placed again (policy.base.place_rebuild) at the
        first view whose membership (ClusterView.membership: nodes, alive) differs from the
        one each was last tried on — a node joined, or one was declared dead."""
        if not self.waiting_rebuilds:
            return
        members = self.current_view().membership
        waiting, self.waiting_rebuilds = self.waiting_rebuilds, []
        for spec, tv, tried in waiting:
            if tried == members:
                self.waiting_rebuilds.append((spec, tv, tried))
            else:
                self.on_forward(None, spec, tv, rebuild=True)

    def check_liveness(self) -> None:
        now = time.monotonic()
        stalled = now - getattr(self, "_last_check", now) > self.timeout_s / 2
        self._last_check = now
        if stalled:          # this process was busy: the silence was ours, not the nodes'
            for i in self.last_seen:
                self.last_seen[i] = now
            return
        for i, seen in list(self.last_seen.items()):
            if i not in self.dead and now - seen > self.timeout_s:
                self.declare_dead(i)

    def declare_dead(self, i: int) -> None:
        """Node i is gone: stop placing there and tell everyone (the node table)."""
        if i in self.dead:
            return
        self.dead.add(i)
        self.view = None
        ch = self.nodes.pop(i, None)
        if ch is not None:
            ch.close()
        if self.info.get(i, {}).get("NodeID"):
            info = dict(self.info[i], Alive=False, Available={}, durations=[], transfers=[])
            self.info[i] = info
            self.gcs.put("node", info["NodeID"], info)
        self.gcs.scan_all("actor", lambda table: self.rebuild_actors(i, table))
        self.retry_rebuilds()

    def rebuild_actors(self, dead: int, table: dict) -> None:
        """Actors that lived on a dead node: each is placed again like a task (restored there
        from its last checkpoint, then replaying its later calls), while it has restarts
        left; otherwise it is dead, and calls on it fail. One no live node can hold waits for
        one (on_forward, retry_rebuilds); waiting spends no restart."""
        for aid, info in table.items():
            state = info.get("state")
            if state not in ("pending", "alive", "restarting") or info.get("node") != dead or "spec" not in info:
                continue
            # the entry's spec has no placement (actors.actor_entry): this one is the global scheduler's
            spec = dict(info["spec"], spilled=True, submitted_at=time.time())
            restarts = info.get("restarts", 0)
            if state != "pending":            # (a creation that never finished is not a restart)
                limit = spec.get("max_restarts", 0)
                if not may_run_again(restarts, limit):
                    self.gcs.put("actor", aid, {"node": dead, "state": "dead", "name": info.get("name"),
                                                "error": f"actor {spec['class_name']} died with its node and has "
                                                         f"no restarts left (max_restarts={limit})"})
                    continue
                spec.update(rebuild=True, attempt=restarts + 2)
            tv = TaskView(int.from_bytes(aid[:8], "little"), spec["name"], placement_demand(spec), (), dead)
            self.on_forward(None, spec, tv, rebuild=True)      # placed by policy.base.place_rebuild

    def current_view(self) -> ClusterView:
        if self.view is None:
            self.version += 1
            n = max(self.info) + 1 if self.info else 0
            names = sorted({k for x in self.info.values() for k in x["Resources"]} | {"CPU"})
            total = np.zeros((n, len(names)))
            avail = np.zeros((n, len(names)))
            queue = np.zeros(n, np.int64)
            running = np.zeros(n, np.int64)
            reports = np.zeros(n, np.int64)
            alive = np.zeros(n, bool)
            for i, x in self.info.items():
                for j, k in enumerate(names):
                    total[i, j] = x["Resources"].get(k, 0.0)
                    avail[i, j] = x["Available"].get(k, 0.0)
                queue[i], running[i], reports[i] = x["queue_length"], x["running"], self.reports.get(i, 0)
                alive[i] = i not in self.dead
            self.view = ClusterView(version=self.version, as_of=self.now(), resource_names=names, total=total,
                                    available=avail, queue_length=queue, running=running, alive=alive,
                                    reports=reports)
        return self.view

    def on_forward(self, ch, spec, tv, rebuild: bool = False) -> None:
        """Place a forwarded task (``rebuild``: a lost actor's creation, from the node in
        ``tv.submitter``, by the rule both engines share, policy.base.place_rebuild)."""
        # an actor holds its resources for its life: placed where they are free now, if anywhere
        view = placement_view(self.current_view(), tv.demand,
                              spec.get("kind") == "actor_create" or self.spillover.place_where_free)
        if rebuild:
            p = place_rebuild(self.placement, tv.task_id, tv.function, tv.demand, tv.submitter,
                              view, self.now(), self.rng)
        else:
            p = self.placement.place(tv, view, self.now(), self.rng)
        if p is None:
            msg = f"task {spec['name']} asks for {placement_demand(spec)}, which no live node can hold"
            if ch is not None:
                self.loop.send(ch, ("infeasible", spec, msg))
            elif spec.get("kind") == "actor_create":
                # a rebuild with no live node to hold it waits (restarting, on no node; its
                # callers hold their calls) and is tried again by the same rule when the
                # view's membership changes (retry_rebuilds), as in the simulator
                self.waiting_rebuilds.append((spec, tv, self.current_view().membership))
                self.gcs.put("actor", spec["actor_id"], actor_entry(spec, -1))
            return
        spec["pred"] = None if p.predicted_wait_s is None else float(p.predicted_wait_s)
        try:
            target = self.node(int(p.node))
        except OSError:          # it died since its last heartbeat: the view is stale; try again
            self.declare_dead(int(p.node))
            self.on_forward(ch, spec, tv, rebuild)
            return
        # the task table says where it went: if that node dies before running it, whoever
        # waits for its result knows to run it again (an actor: the actor table, see rebuild_actors)
        self.gcs.task_update(spec["task_id"], {"node": int(p.node), "state": TaskState.ASSIGNED.value,
                                               "attempt": spec.get("attempt", 1), "hop": spec.get("hop", 0)})
        if spec.get("kind") == "actor_create":
            self.gcs.put("actor", spec["actor_id"], actor_entry(spec, int(p.node)))
        self.loop.send(target, ("assign", spec))

    def node(self, index: int):
        ch = self.nodes.get(index)
        if ch is None or ch.closed:
            # the node reported (heartbeat), so its socket exists: no retrying a dead one
            ch = self.nodes[index] = self.loop.add(transport.connect(self.ctx.node(index), self.ctx.secret,
                                                                     timeout=params.of(self.ctx, "peer_connect_timeout_s")))
        return ch


def main(ctx: Context) -> None:
    import signal
    gs = GlobalScheduler(ctx)
    signal.signal(signal.SIGTERM, lambda *_: gs.loop.stop())
    try:
        gs.loop.run()
    finally:
        gs.loop.close()
