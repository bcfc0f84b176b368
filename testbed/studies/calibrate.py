"""``testbed calibrate [--out FILE]``: measure the real runtime on this machine and write the
simulator's overhead parameters as a calibration file (``cluster.calibration = "FILE"``).

Three small clusters (``tb.init``, 2 CPUs per node), each measured from the runtime's own
task records (``submitted / placed / started / finished`` per attempt, with the worker's
pid), the GCS client, and the node table's heartbeats — no new instrumentation:

  A. one node, local scheduling, sleep tasks of ``TASK_S`` at 1, 2 and 4 jobs in flight
     (idle slot, both slots busy, a queue): local decision, dispatch, per-task slot overhead,
     duration inflation, result return, worker start; then heartbeat age and estimator
     report delay (the driver polls the node table); then GCS read and write times.
  B. two nodes, every task forwarded (AlwaysGlobal), at 1 and 4 in flight: global decision;
     object transfers without an emulated link.
  C. two nodes with an emulated link (``LINK_BPS``, ``LINK_LATENCY_S``): object transfers.

The file has two sections. ``[cluster]`` holds only [cluster] keys (what a config's
calibration fills in); each value is the mean at the load the key matters most (said in its
meta). ``[meta.<key>]`` says how each value was measured and its spread: per load, n, mean,
median, p10, p90 (seconds). ``[meta.transfer]`` holds transfer times by size, and
``[meta.run]`` when, where and how long. A measured quantity the simulator has no [cluster]
key for yet is in ``[meta]`` only (``key_in_schema = false``).
"""
from __future__ import annotations

import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import tomli_w

from ..core.config import CLUSTER
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


class CalibrationError(TestbedError):
    pass


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
        meas.setdefault("local_decision_s", {})[k] = [r["placed_s"] - r["submitted_s"] for r in local]
        meas.setdefault("dispatch_s", {})[k] = [r["started_s"] - r["placed_s"] for r in local
                                                if k == 1 or r["placed_s"] >= r["submitted_s"]]
        meas.setdefault("duration_inflation_s", {})[k] = [r["finished_s"] - r["started_s"] - TASK_S for r in rows]
        meas.setdefault("task_overhead_s", {})[k] = _slot_gaps(rows) if k > 1 else \
            [r["started_s"] - r["placed_s"] for r in rows]
        if seen and len(seen) == len(rows):
            meas["result_return_s"] = {k: [s - r["finished_s"] for s, r in zip(seen, rows)]}
    if first_row:
        r = first_row[0]
        base = float(np.median(meas["dispatch_s"][1]))
        meas["worker_start_s"] = {1: [max(0.0, (r["started_s"] - r["placed_s"]) - base)]}

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
        ages = [seen - sent for seen, sent in beats[1:]]
        delays = []
        for r in rows:
            nxt = next((seen for seen, sent in beats if sent >= r["finished_s"]), None)
            if nxt is not None:
                delays.append(nxt - r["finished_s"])
        meas["heartbeat_delay_s"] = {2: ages}
        meas["estimator_report_delay_s"] = {2: delays}

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
    meas["gcs_read_s"] = {1: [min(x, rtt / 2) for x in bursts_r]}
    meas["gcs_write_s"] = {1: bursts_w}
    meas["gcs_read_burst_s"] = {1: bursts_r}
    meas["gcs_read_round_trip_s"] = {1: rt_r}
    meas["gcs_write_round_trip_s"] = {1: rt_w}
    meas["latency_s"] = {1: [(x - svc_r) / 2 for x in rt_r]}


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
        meas.setdefault("forwarded_decision_s", {})[k] = [r["placed_s"] - r["submitted_s"] for r in rows]
    _transfers(tb, "no_link", meas)


def measure(progress=print) -> dict:
    """Every measurement (see the module's docstring): key -> {load: [seconds]}."""
    import testbed as tb
    meas: dict = {}
    phases = [
        ("one node, local scheduling", dict(num_cpus=2), _phase_local),
        ("two nodes, every task forwarded, no link",
         dict(nodes=[{"CPU": 2, "n0": 1}, {"CPU": 2, "n1": 1}], spillover="AlwaysGlobal"), _phase_global),
        (f"two nodes, emulated link {LINK_BPS:.0e} B/s + {LINK_LATENCY_S * 1e3:g} ms",
         dict(nodes=[{"CPU": 2, "n0": 1}, {"CPU": 2, "n1": 1}], link_bandwidth_bytes_per_s=LINK_BPS,
              link_latency_s=LINK_LATENCY_S), lambda tb, m: _transfers(tb, "link", m)),
    ]
    for what, kwargs, fn in phases:
        progress(f"calibrate: {what} ...")
        tb.init(**kwargs)
        try:
            fn(tb, meas)
        finally:
            tb.shutdown()
    return meas


