"""Run an experiment config on the real runtime (``run.engine = "real"``).

    testbed run ... --set run.engine=real
      -> tb.init(): run.real_nodes logical nodes of [cluster]'s shape, the [scheduler] policies,
         the GCS's chains ([cluster] gcs_chain_length, gcs_flush_interval_s,
         [faults] gcs_replace_replicas)
      -> task shapes: one driver actor per workload driver, pinned to its node; driver d takes
         jobs d, d + D, d + 2D, ... and submits them as the workload says (closed loop with
         in_flight jobs outstanding, or Poisson arrivals), each task a real task that sleeps
         (or spins) for its drawn duration x run.real_time_scale x its node's slowdown and
         returns an object of its drawn size; inputs are the refs of its dependencies
      -> shape "actors" (Fig. 11b): min(workload.actors, run.real_actors) actors of class
         ``Actor`` (round-robin over the nodes), then the driver actors as above, job j a call
         ``Actor.step`` on actor ``Workload.actor_of(j)``; afterwards each actor's state is
         checked against the calls its callers saw through (``info["actor_state_ok"]``)
      -> shape "gcs_client" (Fig. 10a): client threads in this process, each with its own
         blocking GCS client and one request in flight, send job j as
         ``Workload.gcs_request(j)``; afterwards every acknowledged write is read back
      -> [faults] on the cluster while that runs (nodes, workers, GCS chain replicas)
      -> every node's task rows (and the client's request rows) -> a Trace with the
         simulator's columns, in seconds from the run's start (real seconds: the studies
         divide by real_time_scale themselves, see studies._time_scale)

The machine has 2 cores, so the cluster is scaled down by [run] keys: ``real_nodes``,
``real_cpus_per_node``, ``real_max_jobs``, ``real_time_scale`` (and ``real_actors``);
``config.toml`` records them. Open (Poisson) arrivals are stretched by the ratio of CPUs
(shape "actors": of actors, which hold no CPU), so each CPU (actor) sees the offered load it
had in the simulated cluster; the slow nodes keep their share of the cluster. The failure
detection timeout (heartbeats) is not scaled: it is real seconds, as the config says.

``info`` has the simulator's keys where they make sense (times in Trace seconds):
``gcs_memory`` [(t_s, bytes)] sampled every heartbeat interval — the resident memory of one
copy of the GCS: per shard the largest RSS among its live replica processes, summed over
shards (a Python process's RSS, interpreter included, so it starts at ~25 MB, and freed
entries are reused rather than returned to the OS: flushing shows as growth that stops);
``gcs_memory_peak_bytes``; ``gcs_flushed_entries`` (per shard the most any live replica
flushed, summed); ``gcs_reconfigurations`` [(t_s of the replica's death, seconds until the
chain master had the survivors reconfigured and published the chain)];
``gcs_replicas_killed`` / ``gcs_replicas_added``; shape "gcs_client": ``gcs_writes_acked``,
``gcs_acked_writes_lost`` (must be 0), ``gcs_reads_wrong``; shape "actors": ``actors``,
``actors_rebuilt``, ``actor_calls_replayed``, ``actor_checkpoints`` (from the Trace rows),
``actor_calls_failed`` (calls whose caller got ActorDiedError), ``actor_state_ok``.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..core.faults import (RANDOM_KILL_PROTECTED, check_real_node_failures, driver_nodes, random_kill_rng,
                           random_victim, real_node)
from ..core.task import TaskState
from ..core.trace import TraceRow
from ..workloads import Workload, parse_workload
from ..workloads.generator import job_deps

if TYPE_CHECKING:
    import pandas as pd

# Workers import this module to run _work, _Driver and Actor: pandas (the Trace) is imported
# only where a Trace is built, or it would cost every worker ~0.2 s of CPU (seconds, with
# many starting together on 2 cores) before its first call.

#: Trace rows of the engine's own processes and calls, left out of the run's Trace
EXCLUDED = ("_Driver.", "_Driver", "Actor.state")


def _slow(slowdown: list) -> float:
    """This worker's node's slowdown now (1 outside a worker, or for a node added later).
    An entry is a number, or ``(base, ((wall time, factor), ...))`` for a node that
    cluster.slowdowns slows mid-run: base x every factor whose time has come."""
    from . import api
    node = api._worker_core.node if api._worker_core is not None else 0
    s = slowdown[node] if node < len(slowdown) else 1.0
    if s.__class__ is tuple:
        s, steps = s
        now = time.time()
        for at, factor in steps:
            if now < at:
                break
            s *= factor
    return s


def _link_bandwidths(c: dict, n: int) -> list[float] | None:
    """Each real node's link bandwidth, bytes/s, with cluster.link_bandwidth applied (config
    node k is node k % n here, as for [faults]; a later entry wins); None when it lists none."""
    if not c["link_bandwidth"]:
        return None
    bw = [float(c["bandwidth_bytes_per_s"])] * n
    for x in c["link_bandwidth"]:
        for k in x["nodes"]:
            bw[k % n] = float(x["bytes_per_s"])
    return bw


def _bandwidth_events(c: dict, n: int, scale: float) -> list:
    """cluster.bandwidth_changes as (time, "link_bandwidth", (node, bytes/s)) events: config node
    k is node k % n here (a change counts once per real node), nodes = [] every node; each
    change multiplies the bandwidth that node's link has by then."""
    if not c["bandwidth_changes"]:
        return []
    bw = _link_bandwidths(c, n) or [float(c["bandwidth_bytes_per_s"])] * n
    events = []
    for x in sorted(c["bandwidth_changes"], key=lambda x: x["at_s"]):
        for m in sorted({k % n for k in x["nodes"]}) if x["nodes"] else range(n):
            bw[m] *= x["factor"]
            events.append((x["at_s"] * scale, "link_bandwidth", (m, bw[m])))
    return events


