"""Run an experiment config on the real runtime (``run.engine = "real"``).

    testbed run ... --set run.engine=real
      -> tb.init(): run.real_nodes logical nodes of [cluster]'s shape, the [scheduler] policies
      -> one driver actor per workload driver, pinned to its node; driver d takes jobs
         d, d + D, d + 2D, ... and submits them as the workload says (closed loop with
         in_flight jobs outstanding, or Poisson arrivals), each task a real task that sleeps
         (or spins) for its drawn duration x run.real_time_scale x its node's slowdown and
         returns an object of its drawn size; inputs are the refs of its dependencies
      -> every node's task rows -> a Trace with the simulator's columns (seconds from the start)

The machine has 2 cores, so the cluster is scaled down by [run] keys: ``real_nodes``,
``real_cpus_per_node``, ``real_max_jobs``, ``real_time_scale``; ``config.toml`` records them.
Open (Poisson) arrivals are stretched by the ratio of CPUs, so each CPU sees the offered
load it had in the simulated cluster; the slow nodes keep their share of the cluster.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from ..core.faults import random_victim
from ..core.trace import COLUMNS, NAMES, metrics_from_trace
from ..workloads import Workload, parse_workload
from ..workloads.generator import job_deps


def _work(duration_s: float, out_bytes: int, mode: str, slowdown: list, *inputs):
    """A workload task: compute for ``duration_s`` (x this node's slowdown), return ``out_bytes``."""
    from . import api
    node = api._worker_core.node if api._worker_core is not None else 0
    d = duration_s * (slowdown[node] if node < len(slowdown) else 1.0)
    if mode == "spin":
        end = time.perf_counter() + d
        while time.perf_counter() < end:
            pass
    elif d > 0:
        time.sleep(d)
    return np.zeros(int(out_bytes), np.uint8) if out_bytes > 0 else None


class _Driver:
    """One workload driver, living on its node (an actor pinned there)."""

    def run(self, d: int, n_drivers: int, total: int, wl_table: dict, seed: int, mode: str, scale: float,
            gap_scale: float, slowdown: list, max_retries: int, t0: float) -> int:
        from . import api
        wl = Workload(parse_workload(wl_table), seed)
        deps = job_deps(wl.spec)
        sinks = [i for i in range(len(deps)) if not any(i in dd for dd in deps)]
        work = api.remote(_work)
        mine = list(range(d, total, n_drivers))
        outstanding: list = []      # sink refs of jobs in flight
        submitted = 0

        def submit(j: int) -> list:
            job = wl.job(j, d, time.time() - t0)
            refs = []
            for t in job.tasks:
                res = dict(t.resources)
                fn = work.options(name=t.function, num_cpus=res.pop("CPU", 0), num_gpus=res.pop("GPU", None),
                                  resources=res or None, _job_id=j, max_retries=max_retries)
                refs.append(fn.remote(t.duration_s * scale, t.output_bytes, mode, slowdown,
                                      *[refs[k] for k in t.deps]))
            return [refs[k] for k in sinks]

        if wl.arrival == "closed":
            while submitted < len(mine) or outstanding:
                while submitted < len(mine) and len(outstanding) < wl.in_flight:
                    outstanding.append(submit(mine[submitted]))
                    submitted += 1
                firsts = [job[0] for job in outstanding]
                ready, _ = api.wait(firsts, num_returns=1)
                done = ready[0]
                k = firsts.index(done)
                api.get(outstanding[k])          # the job's every sink
                outstanding.pop(k)
        else:
            next_t = time.time()
            all_sinks = []
            for j in mine:
                next_t += wl.next_arrival_gap(d) * gap_scale
                pause = next_t - time.time()
                if pause > 0:
                    time.sleep(pause)             # the open arrival process: submit at its times
                all_sinks.extend(submit(j))
            if all_sinks:
                api.wait(all_sinks, num_returns=len(all_sinks))
        return len(mine)


def run_real(cfg: dict, seed: int):
    """Run ``cfg`` once on a fresh local cluster; returns (Trace DataFrame, metrics, info)."""
    from . import api
    c, r, sched = cfg["cluster"], cfg["run"], cfg["scheduler"]
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
    total = min(wl_table["jobs"], r["real_max_jobs"])
    wl_table["jobs"] = total
    n_drivers = wl_table["drivers"]
    driver_nodes = list(wl_table.get("driver_nodes") or [])
    if driver_nodes:
        driver_nodes = [x % n for x in driver_nodes]
    else:
        driver_nodes = [i * n // n_drivers for i in range(n_drivers)]
    wl_table["driver_nodes"] = []
    t_start = time.time()
    api.init(nodes=real_nodes, placement=sched["placement"], spillover=sched["spillover"],
             task_time=sched["task_time"], task_time_key=sched["task_time_key"], bandwidth=sched["bandwidth"],
             bandwidth_key=sched["bandwidth_key"], gcs_shards=c["gcs_shards"],
             heartbeat_interval_s=c["heartbeat_interval_s"], object_store_bytes=int(min(c["object_store_bytes"], 1 << 30)),
             link_bandwidth_bytes_per_s=c["bandwidth_bytes_per_s"], link_latency_s=c["latency_s"],
             lineage=cfg["faults"]["lineage"],
             num_heartbeats_timeout=c["num_heartbeats_timeout"])
    try:
        init_s = time.time() - t_start
        Driver = api.remote(_Driver)
        drivers = [Driver.options(_node=driver_nodes[d]).remote() for d in range(n_drivers)]
        t0 = time.time()
        # open arrivals keep the simulated offered load per CPU: the real cluster is smaller
        cpu_ratio = sum(x.get("CPU", 0.0) for x in real_nodes) / max(1e-9, sum(x.get("CPU", 0.0) for x in nodes))
        gap_scale = r["real_time_scale"] / cpu_ratio
        runs = [drv.run.remote(d, n_drivers, total, wl_table, seed, r["real_work"], r["real_time_scale"],
                               gap_scale, slowdown, cfg["faults"]["max_retries"], t0) for d, drv in enumerate(drivers)]
        fault_log = _inject_faults(api, cfg["faults"], n, real_nodes, seed, r["real_time_scale"], t0, runs)
        jobs_done = sum(api.get(runs))       # each driver returns the jobs it saw through
        wall = time.time() - t0
        rows = api.task_records()
    finally:
        api.shutdown()
    df = records_to_trace(rows, exclude=("_Driver.", "_Driver"))
    metrics = metrics_from_trace(df)
    info = {"wall_s": wall, "init_s": init_s, "nodes": n, "jobs": total, "jobs_done": jobs_done,
            "nodes_killed": sum(1 for f in fault_log if f[1] == "kill_node"),
            "nodes_added": sum(1 for f in fault_log if f[1] == "add_node"),
            "reexecuted": int((df.attempt > 1).sum()) if len(df) else 0,
            "complete": jobs_done == total}
    return df, metrics, info


def _inject_faults(api, faults: dict, n: int, nodes: list, seed: int, scale: float, t0: float, runs) -> list:
    """Carry out [faults] on the real cluster while the drivers run (times x real_time_scale).

    Node k of the config is node k % n here; node 0 holds the driver's connection, so a
    failure of node 0 is skipped (and logged). Restored nodes come back as new nodes.
    Returns [(time, action, node)].
    """
    events = []
    for f in faults["node_failures"]:
        events.append((f["at_s"] * scale, "kill_node", f["node"] % n))
    for f in faults["worker_failures"]:
        events.append((f["at_s"] * scale, "kill_worker", f["node"] % n))
    for f in faults["node_additions"]:
        res = {"CPU": f["cpus"], "GPU": f["gpus"], **f["resources"]}
        events.append((f["at_s"] * scale, "add_node", {k: v for k, v in res.items() if v}))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xFA17]))
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
        wait_s = max(0.0, t0 + due - time.time())
        ready, _ = api.wait(runs, num_returns=len(runs), timeout=wait_s)
        if len(ready) == len(runs):
            break                               # the workload finished first
        now = time.time() - t0
        if due == next_random:
            next_random += every
            k = random_victim(alive, faults["min_live_nodes"], rng, protected={0})   # node 0: the driver's
            if k is not None:
                events.append((now, "kill_node", k))
                if faults["restore_after_s"] > 0:
                    events.append((now + faults["restore_after_s"] * scale, "add_node", dict(res_of[k])))
                events.sort(key=lambda e: e[0])
            continue
        _, action, arg = events.pop(0)
        if action == "kill_node":
            if arg == 0 or arg not in alive:
                log.append((now, "skipped_kill", arg))
                continue
            alive.discard(arg)
            c.command(cmd="kill_node", index=arg)
            if faults["restore_after_s"] > 0 and every <= 0:
                events.append((now + faults["restore_after_s"] * scale, "add_node", dict(res_of[arg])))
                events.sort(key=lambda e: e[0])
        elif action == "kill_worker":
            c.command(cmd="kill_worker", index=arg)
        elif action == "add_node":
            index = len(c.config["nodes"])
            c.config["nodes"].append(arg)
            c.command(cmd="add_node", resources=arg)
            alive.add(index)
            res_of[index] = dict(arg)
            arg = index
        log.append((now, action, arg))
    return log


def records_to_trace(rows: list[tuple], exclude: tuple[str, ...] = ()) -> pd.DataFrame:
    """Node managers' rows -> a Trace (the simulator's columns; seconds from the first submission)."""
    from .api import RECORD_COLUMNS
    recs = [dict(zip(RECORD_COLUMNS, r)) for r in rows if not str(r[2]).startswith(exclude)]
    if not recs:
        return pd.DataFrame({k: pd.Series(dtype=v[0]) for k, v in COLUMNS.items()})
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
