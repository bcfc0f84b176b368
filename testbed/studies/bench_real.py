"""``testbed bench real``: the real runtime's speed and memory on this machine.

Every case runs in a fresh interpreter (``python -m testbed.studies.bench_real CASE``)
against ``tb.init(num_cpus=2)`` — one node with two CPUs, like the Ray anchors in
shared/reference/anchors/ray.md — and prints one JSON object per figure. Each case warms
up before it is timed.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

N_TASKS = 20_000
LAT_N = 2_000


def _pct(xs, q):
    return float(np.percentile(np.asarray(xs), q))


def _fig(case, metric, value, unit):
    return {"case": case, "metric": metric, "value": round(float(value), 6), "unit": unit}


def case_tasks(tb):
    @tb.remote
    def noop():
        return None
    tb.get([noop.remote() for _ in range(2000)])                 # warm-up
    t0 = time.perf_counter()
    refs = [noop.remote() for _ in range(N_TASKS)]
    t_submit = time.perf_counter() - t0
    tb.get(refs)
    t = time.perf_counter() - t0
    lat = []
    for _ in range(LAT_N):
        s = time.perf_counter()
        tb.get(noop.remote())
        lat.append(time.perf_counter() - s)
    return [_fig("tasks", "no-op tasks, 20,000 submitted then gathered", N_TASKS / t, "tasks/s"),
            _fig("tasks", "submit-only rate of f.remote()", N_TASKS / t_submit, "calls/s"),
            _fig("tasks", "task round trip p50", _pct(lat, 50) * 1e3, "ms"),
            _fig("tasks", "task round trip p99", _pct(lat, 99) * 1e3, "ms")]


def case_actors(tb):
    @tb.remote
    class A:
        def f(self):
            return None
    a = A.remote()
    tb.get([a.f.remote() for _ in range(300)])
    lat = []
    for _ in range(LAT_N):
        s = time.perf_counter()
        tb.get(a.f.remote())
        lat.append(time.perf_counter() - s)
    t0 = time.perf_counter()
    tb.get([a.f.remote() for _ in range(N_TASKS)])
    t = time.perf_counter() - t0
    return [_fig("actors", "actor call round trip p50", _pct(lat, 50) * 1e3, "ms"),
            _fig("actors", "actor call round trip p99", _pct(lat, 99) * 1e3, "ms"),
            _fig("actors", "20,000 async calls on one actor", N_TASKS / t, "calls/s")]


def case_objects(tb):
    out = []
    for label, n in (("1 KB", 1_000), ("1 MB", 1_000_000), ("100 MB", 100_000_000)):
        arr = np.ones(n // 8, dtype=np.float64)
        reps = 200 if n <= 1_000_000 else 10
        tb.get(tb.put(arr))
        puts, gets = [], []
        for _ in range(reps):
            s = time.perf_counter()
            r = tb.put(arr)
            puts.append(time.perf_counter() - s)
            s = time.perf_counter()
            v = tb.get(r)
            gets.append(time.perf_counter() - s)
            del v, r
        p, g = statistics.median(puts), statistics.median(gets)
        out += [_fig("objects", f"put {label} p50", p * 1e3, "ms"), _fig("objects", f"put {label}", n / p / 1e9, "GB/s"),
                _fig("objects", f"get {label} p50", g * 1e3, "ms"), _fig("objects", f"get {label}", n / g / 1e9, "GB/s")]
    big = tb.put(np.ones(10_000_000 // 8))

    @tb.remote
    def total(a):
        return float(a.sum())
    tb.get([total.remote(big) for _ in range(4)])
    t0 = time.perf_counter()
    tb.get([total.remote(big) for _ in range(100)])
    out.append(_fig("objects", "100 tasks reading one 10 MB object by reference", (time.perf_counter() - t0) * 1e3, "ms"))
    return out


def case_wait(tb):
    @tb.remote
    def sleepy(t):
        time.sleep(t)
        return t
    rng = np.random.default_rng(0)
    ts = rng.uniform(0, 0.010, 1000)
    tb.get([sleepy.remote(0.0) for _ in range(20)])
    t0 = time.perf_counter()
    pending = [sleepy.remote(float(t)) for t in ts]
    while pending:
        _, pending = tb.wait(pending, num_returns=1)
    t = time.perf_counter() - t0
    ideal = ts.sum() / 2          # two CPUs
    return [_fig("wait", "wait(num_returns=1) loop over 1,000 tasks sleeping 0-10 ms", t, "s"),
            _fig("wait", "same, ideal on 2 CPUs", ideal, "s")]


def case_nested(tb):
    @tb.remote
    def child(x):
        return x

    @tb.remote
    def parent(i):
        return sum(tb.get([child.remote(i) for _ in range(10)]))
    tb.get([parent.remote(0) for _ in range(4)])
    t0 = time.perf_counter()
    tb.get([parent.remote(i) for i in range(200)])
    t = time.perf_counter() - t0
    return [_fig("nested", "200 tasks each running 10 nested tasks", t, "s"),
            _fig("nested", "same, tasks per second (parents + children)", 2200 / t, "tasks/s")]


def case_memory(tb):
    from testbed.real import api
    c = api._cluster
    time.sleep(1.0)        # idle, as the anchors measured it
    pids = [c.proc.pid] + list(c.pids) + [os.getpid()]
    rss = pss = 0.0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
        except OSError:
            pass
    return [_fig("memory", f"idle RSS of all {len(pids)} processes (driver included)", rss, "MiB"),
            _fig("memory", "idle PSS of the same", pss, "MiB")]


CASES = {"tasks": case_tasks, "actors": case_actors, "objects": case_objects, "wait": case_wait,
         "nested": case_nested, "memory": case_memory}


def run_in_process(case: str) -> list[dict]:
    import testbed as tb
    t0 = time.perf_counter()
    tb.init(num_cpus=2)
    init = time.perf_counter() - t0
    try:
        figs = CASES[case](tb)
    finally:
        tb.shutdown()
    if case == "tasks":
        figs.append(_fig("init", "tb.init(num_cpus=2) inside the driver", init, "s"))
    return figs


def whole_process() -> list[dict]:
    code = "import testbed as tb; tb.init(num_cpus=2); tb.shutdown()"
    walls = []
    for i in range(4):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        if i:                  # the first is a warm-up
            walls.append(time.perf_counter() - t0)
    return [_fig("init", "whole process: import, init(num_cpus=2), shutdown (median of 3)",
                 statistics.median(walls), "s")]


def bench_real(json_out: bool = False, cases: str | None = None) -> int:
    from ..core.errors import ConfigError
    names = list(CASES) + ["process"] if not cases else [c.strip() for c in cases.split(",") if c.strip()]
    for n in names:
        if n not in CASES and n != "process":
            raise ConfigError(f"unknown case {n!r}; cases: {', '.join(list(CASES) + ['process'])}", key="--cases")
    rows = []
    for n in names:
        if n == "process":
            figs = whole_process()
        else:
            out = subprocess.run([sys.executable, "-m", "testbed.studies.bench_real", n], capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"bench case {n} failed:\n{out.stderr.strip()[-2000:]}")
            figs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        for f in figs:
            rows.append(f)
            if json_out:
                print(json.dumps(f), flush=True)
    if not json_out:
        import pandas as pd
        df = pd.DataFrame(rows)[["case", "metric", "value", "unit"]]
        print(df.to_markdown(index=False, floatfmt=",.4g"))
    return 0


if __name__ == "__main__":
    for fig in run_in_process(sys.argv[1]):
        print(json.dumps(fig), flush=True)
