"""``testbed calibrate [--out FILE] [--nodes N] [--cpus-per-node C]``: measure the real runtime on
this machine and write the simulator's overhead parameters as a calibration file
(``cluster.calibration = "FILE"``).

Four clusters (``tb.init``), each measured from the runtime's own task records
(``submitted / placed / started / finished`` per attempt, with the worker's pid), the GCS
client, and the node table's heartbeats — no new instrumentation:

  A. one node, local scheduling, sleep tasks of ``TASK_S`` at 1, 2 and 4 jobs in flight
     (idle slot, both slots busy, a queue): local decision, dispatch, per-task slot overhead,
     duration inflation, result return, worker start; then heartbeat age and estimator
     report delay (the driver polls the node table); then GCS read and write times.
  B. two nodes, every task forwarded (AlwaysGlobal), at 1 and 4 in flight: global decision;
     object transfers without an emulated link.
  C. two nodes with an emulated link (``LINK_BPS``, ``LINK_LATENCY_S``): object transfers.
  D. the runs the calibration is for: ``NODES`` x ``CPUS_PER_NODE`` (experiments/validate_sim.toml's
     cluster and policies), ``LOADED_DRIVERS`` workload drivers — the real engine's own driver
     actors — sending Poisson arrivals of exponential tasks at each offered load of ``LOADED``
     (0.3, 0.6, 0.85 of the CPUs) for ``LOADED_WINDOW_S``: per-task slot overhead, duration
     inflation, local and global decisions, heartbeat age under load, and result return from a
     probe task the calibrating driver takes every ``PROBE_S``. On 2 cores these clusters'
     processes share the machine as the validation's real runs do, so their overheads are
     those of a loaded machine, not of an idle one.

The file has two sections. ``[cluster]`` holds only [cluster] keys (what a config's
calibration fills in). The rule for a value: a key phase D measures (task_overhead_s,
duration_inflation_s, local/global_decision_s, result_return_s, heartbeat_delay_s) takes its
mean over the loads, each load weighted by its arrival rate (``BY_LOAD``; see there why); the
others the mean of phase A/B at the level their meta names (the median for ``latency_s``). ``[meta.<key>]`` says how
each value was measured, ``value_from`` (the level used) and the spread per level — n, mean,
median, p10, p90 (seconds) under ``in_flight_<k>`` (phases A, B) and ``load_<rho>`` (phase D).
``[meta.transfer]`` holds transfer times by size, ``[meta.loaded]`` what phase D ran, and
``[meta.run]`` when, where, how long and the load average before and after. A measured quantity
the simulator has no [cluster] key for yet is in ``[meta]`` only (``in_schema = false``).
"""
from __future__ import annotations

import math
import os
import platform
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import tomli_w

from ..core.config import CLUSTER, default
from ..core.errors import TestbedError

#: drawn duration of the calibration tasks, seconds (sleep)
TASK_S = 0.005
#: tasks per load level
TASKS_PER_LOAD = 150
#: jobs kept in flight: one idle slot, both slots busy, a queue of two
LOADS = (1, 2, 4)
#: reads / writes per GCS measurement
GCS_N = 400
#: object sizes for transfers, bytes, and repetitions per size
SIZES = (1_000, 100_000, 1_000_000, 10_000_000)
TRANSFER_REPS = 8
#: the emulated link of cluster C
LINK_BPS = 1e9
LINK_LATENCY_S = 1e-3
#: phase D: the cluster of experiments/validate_sim.toml (``--nodes``, ``--cpus-per-node``)
NODES = 4
CPUS_PER_NODE = 2
#: phase D: offered loads (fraction of the cluster's CPUs), as validate_sim's open-arrival cases
LOADED = (0.3, 0.6, 0.85)
#: phase D: workload drivers, mean task duration (exponential, seconds), its policies and
#: heartbeat interval — validate_sim.toml's
LOADED_DRIVERS = 2
LOADED_MEAN_S = 0.02
LOADED_PLACEMENT = "PaperWaitTime"
LOADED_SPILLOVER = {"name": "QueueThreshold", "threshold": 2}
HEARTBEAT_S = 0.1
#: phase D: seconds of arrivals per load, and of the warm-up before them (workers, estimators)
LOADED_WINDOW_S = 4.0
LOADED_WARMUP_S = 1.0
#: phase D: a probe task (result return) every this many seconds; heartbeats are read from
#: HB_EARLY_S before a node's expected beat until HB_GIVE_UP_S after it, a window at most every
#: HB_GAP_S (so the calibrating driver's reads stay a small load)
PROBE_S = 0.05
HB_EARLY_S = 0.006
HB_GIVE_UP_S = 0.02
HB_GAP_S = 0.08


