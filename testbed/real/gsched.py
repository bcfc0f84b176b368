"""The global scheduler: places the tasks that local schedulers forward.

    node manager ──("forward", spec, TaskView)──> global scheduler
    global scheduler ──("assign", spec)──> chosen node manager    (or ("infeasible", spec, why))
    GCS node table ──("pub", "node", id, heartbeat)──> global scheduler (load, durations, transfers)

It runs the shared PlacementPolicy on a ClusterView rebuilt from the latest heartbeats —
as stale as the heartbeat interval, as in the simulator — and feeds the policy's
estimators the task durations and transfer times the nodes report.
"""
from __future__ import annotations

import time

import numpy as np

from ..core.views import ClusterView
from .context import Context
from .gcsclient import GcsClient, connect_retry
from .loop import Loop


class GlobalScheduler:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.loop = Loop("gsched")
        self.loop.listen(ctx.global_scheduler(), ctx.secret)
        self.gcs = GcsClient(ctx, self.loop)
        from ..studies.experiment import build_policies
        self.placement, _ = build_policies(ctx.config["scheduler"])
        self.rng = np.random.default_rng(12345)
        self.t0 = time.time()
        n = ctx.n_nodes
        self.names = sorted({k for nd in ctx.config["nodes"] for k in nd} | {"CPU"})
        self.total = np.array([[nd.get(k, 0.0) for k in self.names] for nd in ctx.config["nodes"]]).reshape(n, -1)
        self.avail = self.total.copy()
        self.queue = np.zeros(n, np.int64)
        self.running = np.zeros(n, np.int64)
        self.alive = np.ones(n, bool)
        self.version = 0
        self.view: ClusterView | None = None
        self.nodes: dict[int, object] = {}
        self.gcs.subscribe("node", None, self.on_heartbeat)
        self.loop.on("forward", self.on_forward)

    def now(self) -> float:
        return time.time() - self.t0

    def on_heartbeat(self, table, key, info) -> None:
        i = info["Index"]
        for j, k in enumerate(self.names):
            self.avail[i, j] = info["Available"].get(k, 0.0)
        self.queue[i] = info["queue_length"]
        self.running[i] = info["running"]
        self.alive[i] = info["Alive"]
        now = self.now()
        for name, secs in info.get("durations", ()):
            self.placement.observe_task(name, i, secs, now)
        for src, dst, size, secs in info.get("transfers", ()):
            self.placement.observe_transfer(src, dst, size, secs, now)
        self.view = None     # rebuilt on the next decision

    def current_view(self) -> ClusterView:
        if self.view is None:
            self.version += 1
            self.view = ClusterView(version=self.version, as_of=self.now(), resource_names=self.names,
                                    total=self.total, available=self.avail, queue_length=self.queue,
                                    running=self.running, alive=self.alive)
        return self.view

    def on_forward(self, ch, spec, tv) -> None:
        p = self.placement.place(tv, self.current_view(), self.now(), self.rng)
        if p is None:
            self.loop.send(ch, ("infeasible", spec, f"task {spec['name']} asks for {spec['resources']}, which no live node "
                                         f"can hold"))
            return
        spec["pred"] = None if p.predicted_wait_s is None else float(p.predicted_wait_s)
        self.loop.send(self.node(int(p.node)), ("assign", spec))

    def node(self, index: int):
        ch = self.nodes.get(index)
        if ch is None or ch.closed:
            ch = self.nodes[index] = self.loop.add(connect_retry(self.ctx.node(index), self.ctx.secret))
        return ch


def main(ctx: Context) -> None:
    import signal
    gs = GlobalScheduler(ctx)
    signal.signal(signal.SIGTERM, lambda *_: gs.loop.stop())
    try:
        gs.loop.run()
    finally:
        gs.loop.close()