#: [cluster] key -> (the load whose mean is the value, how it was measured)
METHODS = {
    "latency_s": (1, "GCS read round trip (driver -> shard tail -> driver, 400 sequential reads), less "
                     "gcs_read_s, halved: one message hop (the value is the median, not the mean: rare "
                     "multi-ms wake-ups dominate the mean)"),
    "local_decision_s": (1, "task records: placed - submitted of tasks the local scheduler kept (1 node)"),
    "global_decision_s": (1, "task records, every task forwarded (AlwaysGlobal, 2 nodes): placed - submitted, "
                             "less local_decision_s and one hop (latency_s)"),
    "gcs_read_s": (1, "400 reads of one key sent back to back, time per read (5 bursts), capped at half the "
                      "read round trip (a burst slower than that is bound by the client, not the shard)"),
    "gcs_write_s": (1, "400 writes of one key sent back to back, time per acknowledged write (5 bursts); "
                       "a single blocking write's round trip is much longer (gcs_write_round_trip_s: the "
                       "acknowledgement waits for the runtime's coalescing window)"),
    "task_overhead_s": (4, "task records, 4 jobs in flight on 2 slots: per worker pid, started(i+1) - "
                           "finished(i) when task i+1 was already waiting (the slot's turnaround); at load 1: "
                           "placed -> started"),
    "duration_inflation_s": (2, "task records: finished - started - the drawn duration (sleep tasks of 5 ms)"),
    "result_return_s": (1, "1 job in flight: when tb.get returned in the driver - the task's finished_s, less "
                           "gcs_write_s (the simulator charges the object-table write on its own); the raw "
                           "time is result_seen_s"),
    "heartbeat_delay_s": (2, "the driver polls the node table (GCS reads back to back): when a new heartbeat "
                             "is first seen - the time the node stamped on it (includes up to one read)"),
    "worker_start_s": (1, "the first task after tb.init: placed -> started beyond the median at load 1"),
    "estimator_report_delay_s": (2, "task records + polled heartbeats: from a task's finished_s to the first "
                                    "heartbeat of its node sent after it (which carries its duration to the "
                                    "global scheduler's estimators) being visible"),
}


def to_table(meas: dict, wall_s: float) -> dict:
    """The calibration file's content: [cluster] values and [meta] (see the module docstring).
    ``meas`` is left as measured (the derived entries go in a copy)."""
    meas = dict(meas)
    cluster: dict = {}
    meta: dict = {}
    hop = float(np.median(meas["latency_s"][1]))
    ldec = float(np.mean(meas["local_decision_s"][1]))
    meas["global_decision_s"] = {k: [x - ldec - hop for x in xs] for k, xs in meas["forwarded_decision_s"].items()}
    if "result_return_s" in meas:
        wr = float(np.mean(meas["gcs_write_s"][1]))
        meas["result_seen_s"] = meas["result_return_s"]
        meas["result_return_s"] = {k: [x - wr for x in xs] for k, xs in meas["result_seen_s"].items()}
    for key, (load, how) in METHODS.items():
        per = meas.get(key, {})
        if not per:
            continue
        st = {str(k): _stats(v) for k, v in per.items()}
        use = st.get(str(load)) or next(iter(st.values()))
        value = max(0.0, use.get("median" if key == "latency_s" else "mean", 0.0))
        m = {"method": how, "value_from_load": load, "loads_in_flight": [int(k) for k in per],
             "in_schema": key in CLUSTER, **{f"load_{k}": v for k, v in st.items()}}
        meta[key] = m
        if key in CLUSTER:
            cluster[key] = round(value, 7)
    for key in ("dispatch_s", "result_seen_s", "gcs_read_burst_s", "gcs_read_round_trip_s", "gcs_write_round_trip_s", "forwarded_decision_s"):
        if key in meas:
            meta[key] = {"method": "raw measurement behind the values above", "in_schema": False,
                         **{f"load_{k}": _stats(v) for k, v in meas[key].items()}}
    meta["transfer"] = {"method": "task records: a consumer on node 1 of an object made on node 0, placed -> "
                                  "started less that of a consumer without input (seconds; by object size, bytes)",
                        "link_bandwidth_bytes_per_s": LINK_BPS, "link_latency_s": LINK_LATENCY_S,
                        **meas.get("transfer", {})}
    meta["run"] = {"date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "host": platform.node(), "cpus": os.cpu_count() or 0, "python": platform.python_version(),
                   "wall_s": round(wall_s, 1), "task_s": TASK_S, "tasks_per_load": TASKS_PER_LOAD,
                   "loads_in_flight": list(LOADS), "command": " ".join(["testbed", *sys.argv[1:]])
                   if sys.argv and sys.argv[0].endswith("testbed") else "testbed calibrate"}
    return {"cluster": cluster, "meta": meta}


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise CalibrationError(f"--out {out}: is a folder; give a file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise CalibrationError(f"--out {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CalibrationError(f"--out {out}: cannot write in {parent}")


def calibrate(out: str = "calibration.toml", quiet: bool = False) -> int:
    path = Path(out)
    _check_out(path)
    t0 = time.perf_counter()
    meas = measure(progress=(lambda *_: None) if quiet else (lambda s: print(s, file=sys.stderr)))
    table = to_table(meas, time.perf_counter() - t0)
    text = ("# testbed calibration: simulator parameters measured on the real runtime of this machine\n"
            "# use: [cluster] calibration = \"FILE\" (or --set cluster.calibration=FILE); keys a config sets win\n"
            "# [cluster]: values (seconds, means); [meta.KEY]: how each was measured and its spread per load\n"
            + tomli_w.dumps(table))
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    os.replace(tmp, path)
    if not quiet:
        for k, v in table["cluster"].items():
            print(f"  {k:24s} {v * 1e3:9.3f} ms", file=sys.stderr)
    print(f"calibration: {path}")
    return 0