class CalibrationError(TestbedError):
    pass


def in_flight(k: int) -> str:
    """The label of a measurement with ``k`` jobs kept in flight (phases A, B)."""
    return f"in_flight_{k}"


def at_load(rho: float) -> str:
    """The label of a measurement under Poisson arrivals offering ``rho`` of the CPUs (phase D)."""
    return f"load_{rho:g}"


def _stats(xs) -> dict:
    a = np.asarray([x for x in xs if x == x], dtype=float)
    if not len(a):
        return {"n": 0}
    return {"n": int(len(a)), "mean": float(a.mean()), "median": float(np.median(a)),
            "p10": float(np.percentile(a, 10)), "p90": float(np.percentile(a, 90))}


def _rows(since: float, until: float, function: str | None = None) -> list[dict]:
    from ..real.api import RECORD_COLUMNS, task_records
    rows = [dict(zip(RECORD_COLUMNS, r)) for r in task_records()]
    return [r for r in rows if since <= r["submitted_s"] <= until and r["state"] == "finished"
            and (function is None or r["function"].rsplit(".", 1)[-1] == function)]


def _keep_in_flight(tb, f, k: int, n: int, seen: list | None = None) -> tuple[float, float]:
    """Run n calls of f, k in flight (tb.wait); with ``seen``, append (ref index, when the driver
    had the result) for k = 1. Returns the window (start, end) in wall-clock seconds."""
    t0 = time.time()
    if k == 1 and seen is not None:
        for _ in range(n):
            ref = f.remote(TASK_S)
            tb.get(ref)
            seen.append(time.time())
        return t0, time.time()
    pending = [f.remote(TASK_S) for _ in range(k)]
    left = n - k
    while pending:
        done, pending = tb.wait(pending, num_returns=1)
        tb.get(done)
        if left > 0:
            pending.append(f.remote(TASK_S))
            left -= 1
    return t0, time.time()


def _slot_gaps(rows: list[dict]) -> list[float]:
    """Per worker: started(i+1) - finished(i) when task i+1 was already waiting (placed before
    task i finished) — the slot's turnaround between two tasks."""
    by_pid: dict = {}
    for r in rows:
        by_pid.setdefault(r["pid"], []).append(r)
    gaps = []
    for rs in by_pid.values():
        rs.sort(key=lambda r: r["started_s"])
        for a, b in zip(rs, rs[1:]):
            if b["placed_s"] <= a["finished_s"]:
                gaps.append(b["started_s"] - a["finished_s"])
    return gaps