def _slowdown_schedule(slowdown: list, slowdowns: list, n: int, t0: float, scale: float) -> list:
    """``slowdown`` (one number per real node) with cluster.slowdowns applied: config node k
    is node k % n here (as for [faults]), at wall time t0 + at_s x real_time_scale."""
    steps: dict[int, list] = {}
    for x in slowdowns:
        steps.setdefault(x["node"] % n, []).append((t0 + x["at_s"] * scale, x["factor"]))
    return [(s, tuple(sorted(steps[i], key=lambda e: e[0]))) if i in steps else s
            for i, s in enumerate(slowdown)]


def _spend(d: float, mode: str) -> None:
    if mode == "spin":
        end = time.perf_counter() + d
        while time.perf_counter() < end:
            pass
    elif d > 0:
        time.sleep(d)                     # the task's work


def _work(duration_s: float, out_bytes: int, mode: str, slowdown: list, *inputs):
    """A workload task: compute for ``duration_s`` (x this node's slowdown), return ``out_bytes``."""
    _spend(duration_s * _slow(slowdown), mode)
    return np.zeros(int(out_bytes), np.uint8) if out_bytes > 0 else None


class Actor:
    """Shape "actors": a stateful actor (rows ``Actor.__init__``, ``Actor.step``). Its state is
    what a checkpoint pickles and a rebuild must restore: the calls applied, in order."""

    def __init__(self, slowdown: list, mode: str):
        self.slowdown = slowdown
        self.mode = mode
        #: calls applied to this state
        self.calls = 0
        #: (driver, job) of every call applied, in the order applied
        self.seen: list[tuple[int, int]] = []

    def step(self, j: int, driver: int, duration_s: float, out_bytes: int):
        """Job ``j``'s call: compute for ``duration_s`` (x the node's slowdown), then apply it."""
        _spend(duration_s * _slow(self.slowdown), self.mode)
        self.calls += 1
        self.seen.append((driver, j))
        return np.zeros(int(out_bytes), np.uint8) if out_bytes > 0 else None

    def state(self) -> tuple[int, list]:
        return self.calls, self.seen


def _arrivals(wl: Workload, d: int, jobs, gap_scale: float, lock=None, until=None):
    """Yield each of ``jobs`` at its time in driver ``d``'s open arrival process (gaps x
    ``gap_scale``). ``until(t)``, if given, may use the wait before the next arrival (it returns
    by ``t``); ``lock`` guards the workload's streams when threads share them."""
    next_t = time.time()
    for j in jobs:
        with lock or contextlib.nullcontext():
            next_t += wl.next_arrival_gap(d) * gap_scale
        if until is not None:
            until(next_t)
        pause = next_t - time.time()
        if pause > 0:
            time.sleep(pause)             # the open arrival process: submit at its times
        yield j