def _phase_local(tb, meas: dict) -> None:
    from ..real.api import _gcs_client
    t_ready = time.time()

    @tb.remote
    def calib_task(d):
        time.sleep(d)

    first = calib_task.remote(TASK_S)
    tb.get(first)
    first_row = _rows(t_ready, time.time())
    tb.get([calib_task.remote(TASK_S) for _ in range(40)])            # warm-up
    for k in LOADS:
        seen: list[float] = []
        a, b = _keep_in_flight(tb, calib_task, k, TASKS_PER_LOAD, seen)
        rows = sorted(_rows(a, b), key=lambda r: r["submitted_s"])
        local = [r for r in rows if not r["spilled"]]
        lbl = in_flight(k)
        meas.setdefault("local_decision_s", {})[lbl] = [r["placed_s"] - r["submitted_s"] for r in local]
        meas.setdefault("dispatch_s", {})[lbl] = [r["started_s"] - r["placed_s"] for r in local
                                                  if k == 1 or r["placed_s"] >= r["submitted_s"]]
        meas.setdefault("duration_inflation_s", {})[lbl] = [r["finished_s"] - r["started_s"] - TASK_S for r in rows]
        meas.setdefault("task_overhead_s", {})[lbl] = _slot_gaps(rows) if k > 1 else \
            [r["started_s"] - r["placed_s"] for r in rows]
        if seen and len(seen) == len(rows):
            meas.setdefault("result_return_s", {})[lbl] = [s - r["finished_s"] for s, r in zip(seen, rows)]
    if first_row:
        r = first_row[0]
        base = float(np.median(meas["dispatch_s"][in_flight(1)]))
        meas["worker_start_s"] = {in_flight(1): [max(0.0, (r["started_s"] - r["placed_s"]) - base)]}

    # heartbeats: the driver polls the node table; each new heartbeat's age when seen, and
    # for each task the time from its end to the first heartbeat of its node sent after it
    node_id = tb.nodes()[0]["NodeID"]
    g = _gcs_client()
    try:
        t_a = time.time()
        refs = [calib_task.remote(TASK_S * 2) for _ in range(120)]
        beats: list[tuple[float, float]] = []
        last = None
        end = None
        while end is None or time.time() < end:
            info = g.read("node", node_id)
            now = time.time()
            if info and info.get("time") != last:
                last = info["time"]
                beats.append((now, last))
            if end is None and len(tb.wait(refs, num_returns=len(refs), timeout=0)[0]) == len(refs):
                end = now + 0.25       # two more heartbeats after the last task
        tb.get(refs)
        rows = _rows(t_a, time.time())
        ages = [seen - sent for seen, sent in beats[1:]]      # the first may have been waiting
        delays = []
        for r in rows:
            nxt = next((seen for seen, sent in beats if sent >= r["finished_s"]), None)
            if nxt is not None:
                delays.append(nxt - r["finished_s"])
        meas.setdefault("heartbeat_delay_s", {})[in_flight(2)] = ages
        meas["estimator_report_delay_s"] = {in_flight(2): delays}

        # GCS: round trips of single reads and writes, and bursts (service time per request)
        key = b"calibrate"
        g.write("calibrate", key, b"x" * 64)
        rt_r, rt_w = [], []
        for _ in range(GCS_N):
            s = time.perf_counter()
            g.read("calibrate", key)
            rt_r.append(time.perf_counter() - s)
        for _ in range(GCS_N):
            s = time.perf_counter()
            g.write("calibrate", key, b"x" * 64)
            rt_w.append(time.perf_counter() - s)
        bursts_r, bursts_w = [], []
        for _ in range(5):
            s = time.perf_counter()
            g.burst("read", "calibrate", key, GCS_N)
            bursts_r.append((time.perf_counter() - s) / GCS_N)
            s = time.perf_counter()
            g.burst("write", "calibrate", key, GCS_N, b"x" * 64)
            bursts_w.append((time.perf_counter() - s) / GCS_N)
    finally:
        g.close()
    # a burst of reads is bound by the client on 2 cores when it takes longer per read than a
    # whole round trip: then the read's service time is at most half the round trip
    rtt = float(np.median(rt_r))
    svc_r = min(float(np.median(bursts_r)), rtt / 2)
    one = in_flight(1)
    meas["gcs_read_s"] = {one: [min(x, rtt / 2) for x in bursts_r]}
    meas["gcs_write_s"] = {one: bursts_w}
    meas["gcs_read_burst_s"] = {one: bursts_r}
    meas["gcs_read_round_trip_s"] = {one: rt_r}
    meas["gcs_write_round_trip_s"] = {one: rt_w}
    meas["latency_s"] = {one: [(x - svc_r) / 2 for x in rt_r]}


def _transfers(tb, label: str, meas: dict) -> None:
    from ..real.errors import TestbedRuntimeError
    """A producer on node 0, its consumer on node 1, one pair at a time: from the producer's end
    to the consumer's start (the object's location lookup and fetch; the consumer was placed
    before its input existed). ``fetch_s`` is that less the same for an inline 1 KB object."""
    @tb.remote(resources={"n0": 0.01})
    def calib_make(n):
        return np.ones(n, dtype=np.uint8)

    @tb.remote(resources={"n1": 0.01})
    def calib_use(x):
        return None

    tb.get([calib_use.remote(calib_make.remote(1000)) for _ in range(4)])     # warm-up
    out = {}
    base = None
    for size in SIZES:
        t0 = time.time()
        failed = []
        for _ in range(TRANSFER_REPS):
            x = calib_make.remote(size)
            try:
                tb.get(calib_use.remote(x))
            except TestbedRuntimeError as exc:      # a runtime failure is recorded, not fatal
                failed.append(str(exc).splitlines()[0][:200])
        rows = _rows(t0, time.time())
        made = sorted((r for r in rows if r["function"].endswith("calib_make")), key=lambda r: r["submitted_s"])
        used = sorted((r for r in rows if r["function"].endswith("calib_use")), key=lambda r: r["submitted_s"])
        gaps = [u["started_s"] - m["finished_s"] for m, u in zip(made, used)]
        st = _stats(gaps)
        st["failed"] = len(failed)
        if failed:
            st["first_failure"] = failed[0]
        st["bytes_transferred"] = int(np.median([u["bytes_transferred"] for u in used])) if used else 0
        if base is None:
            base = st.get("median", float("nan"))
        if "median" in st:
            st["fetch_s"] = st["median"] - base
        out[str(size)] = st
    meas.setdefault("transfer", {})[label] = out


def _phase_global(tb, meas: dict) -> None:
    @tb.remote
    def calib_task(d):
        time.sleep(d)

    tb.get([calib_task.remote(TASK_S) for _ in range(40)])
    for k in (1, 4):
        a, b = _keep_in_flight(tb, calib_task, k, TASKS_PER_LOAD)
        rows = [r for r in _rows(a, b) if r["spilled"]]
        meas.setdefault("forwarded_decision_s", {})[in_flight(k)] = [r["placed_s"] - r["submitted_s"] for r in rows]
    _transfers(tb, "no_link", meas)


def slot_waits(rows: list[dict]) -> tuple[list[float], list[float]]:
    """Per worker (pid), in start order: started - max(placed, the worker's previous finish),
    the time a task held a free slot before it ran — the simulator's ``task_overhead_s``, which
    holds the slot from the moment both the task and a slot are there. Returns (tasks that found
    the worker idle: placed -> started; tasks that waited for it: the slot's turnaround)."""
    idle, queued = [], []
    by_pid: dict = {}
    for r in rows:
        by_pid.setdefault(r["pid"], []).append(r)
    for rs in by_pid.values():
        rs.sort(key=lambda r: r["started_s"])
        prev = -math.inf
        for r in rs:
            if r["placed_s"] >= prev:
                idle.append(r["started_s"] - r["placed_s"])
            else:
                queued.append(r["started_s"] - prev)
            prev = r["finished_s"]
    return idle, queued


def server_times(arrivals: list[float], departures: list[float]) -> list[float]:
    """Service times of a single FIFO server from each job's arrival and departure: departure -
    max(arrival, the previous departure) — what the job took once the server was free for it,
    not its wait in the server's queue (the simulator models that queue itself)."""
    out = []
    prev = -math.inf
    for a, d in sorted(zip(arrivals, departures), key=lambda x: x[1]):
        out.append(d - max(a, prev))
        prev = d
    return out


def derive_loaded(rows: list[dict], drawn: dict[int, float], probes: list[dict], seen: list[float],
                  ages: list[float], hop: float = 0.0) -> dict[str, list[float]]:
    """One load level's measurements from the runtime's records. ``rows``: the workload's
    finished tasks (job_id -> its drawn duration in ``drawn``); ``probes``: the probe tasks the
    calibrating driver got one at a time, with ``seen`` the times it had each result (in
    submission order); ``ages``: heartbeat ages seen; ``hop``: one message hop (latency_s).
    Seconds. ``global_service_s``: the global scheduler's time per decision (one FIFO server,
    :func:`server_times`; a forwarded task reaches it the mean local decision and one hop after
    its submission, and its node records it as placed one hop after the decision; its estimated
    arrival makes single values noisy, even negative, not their mean); result returns are made net
    of the GCS write by :func:`to_table`."""
    idle, queued = slot_waits(rows)
    local = [r for r in rows if not r["spilled"]]
    spilled = [r for r in rows if r["spilled"]]
    probes = sorted(probes, key=lambda r: r["submitted_s"])
    ldec = float(np.mean([r["placed_s"] - r["submitted_s"] for r in local])) if local else 0.0
    out = {
        "task_overhead_s": idle + queued,
        "slot_idle_s": idle,
        "slot_turnaround_s": queued,
        "duration_inflation_s": [r["finished_s"] - r["started_s"] - drawn[r["job_id"]] for r in rows
                                 if r["job_id"] in drawn],
        "local_decision_s": [r["placed_s"] - r["submitted_s"] for r in local],
        "forwarded_decision_s": [r["placed_s"] - r["submitted_s"] for r in spilled],
        "global_service_s": server_times([r["submitted_s"] + ldec + hop for r in spilled],
                                         [r["placed_s"] - hop for r in spilled]),
        "heartbeat_delay_s": list(ages),
        "queue_delay_s": [r["started_s"] - r["placed_s"] for r in rows],
    }
    if len(probes) == len(seen):
        out["result_return_s"] = [s - r["finished_s"] for s, r in zip(seen, probes)]
    return out


def poisson_rate(rho: float, nodes: int, cpus_per_node: float, drivers: int, mean_s: float) -> float:
    """Jobs per second per driver that offer ``rho`` of the cluster's CPUs (one-CPU tasks of
    mean ``mean_s``): as experiments/validate_sim.toml's cases (0.3 of 8 CPUs: 60/s x 2)."""
    return rho * nodes * cpus_per_node / (drivers * mean_s)