class _Driver:
    """One workload driver, living on its node (an actor pinned there)."""

    def run(self, d: int, n_drivers: int, total: int, wl_table: dict, seed: int, mode: str, scale: float,
            gap_scale: float, slowdown: list, max_retries: int, t0: float, actors: list | None = None) -> dict:
        """Submit driver ``d``'s jobs; returns {"done": jobs seen through, "failed": jobs whose
        actor call failed with ActorDiedError, "lost": actor calls whose result was lost with
        its node before the driver took it} (only actor calls may fail without raising)."""
        from . import api
        from .errors import ActorDiedError, ObjectLostError
        wl = Workload(parse_workload(wl_table), seed)
        deps = job_deps(wl.spec)
        sinks = [i for i in range(len(deps)) if not any(i in dd for dd in deps)]
        work = api.remote(_work)
        mine = list(wl.driver_jobs(d))              # the split rule both engines share
        outstanding: list = []      # (job, sink refs) of jobs in flight
        submitted = 0
        failed: list[int] = []       # actor calls whose actor is gone
        lost: list[int] = []         # actor calls applied whose result was lost with its node

        def submit(j: int) -> list:
            # the submission time in config seconds (real seconds / real_time_scale, as the times of
            # [faults] and cluster.slowdowns): shift.at_s and drift act on it as in the simulator
            job = wl.job(j, d, (time.time() - t0) / scale)
            if actors is not None:                       # one call on the job's actor
                t = job.tasks[0]
                return [actors[wl.actor_of(j)].step.remote(j, d, t.duration_s * scale, t.output_bytes)]
            refs = []
            for t in job.tasks:
                res = dict(t.resources)
                fn = work.options(name=t.function, num_cpus=res.pop("CPU", 0), num_gpus=res.pop("GPU", None),
                                  resources=res or None, _job_id=j, max_retries=max_retries)
                refs.append(fn.remote(t.duration_s * scale, t.output_bytes, mode, slowdown,
                                      *[refs[k] for k in t.deps]))
            return [refs[k] for k in sinks]

        def see_through(j: int, refs: list) -> None:
            if actors is None:
                api.get(refs)                            # a task's error is the run's error
                return
            try:
                api.get(refs)
            except ActorDiedError:
                failed.append(j)                         # its actor is gone (restarts used up)
            except ObjectLostError:
                lost.append(j)                           # applied, but its result died with a node

        if wl.arrival == "closed":
            while submitted < len(mine) or outstanding:
                while submitted < len(mine) and len(outstanding) < wl.in_flight:
                    outstanding.append((mine[submitted], submit(mine[submitted])))
                    submitted += 1
                firsts = [refs[0] for _, refs in outstanding]
                ready, _ = api.wait(firsts, num_returns=1)
                k = firsts.index(ready[0])
                see_through(*outstanding.pop(k))         # the job's every sink
        elif actors is None:
            all_sinks = []
            for j in _arrivals(wl, d, mine, gap_scale):
                all_sinks.extend(submit(j))
            if all_sinks:
                api.wait(all_sinks, num_returns=len(all_sinks))
        else:
            # actor calls: take each result as it comes (a caller holds its results, as in the
            # simulator), so a result is not left on a node that may die before the end
            def take_results(next_t: float) -> None:
                while outstanding and time.time() < next_t:
                    firsts = [refs[0] for _, refs in outstanding]
                    ready, _ = api.wait(firsts, num_returns=1, timeout=max(0.0, next_t - time.time()))
                    for r in ready:
                        see_through(*outstanding.pop([refs[0] for _, refs in outstanding].index(r)))
            for j in _arrivals(wl, d, mine, gap_scale, until=take_results):
                outstanding.append((j, submit(j)))
            for job in outstanding:
                see_through(*job)
        return {"done": len(mine), "failed": failed, "lost": lost}


def _gcs_key(key: int, key_bytes: int) -> bytes:
    """Key ``key`` of the client workload as ``key_bytes`` bytes (longer if its digits need it)."""
    return str(key).encode().rjust(key_bytes, b"0")