def _watch_beats(g, node_id: str, interval: float, stop, ages: list, dropped: dict) -> None:
    """Until ``stop`` is set, the heartbeats of one node: read the node table back to back from
    HB_EARLY_S before its next expected beat until a new one shows; its age is when it was seen
    - the time the node stamped on it. A window whose first read already shows the beat started
    too late (``dropped["late"]``), one that sees none gave up (``dropped["missed"]``)."""
    info = g.read("node", node_id)
    last = info.get("time", 0.0) if info else 0.0

    def expected(after: float) -> float:
        return last + max(1, math.ceil((after - last) / interval)) * interval

    beat_at = expected(time.time() + HB_EARLY_S)
    while not stop.is_set():
        pause = beat_at - HB_EARLY_S - time.time()
        if pause > 0 and stop.wait(pause):
            break
        first = True
        while True:
            info = g.read("node", node_id)
            t = time.time()
            stamp = info.get("time") if info else None
            if stamp is not None and stamp != last:
                last = stamp
                if stamp > beat_at - interval / 2:      # the beat waited for, not an older one
                    if first:
                        dropped["late"] += 1
                    else:
                        ages.append(t - stamp)
                break
            first = False
            if t > beat_at + HB_GIVE_UP_S:
                dropped["missed"] += 1
                break
        beat_at = expected(time.time() + HB_EARLY_S)


def _watch(tb, node_id: str, runs: list, calib_probe, interval: float):
    """While the drivers' ``runs`` go on: every PROBE_S a probe task, taken with tb.get (the
    times the driver had its result), and, in a thread with its own GCS client, the heartbeats
    of node ``node_id`` (:func:`_watch_beats`). Returns (probe result times, heartbeat ages,
    {"late": .., "missed": ..} heartbeat windows dropped)."""
    from ..real.api import _gcs_client
    seen, ages = [], []
    dropped = {"late": 0, "missed": 0}
    stop = threading.Event()
    g = _gcs_client()
    beats = threading.Thread(target=_watch_beats, args=(g, node_id, interval, stop, ages, dropped),
                             name="calibrate-heartbeats", daemon=True)
    beats.start()
    try:
        next_probe = time.time() + PROBE_S
        while len(tb.wait(runs, num_returns=len(runs), timeout=max(0.0, next_probe - time.time()))[0]) < len(runs):
            if time.time() >= next_probe:
                tb.get(calib_probe.remote())
                seen.append(time.time())
                next_probe = max(next_probe + PROBE_S, time.time())
    finally:
        stop.set()
        beats.join()
        g.close()
    return seen, ages, dropped


def _phase_loaded(tb, meas: dict, nodes: int, cpus_per_node: float, progress=print) -> None:
    """Phase D: the cluster and workload of the validation's open-arrival cases — ``nodes`` x
    ``cpus_per_node``, LOADED_DRIVERS workload drivers (the real engine's own driver actors,
    pinned as the engine pins them), Poisson arrivals of exponential tasks (mean LOADED_MEAN_S)
    at each of LOADED for LOADED_WINDOW_S seconds, after a warm-up."""
    from ..core.faults import driver_nodes
    from ..real.engine import _Driver
    from ..workloads import Workload, parse_workload

    @tb.remote
    def calib_probe():
        return None

    Driver = tb.remote(_Driver)
    drivers = [Driver.options(_node=m).remote() for m in driver_nodes((), LOADED_DRIVERS, nodes)]
    # heartbeats of the last node (without a driver when there are more nodes than drivers)
    watched = max(tb.nodes(), key=lambda n: n["Index"])["NodeID"]
    cpus = nodes * cpus_per_node
    retries = default("faults", "max_retries")
    hop = float(np.median(meas["latency_s"][in_flight(1)])) if meas.get("latency_s") else 0.0
    for i, rho in enumerate((LOADED[0], *LOADED)):
        warm = i == 0
        rate = poisson_rate(rho, nodes, cpus_per_node, LOADED_DRIVERS, LOADED_MEAN_S)
        window = LOADED_WARMUP_S if warm else LOADED_WINDOW_S
        jobs = max(LOADED_DRIVERS, int(round(rate * LOADED_DRIVERS * window)))
        wl_table = {"shape": "independent", "arrival": "poisson", "drivers": LOADED_DRIVERS, "jobs": jobs,
                    "rate_per_s": rate, "duration": {"dist": "exponential", "mean": LOADED_MEAN_S}}
        wl = Workload(parse_workload(wl_table), i)
        if not warm:
            progress(f"calibrate:   load {rho:g} ({jobs} jobs, {rate * LOADED_DRIVERS:.0f}/s) ...")
        a = time.time()
        runs = [drv.run.remote(d, LOADED_DRIVERS, jobs, wl_table, i, "sleep", 1.0, 1.0, [1.0] * nodes, retries, a)
                for d, drv in enumerate(drivers)]
        seen, ages, dropped = _watch(tb, watched, runs, calib_probe, HEARTBEAT_S)
        tb.get(runs)
        b = time.time()
        if warm:
            continue
        rows = _rows(a, b)
        work = [r for r in rows if r["function"] in wl.functions]
        drawn = {j: wl.job(j, 0, 0.0).tasks[0].duration_s for j in range(jobs)}
        got = derive_loaded(work, drawn, [r for r in rows if r["function"].endswith("calib_probe")], seen, ages,
                            hop)
        for key, xs in got.items():
            meas.setdefault(key, {})[at_load(rho)] = xs
        span = max((r["finished_s"] for r in work), default=b) - a
        busy = sum(r["finished_s"] - r["started_s"] for r in work)
        meas.setdefault("loaded", {})[at_load(rho)] = {
            "jobs": jobs, "finished": len(work), "rate_per_s": rate * LOADED_DRIVERS,
            "busy_fraction": busy / max(1e-9, span * cpus),
            "spilled_fraction": sum(bool(r["spilled"]) for r in work) / max(1, len(work)),
            "probes": len(seen), "heartbeats": len(ages),
            "heartbeat_windows_late": dropped["late"], "heartbeat_windows_missed": dropped["missed"]}


def measure(progress=print, nodes: int = NODES, cpus_per_node: float = CPUS_PER_NODE) -> dict:
    """Every measurement (see the module's docstring): key -> {label: [seconds]}, the label
    "in_flight_<k>" (phases A, B) or "load_<rho>" (phase D); "transfer" and "loaded" hold
    tables."""
    import testbed as tb
    meas: dict = {}
    phases = [
        ("one node, local scheduling", dict(num_cpus=2), _phase_local),
        ("two nodes, every task forwarded, no link",
         dict(nodes=[{"CPU": 2, "n0": 1}, {"CPU": 2, "n1": 1}], spillover="AlwaysGlobal"), _phase_global),
        (f"two nodes, emulated link {LINK_BPS:.0e} B/s + {LINK_LATENCY_S * 1e3:g} ms",
         dict(nodes=[{"CPU": 2, "n0": 1}, {"CPU": 2, "n1": 1}], link_bandwidth_bytes_per_s=LINK_BPS,
              link_latency_s=LINK_LATENCY_S), lambda tb, m: _transfers(tb, "link", m)),
        (f"{nodes} nodes x {cpus_per_node:g} CPUs, {LOADED_DRIVERS} drivers, Poisson arrivals at "
         f"{', '.join(f'{x:g}' for x in LOADED)} of the CPUs",
         dict(nodes=[{"CPU": float(cpus_per_node)}] * nodes, placement=LOADED_PLACEMENT,
              spillover=LOADED_SPILLOVER, heartbeat_interval_s=HEARTBEAT_S, seed=0),
         lambda tb, m: _phase_loaded(tb, m, nodes, cpus_per_node, progress)),
    ]
    for what, kwargs, fn in phases:
        progress(f"calibrate: {what} ...")
        tb.init(**kwargs, preload=[__name__])      # as the real engine: workers start with this module imported
        try:
            fn(tb, meas)
        finally:
            tb.shutdown()
    return meas


#: the value of a key phase D measures: its mean over the loads, each load's mean weighted by
#: the load (its arrival rate: with equal windows, the mean over every task of phase D). A
#: constant cannot follow the load, and the overhead grows with it (measured: 2-3x from 0.6 to
#: 0.85 of the CPUs) while a queue's delay is the more sensitive to it the higher the load; the
#: mean, not the median, is what a slot's utilisation depends on. [meta.KEY] keeps each load's
#: mean, so another rule (e.g. the middle load's) is one look away.
BY_LOAD = "loads, weighted by the load"
_LOADED_RULE = ("; the value is the mean over loads 0.3, 0.6, 0.85 (Poisson arrivals on the validation's "
                "cluster, phase D) weighted by the load; the in_flight_* entries are the small, idle clusters'")


def weighted_by_load(st: dict) -> float | None:
    """The mean over the ``load_<rho>`` entries of ``st`` (label -> stats) with samples, each
    weighted by rho; None if there is none."""
    pairs = [(float(k.removeprefix("load_")), v["mean"]) for k, v in st.items()
             if k.startswith("load_") and v.get("n")]
    if not pairs:
        return None
    return sum(w * m for w, m in pairs) / sum(w for w, _ in pairs)