def _gcs_value(key: int, value_bytes: int) -> bytes:
    """The value written under ``key``: ``value_bytes`` bytes that differ from key to key."""
    return (key.to_bytes(8, "little") * (value_bytes // 8 + 1))[:value_bytes]


class _GcsClients:
    """Shape "gcs_client": client threads in the driver process, each with its own blocking GCS
    client (so one request in flight each). Closed loop: ``in_flight`` threads per driver take
    the next job as they become free; Poisson: one thread per driver sends at its arrival
    times (a request late behind a slow one is sent when that one returns). Each request is
    a row in RECORD_COLUMNS order, times in wall seconds."""

    TABLE = "client"

    def __init__(self, api, wl_table: dict, seed: int, total: int, driver_nodes: list[int], gap_scale: float):
        self.api = api
        self.wl = Workload(parse_workload(wl_table), seed)
        self.spec = self.wl.spec
        self.total = total
        self.driver_nodes = driver_nodes
        self.gap_scale = gap_scale
        #: per driver: how many of its jobs its threads have taken
        self._next = [itertools.count() for _ in range(self.wl.n_drivers)]
        self._lock = threading.Lock()
        self.rows: list[tuple] = []
        #: keys whose write returned (the tail acknowledged it)
        self.acked: list[int] = []
        self.reads_wrong = 0
        self.errors: list[BaseException] = []
        self.done = threading.Event()
        closed = self.wl.arrival == "closed"
        self._threads = [threading.Thread(target=self._client, args=(d, closed), daemon=True,
                                          name=f"testbed-gcs-client-{d}-{i}")
                         for d in range(self.wl.n_drivers) for i in range(self.wl.in_flight if closed else 1)]
        self._left = len(self._threads)

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def wait(self, timeout: float | None) -> bool:
        """True once every client has ended (finished, or failed: see ``join``)."""
        return self.done.wait(timeout)

    def join(self) -> None:
        for t in self._threads:
            t.join()
        if self.errors:
            raise self.errors[0]

    def _jobs(self, d: int, closed: bool):
        mine = self.wl.driver_jobs(d)                    # the split rule both engines share
        if closed:                                       # whichever of d's threads is free takes d's next job
            while True:
                with self._lock:
                    k = next(self._next[d])
                if k >= len(mine):
                    return
                yield mine[k]
        else:                                            # the generator's streams are shared
            yield from _arrivals(self.wl, d, mine, self.gap_scale, self._lock)

    def _client(self, d: int, closed: bool) -> None:
        kb, vb = self.spec.gcs_key_bytes, self.spec.gcs_value_bytes
        try:
            g = self.api._gcs_client()
            try:
                for j in self._jobs(d, closed):
                    kind, key = self.wl.gcs_request(j)
                    k = _gcs_key(key, kb)
                    sent = time.time()
                    if kind == "write":
                        g.write(self.TABLE, k, _gcs_value(key, vb))
                    else:
                        got = g.read(self.TABLE, k)
                    answered = time.time()
                    with self._lock:
                        if kind == "write":
                            self.acked.append(key)
                        elif got != _gcs_value(key, vb):
                            self.reads_wrong += 1        # a read follows its key's write
                        row = TraceRow(task_id=f"gcs-{j}".encode(), job_id=j, function=f"gcs.{kind}",
                                       submitter=self.driver_nodes[d], node=-1, submitted_s=sent, placed_s=sent,
                                       started_s=sent, finished_s=answered, spilled=False, predicted_wait_s=None,
                                       bytes_transferred=0, attempt=1, state=TaskState.FINISHED.value)
                        self.rows.append((*row, 0))      # RECORD_COLUMNS: the Trace's, then pid
            finally:
                g.close()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread by join()
            self.errors.append(exc)
        finally:
            with self._lock:
                self._left -= 1
                if self._left == 0:
                    self.done.set()

    def lost_writes(self) -> int:
        """Read back every acknowledged write (a fresh client): how many are missing or wrong."""
        vb, kb = self.spec.gcs_value_bytes, self.spec.gcs_key_bytes
        g = self.api._gcs_client()
        try:
            return sum(1 for key in self.acked if g.read(self.TABLE, _gcs_key(key, kb)) != _gcs_value(key, vb))
        finally:
            g.close()


class _MemorySampler:
    """A driver thread that samples the GCS's resident memory (Cluster.gcs_rss) every ``interval_s``:
    ``samples`` [(wall time, bytes)]."""

    def __init__(self, cluster, interval_s: float):
        self.cluster = cluster
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="testbed-gcs-memory")

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (after one last sample); a second call does nothing."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        self.samples.append((time.time(), self.cluster.gcs_rss()))


def _driver_nodes(wl_table: dict, faults: dict, n: int) -> list[int]:
    """Each driver's node, by the rule both engines share (:func:`testbed.core.faults.driver_nodes`),
    over the same scheduled kills as the simulator's (every one is carried out here:
    :func:`testbed.core.faults.check_real_node_failures`)."""
    killed = [real_node(f["node"], n) for f in faults["node_failures"]]
    return driver_nodes(wl_table.get("driver_nodes") or [], wl_table["drivers"], n, killed,
                        faults["kill_every_s"], faults["min_live_nodes"])


def run_real(cfg: dict, seed: int):
    """Run ``cfg`` once on a fresh local cluster; returns (Trace DataFrame, metrics, info)."""
    from . import api
    c, r, sched, faults = cfg["cluster"], cfg["run"], cfg["scheduler"], cfg["faults"]
    if c["node_groups"]:
        shapes = [g for g in c["node_groups"] for _ in range(g["count"])]
        nodes = [{"CPU": g["cpus"], "GPU": g["gpus"], **g["resources"]} for g in shapes]
        speeds = [1.0 / g["speed"] for g in shapes]
    else:
        nodes = [{"CPU": c["cpus_per_node"], "GPU": c["gpus_per_node"], **c["resources"]}] * c["nodes"]
        speeds = [1.0] * c["nodes"]
    n_all = len(nodes)
    for i in range(max(0, n_all - c["slow_nodes"]), n_all):
        speeds[i] *= c["slow_factor"]
    n = min(n_all, r["real_nodes"])
    check_real_node_failures(faults["node_failures"], n)      # before anything starts
    # keep the slow share of the cluster when scaling down
    slow_share = sum(1 for s in speeds if s > 1.0) / n_all
    n_slow = int(round(slow_share * n))
    slowdown = [1.0] * (n - n_slow) + [max(speeds)] * n_slow
    real_nodes = []
    for i in range(n):
        res = {k: float(v) for k, v in nodes[i % n_all].items() if v}
        res["CPU"] = min(res.get("CPU", 1.0), r["real_cpus_per_node"])
        real_nodes.append(res)
    wl_table = dict(cfg["workload"])
    shape = wl_table["shape"]
    total = min(wl_table["jobs"], r["real_max_jobs"])
    wl_table["jobs"] = total
    n_drivers = wl_table["drivers"]
    driver_nodes = _driver_nodes(wl_table, faults, n)
    wl_table["driver_nodes"] = []
    scale = r["real_time_scale"]
    # open arrivals keep the simulated offered load per CPU (per actor): the real cluster is smaller
    if shape == "actors":
        n_actors = min(wl_table["actors"], r["real_actors"] or wl_table["actors"])
        gap_scale = scale * wl_table["actors"] / n_actors
        wl_table["actors"] = n_actors
    elif shape == "gcs_client":
        gap_scale = scale                                # the GCS is not scaled down
    else:
        cpu_ratio = sum(x.get("CPU", 0.0) for x in real_nodes) / max(1e-9, sum(x.get("CPU", 0.0) for x in nodes))
        gap_scale = scale / cpu_ratio
    t_start = time.time()
    api.init(nodes=real_nodes, placement=sched["placement"], spillover=sched["spillover"],
             task_time=sched["task_time"], task_time_key=sched["task_time_key"], bandwidth=sched["bandwidth"],
             bandwidth_key=sched["bandwidth_key"], decide_at=sched["decide_at"], gcs_shards=c["gcs_shards"],
             heartbeat_interval_s=c["heartbeat_interval_s"], object_store_bytes=int(min(c["object_store_bytes"], api.OBJECT_STORE_BYTES)),
             link_bandwidth_bytes_per_s=c["bandwidth_bytes_per_s"], link_latency_s=c["latency_s"],
             link_bandwidth_per_node=_link_bandwidths(c, n),
             lineage=faults["lineage"], num_heartbeats_timeout=c["num_heartbeats_timeout"],
             gcs_chain_length=c["gcs_chain_length"], gcs_flush_interval_s=c["gcs_flush_interval_s"],
             gcs_replace_replicas=faults["gcs_replace_replicas"], seed=seed,
             preload=[__name__])   # workers start with _work's module imported: no warm-up in the results
    info: dict = {}
    memory = _MemorySampler(api._driver_cluster(), c["heartbeat_interval_s"])
    try:
        init_s = time.time() - t_start
        handles = None
        failed: list[int] = []
        t0 = time.time()
        slowdown = _slowdown_schedule(slowdown, c["slowdowns"], n, t0, scale)
        memory.start()
        if shape == "gcs_client":
            clients = _GcsClients(api, wl_table, seed, total, driver_nodes, gap_scale)
            clients.start()
            fault_log = _inject_faults(api, faults, n, real_nodes, seed, scale, t0, clients.wait,
                                       _bandwidth_events(c, n, scale))
            clients.join()
            jobs_done = len(clients.rows)
            extra_rows = clients.rows
            info.update(gcs_writes_acked=len(clients.acked), gcs_acked_writes_lost=clients.lost_writes(),
                        gcs_reads_wrong=clients.reads_wrong)
        else:
            if shape == "actors":
                # num_cpus=0: the simulator's actors hold no CPU and are placed at once (Ray's
                # 0-CPU actors); a default actor would need a free CPU to be placed (actors.py)
                cls = api.remote(num_cpus=0, max_restarts=wl_table["actor_max_restarts"],
                                 checkpoint_interval=wl_table["actor_checkpoint_interval"])(Actor)
                handles = [cls.options(_node=a % n).remote(slowdown, r["real_work"]) for a in range(n_actors)]
            Driver = api.remote(num_cpus=0)(_Driver)
            drivers = [Driver.options(_node=driver_nodes[d]).remote() for d in range(n_drivers)]
            runs = [drv.run.remote(d, n_drivers, total, wl_table, seed, r["real_work"], scale, gap_scale, slowdown,
                                   faults["max_retries"], t0, handles) for d, drv in enumerate(drivers)]

            def finished(timeout: float) -> bool:
                return len(api.wait(runs, num_returns=len(runs), timeout=timeout)[0]) == len(runs)
            fault_log = _inject_faults(api, faults, n, real_nodes, seed, scale, t0, finished,
                                       _bandwidth_events(c, n, scale))
            outcomes = api.get(runs)             # each driver returns the jobs it saw through
            jobs_done = sum(o["done"] for o in outcomes)
            failed = sorted(j for o in outcomes for j in o["failed"])
            info["results_lost"] = sum(len(o["lost"]) for o in outcomes)
            extra_rows = []
        wall = time.time() - t0
        memory.stop()
        if handles is not None:
            wl = Workload(parse_workload(wl_table), seed)
            info["actor_state_errors"] = []
            info["actor_state_ok"] = _actor_state_ok(api, handles, [wl.actor_of(j) for j in range(total)],
                                                     set(failed), n_drivers, info["actor_state_errors"])
        rows = api.task_records()
        stats = api._gcs_stats()
        chains = api.gcs_chains()
        reconfigs = api._master_request("reconfigurations")
    finally:
        memory.stop()
        api.shutdown()
    from ..core.trace import metrics_from_trace
    df = records_to_trace(rows + extra_rows, exclude=EXCLUDED, t0=t0)
    metrics = metrics_from_trace(df)
    flushed: dict[int, int] = {}
    for (k, _), st in stats.items():
        flushed[k] = max(flushed.get(k, 0), int(st["flushed"]))
    mem = [(t - t0, b) for t, b in memory.samples]
    info.update({"wall_s": wall, "init_s": init_s, "nodes": n, "jobs": total, "jobs_done": jobs_done,
                 "nodes_killed": sum(1 for f in fault_log if f[1] == "kill_node"),
                 "nodes_added": sum(1 for f in fault_log if f[1] == "add_node"),
                 "reexecuted": int((df.attempt > 1).sum()) if len(df) else 0,
                 "complete": jobs_done == total, "results_lost": info.get("results_lost", 0),
                 "gcs_memory": mem, "gcs_memory_peak_bytes": max(b for _, b in mem),
                 "gcs_flushed_entries": sum(flushed.values()),
                 # task-table moves against the shared transitions (gcs.Shard._check_move): must be 0
                 "illegal_state_moves": sum(int(st.get("illegal_moves", 0)) for st in stats.values()),
                 "gcs_reconfigurations": [(t - t0, s) for t, s in reconfigs],
                 "gcs_replicas_killed": sum(1 for f in fault_log if f[1] == "gcs_kill"),
                 # fresh replicas still in the chains at the end (ids from gcs_chain_length up)
                 "gcs_replicas_added": sum(1 for chain in chains.values() for x in chain if x >= c["gcs_chain_length"])})
    if shape == "actors":
        step = df[(df.function == "Actor.step") & (df.state == TaskState.FINISHED.value)]
        info.update(actors=n_actors,
                    actors_rebuilt=int(((df.function == "Actor.__init__") & (df.state == TaskState.FINISHED.value)
                                        & (df.attempt > 1)).sum()),
                    # a replay re-runs a call whose result was delivered already (its id finished before)
                    actor_calls_replayed=int(step.sort_values(["finished_s", "attempt"], kind="stable")
                                             .duplicated("task_id").sum()),
                    actor_checkpoints=int(((df.function == "Actor.__checkpoint__") & (df.state == TaskState.FINISHED.value)).sum()),
                    actor_calls_failed=len(failed))
    return df, metrics, info


def _actor_state_ok(api, handles: list, actor_of: list[int], failed: set[int], n_drivers: int,
                    errors: list[str]) -> bool:
    """Does each actor's state hold exactly the calls its callers saw through, each once, and
    each caller's calls in the order it made them? (An actor that is gone answers nothing:
    then it is right only if every call to it failed; any other error is appended to ``errors``.)"""
    from .errors import ActorDiedError, TestbedRuntimeError
    ok = True
    for a, h in enumerate(handles):
        want = [j for j, x in enumerate(actor_of) if x == a and j not in failed]
        try:
            calls, seen = api.get(h.state.remote(), timeout=60)
        except ActorDiedError:
            ok = ok and not want
            continue
        except TestbedRuntimeError as exc:           # no answer: its state cannot be checked
            errors.append(f"actor {a}: {type(exc).__name__}: {exc}")
            ok = False
            continue
        js = [j for _, j in seen]
        in_order = all([j for d, j in seen if d == drv] == sorted(j for d, j in seen if d == drv)
                       for drv in range(n_drivers))
        ok = ok and calls == len(seen) and sorted(js) == want and in_order
    return ok


def _inject_faults(api, faults: dict, n: int, nodes: list, seed: int, scale: float, t0: float,
                   finished: Callable[[float], bool], extra: list = ()) -> list:
    """Carry out [faults] on the real cluster while the workload runs (times x real_time_scale);
    ``finished(timeout)`` waits at most ``timeout`` seconds for the workload to end and says
    whether it has.

    Node k of the config is node k % n here (core.faults.real_node); none is node 0, which
    holds the driver's connection (run_real has checked: core.faults.check_real_node_failures,
    and random kills spare it). A kill of a node already dead is skipped (and logged). Restored nodes come back as new nodes. A GCS
    replica failure kills the chain member at that position (0 the head, -1 the tail) with
    tb.kill_gcs_replica; one the chain cannot lose then (its replacement has not joined yet)
    is skipped and logged. ``extra`` are more events at their times: (t, "link_bandwidth",
    (node, bytes/s)) changes a node's emulated link (cluster.bandwidth_changes). Returns
    [(time, action, node or (shard, replica) or (node, bytes/s))].
    """
    events = list(extra)
    for f in faults["gcs_replica_failures"]:
        events.append((f["at_s"] * scale, "gcs_kill", (f["shard"], f["replica"])))
    for f in faults["node_failures"]:
        events.append((f["at_s"] * scale, "kill_node", real_node(f["node"], n)))
    for f in faults["worker_failures"]:
        events.append((f["at_s"] * scale, "kill_worker", f["node"] % n))
    for f in faults["node_additions"]:
        res = {"CPU": f["cpus"], "GPU": f["gpus"], **f["resources"]}
        events.append((f["at_s"] * scale, "add_node", {k: v for k, v in res.items() if v}))
    rng = random_kill_rng(seed)
    every = faults["kill_every_s"] * scale
    if not events and every <= 0:
        return []
    c = api._driver_cluster()
    alive = set(range(n))
    #: resources of every node index (restored and added nodes get new indices)
    res_of = {i: dict(nodes[i]) for i in range(n)}
    log = []
    next_random = every if every > 0 else math.inf
    events.sort(key=lambda e: e[0])
    while True:
        upcoming = events[0][0] if events else math.inf
        due = min(upcoming, next_random)
        if due == math.inf:
            break
        if finished(max(0.0, t0 + due - time.time())):
            break                               # the workload finished first
        now = time.time() - t0
        if due == next_random:
            next_random += every
            k = random_victim(alive, faults["min_live_nodes"], rng, protected=RANDOM_KILL_PROTECTED)
            if k is not None:
                events.append((now, "kill_node", k))
                if faults["restore_after_s"] > 0:
                    events.append((now + faults["restore_after_s"] * scale, "add_node", dict(res_of[k])))
                events.sort(key=lambda e: e[0])
            continue
        _, action, arg = events.pop(0)
        if action == "kill_node":
            if arg not in alive:
                log.append((now, "skipped_kill", arg))
                continue
            alive.discard(arg)
            c.command(cmd="kill_node", index=arg)
            if faults["restore_after_s"] > 0 and every <= 0:
                events.append((now + faults["restore_after_s"] * scale, "add_node", dict(res_of[arg])))
                events.sort(key=lambda e: e[0])
        elif action == "gcs_kill":
            try:
                api.kill_gcs_replica(*arg)
            except ValueError:
                log.append((now, "skipped_gcs_kill", arg))
                continue
        elif action == "kill_worker":
            c.command(cmd="kill_worker", index=arg)
        elif action == "link_bandwidth":
            api._set_link_bandwidth(*arg)
        elif action == "add_node":
            index = len(c.config["nodes"])
            c.config["nodes"].append(arg)
            c.command(cmd="add_node", resources=arg)
            alive.add(index)
            res_of[index] = dict(arg)
            arg = index
        log.append((now, action, arg))
    return log


def records_to_trace(rows: list[tuple], exclude: tuple[str, ...] = (), t0: float | None = None) -> pd.DataFrame:
    """Node managers' rows -> a Trace (the simulator's columns; seconds from ``t0``, the run's
    start in wall-clock seconds, or by default from the first submission)."""
    import pandas as pd

    from ..core.trace import COLUMNS, NAMES
    from .api import RECORD_COLUMNS
    recs = [x for x in (dict(zip(RECORD_COLUMNS, r)) for r in rows) if not str(x["function"]).startswith(exclude)]
    if not recs:
        return pd.DataFrame({k: pd.Series(dtype=v[0]) for k, v in COLUMNS.items()})
    if t0 is None:
        t0 = min(x["submitted_s"] for x in recs)
    ids = {x["task_id"]: i for i, x in enumerate(sorted(recs, key=lambda x: (x["submitted_s"], x["task_id"])))}
    out = {k: [] for k in NAMES}
    for x in recs:
        out["task_id"].append(ids[x["task_id"]])
        out["job_id"].append(int(x["job_id"]) if x["job_id"] is not None else -1)
        out["function"].append(x["function"])
        out["submitter"].append(int(x["submitter"]))
        out["node"].append(int(x["node"]))
        for k in ("submitted_s", "placed_s", "started_s", "finished_s"):
            v = x[k]
            out[k].append(v - t0 if v is not None and not (isinstance(v, float) and math.isnan(v)) else math.nan)
        out["spilled"].append(bool(x["spilled"]))
        out["predicted_wait_s"].append(float(x["predicted_wait_s"]) if x["predicted_wait_s"] is not None else math.nan)
        out["bytes_transferred"].append(int(x["bytes_transferred"]))
        out["attempt"].append(int(x["attempt"]))
        out["state"].append(x["state"])
    df = pd.DataFrame({k: np.asarray(v, dtype=COLUMNS[k][0]) for k, v in out.items()}, columns=list(NAMES))
    return df.sort_values("task_id", kind="stable").reset_index(drop=True)