#: [cluster] key -> (the label whose mean is the value, how it was measured)
METHODS = {
    "latency_s": (in_flight(1), "GCS read round trip (driver -> shard tail -> driver, 400 sequential reads), less "
                                "gcs_read_s, halved: one message hop (the value is the median, not the mean: rare "
                                "multi-ms wake-ups dominate the mean)"),
    "local_decision_s": (BY_LOAD, "task records: placed - submitted of tasks the local scheduler kept"
                         + _LOADED_RULE),
    "global_decision_s": (BY_LOAD, "task records of forwarded tasks. in_flight_* (AlwaysGlobal, 2 nodes): "
                          "placed - submitted, less local_decision_s at in_flight_1 and two hops (latency_s: "
                          "to the global scheduler and back to the chosen node, which records placed_s); "
                          "load_* (the tasks QueueThreshold spilled): the global scheduler as one FIFO server, "
                          "decided - max(arrival, the previous decision), decided = placed - one hop, arrival = "
                          "submitted + the load's mean local decision + one hop (its queue is the simulator's "
                          "to model)"
                          + _LOADED_RULE),
    "gcs_read_s": (in_flight(1), "400 reads of one key sent back to back, time per read (5 bursts), capped at half "
                                 "the read round trip (a burst slower than that is bound by the client, not the "
                                 "shard)"),
    "gcs_write_s": (in_flight(1), "400 writes of one key sent back to back, time per acknowledged write (5 bursts); "
                                  "a single blocking write's round trip is much longer (gcs_write_round_trip_s: the "
                                  "acknowledgement waits for the runtime's coalescing window)"),
    "task_overhead_s": (BY_LOAD, "task records, per worker pid: started - max(placed, the worker's "
                        "previous finish), the time a task holds a free slot before it runs (load_*: slot_idle_s "
                        "and slot_turnaround_s together; in_flight_4: turnarounds only; in_flight_1: placed -> "
                        "started)" + _LOADED_RULE),
    "duration_inflation_s": (BY_LOAD, "task records: finished - started - the drawn duration (in_flight_*: "
                             "sleep tasks of 5 ms; load_*: the workload's exponential draws)" + _LOADED_RULE),
    "result_return_s": (BY_LOAD, "the calibrating driver takes a task's result with tb.get (in_flight_1: "
                        "1 job in flight; load_*: a probe task every 50 ms beside the load): when tb.get returned "
                        "- the task's finished_s, less gcs_write_s (the simulator charges the object-table write "
                        "on its own); the raw time is result_seen_s" + _LOADED_RULE),
    "heartbeat_delay_s": (BY_LOAD, "the driver reads the node table back to back around a node's next "
                          "heartbeat: when it is first seen - the time the node stamped on it (includes up to one "
                          "read; load_*: the last node's, in windows around its expected beats)" + _LOADED_RULE),
    "worker_start_s": (in_flight(1), "the first task after tb.init: placed -> started beyond the median at 1 in "
                                     "flight"),
    "estimator_report_delay_s": (in_flight(2), "task records + polled heartbeats: from a task's finished_s to the "
                                               "first heartbeat of its node sent after it (which carries its "
                                               "duration to the global scheduler's estimators) being visible"),
}

#: raw measurements behind the values, recorded in [meta] only
RAW = ("dispatch_s", "slot_idle_s", "slot_turnaround_s", "queue_delay_s", "result_seen_s", "gcs_read_burst_s",
       "gcs_read_round_trip_s", "gcs_write_round_trip_s", "forwarded_decision_s")


def _mean(per: dict, label: str, default: float = 0.0) -> float:
    xs = per.get(label) or []
    return float(np.mean(xs)) if len(xs) else default


def to_table(meas: dict, wall_s: float, run: dict | None = None) -> dict:
    """The calibration file's content: [cluster] values and [meta] (see the module docstring).
    ``meas`` is left as measured (the derived entries go in a copy); ``run`` adds to [meta.run]."""
    meas = dict(meas)
    cluster: dict = {}
    meta: dict = {}
    one = in_flight(1)
    hop = float(np.median(meas["latency_s"][one]))
    idle_ldec = _mean(meas.get("local_decision_s", {}), one)
    if "forwarded_decision_s" in meas:        # the small clusters: one task forwarded at a time
        meas["global_decision_s"] = {k: [x - idle_ldec - 2 * hop for x in xs]
                                     for k, xs in meas["forwarded_decision_s"].items() if k.startswith("in_flight_")}
    for k, xs in meas.get("global_service_s", {}).items():    # under load: net of the queue
        meas.setdefault("global_decision_s", {})[k] = xs
    if "result_return_s" in meas:
        wr = _mean(meas["gcs_write_s"], one)
        meas["result_seen_s"] = meas["result_return_s"]
        meas["result_return_s"] = {k: [x - wr for x in xs] for k, xs in meas["result_seen_s"].items()}
    for key, (label, how) in METHODS.items():
        per = meas.get(key, {})
        if not per:
            continue
        st = {k: _stats(v) for k, v in per.items()}
        value = weighted_by_load(st) if label == BY_LOAD else None
        if value is not None:
            used = label
        else:                       # the level named, or the first with samples
            used = label if st.get(label, {}).get("n") else next((k for k, v in st.items() if v["n"]), label)
            value = st.get(used, {}).get("median" if key == "latency_s" else "mean", 0.0)
        value = max(0.0, value)
        meta[key] = {"method": how, "value_from": used, "levels": list(per), "in_schema": key in CLUSTER, **st}
        if key in CLUSTER:
            cluster[key] = round(value, 7)
    for key in RAW:
        if key in meas:
            meta[key] = {"method": "raw measurement behind the values above", "in_schema": False,
                         **{k: _stats(v) for k, v in meas[key].items()}}
    meta["transfer"] = {"method": "task records: a consumer on node 1 of an object made on node 0, placed -> "
                                  "started less that of a consumer without input (seconds; by object size, bytes)",
                        "link_bandwidth_bytes_per_s": LINK_BPS, "link_latency_s": LINK_LATENCY_S,
                        **meas.get("transfer", {})}
    if "loaded" in meas:
        meta["loaded"] = {"method": "phase D, per load: jobs submitted and finished, arrival rate (all drivers, "
                                    "1/s), busy_fraction (task run time / (span x CPUs)), spilled_fraction, probe "
                                    "tasks and heartbeats seen", **meas["loaded"]}
    meta["run"] = {"date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "host": platform.node(), "cpus": os.cpu_count() or 0, "python": platform.python_version(),
                   "wall_s": round(wall_s, 1), "task_s": TASK_S, "tasks_per_load": TASKS_PER_LOAD,
                   "loads_in_flight": list(LOADS), "loads_poisson": list(LOADED),
                   "loaded_drivers": LOADED_DRIVERS, "loaded_mean_s": LOADED_MEAN_S,
                   "loaded_window_s": LOADED_WINDOW_S, "loaded_placement": LOADED_PLACEMENT,
                   "loaded_spillover": dict(LOADED_SPILLOVER), **(run or {})}
    return {"cluster": cluster, "meta": meta}


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise CalibrationError(f"--out {out}: is a folder; give a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise CalibrationError(f"--out {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CalibrationError(f"--out {out}: cannot write in {parent}")


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:                       # not on every platform
        return []


def calibrate(out: str = "calibration.toml", quiet: bool = False, nodes: int = NODES,
              cpus_per_node: float = CPUS_PER_NODE) -> int:
    path = Path(out)
    _check_out(path)
    if nodes < 1:
        raise CalibrationError(f"--nodes {nodes}: must be >= 1")
    if not cpus_per_node >= 1:
        raise CalibrationError(f"--cpus-per-node {cpus_per_node:g}: must be >= 1")
    say = (lambda *_: None) if quiet else (lambda s: print(s, file=sys.stderr))
    before = _loadavg()
    cpus = os.cpu_count() or 1
    if before and before[0] > 0.5 * cpus:
        say(f"calibrate: load average {before[0]:g} on {cpus} CPUs: the machine is busy, so the overheads "
            f"measured now are those of a busy machine ([meta.run] records the load)")
    t0 = time.perf_counter()
    meas = measure(progress=say, nodes=nodes, cpus_per_node=cpus_per_node)
    run = {"nodes": nodes, "cpus_per_node": cpus_per_node, "loadavg_start": before, "loadavg_end": _loadavg(),
           "command": " ".join(["testbed", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("testbed")
           else f"testbed calibrate --nodes {nodes} --cpus-per-node {cpus_per_node:g}"}
    table = to_table(meas, time.perf_counter() - t0, run)
    text = ("# testbed calibration: simulator parameters measured on the real runtime of this machine\n"
            "# use: [cluster] calibration = \"FILE\" (or --set cluster.calibration=FILE); keys a config sets win\n"
            "# [cluster]: values (seconds, means at the level [meta.KEY].value_from names); [meta.KEY]: how\n"
            "# each was measured and its spread per level (in_flight_<k>: small idle clusters; load_<rho>:\n"
            "# Poisson arrivals on the validation's cluster); [meta.run]: when, where, the load average\n"
            + tomli_w.dumps(table))
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)
    if not quiet:
        for k, v in table["cluster"].items():
            print(f"  {k:24s} {v * 1e3:9.3f} ms", file=sys.stderr)
        print(f"  load average {before} -> {run['loadavg_end']} (1, 5, 15 min)", file=sys.stderr)
    print(f"calibration: {path}")
    return 0
