"""``testbed bench sim``: simulated tasks per wall-clock second and peak memory.

Each case runs in a fresh child process (so its peak RSS is its own) on a fixed
workload: independent tasks with exponential durations (mean 10 ms) arriving as Poisson
streams from one driver per node at 90% of the cluster's capacity, scheduled by the
paper's rules (QueueThreshold spillover, PaperWaitTime placement with exponential
averages keyed per function x node) with one global scheduler replica and one GCS shard per 10 nodes. Only streaming aggregates are kept, as in any large run.
The ``-global`` cases send every task through the global scheduler (AlwaysGlobal), where the
placement decision is the cost that grows with the cluster.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

#: case name -> (nodes, CPUs per node, tasks as a multiple of --tasks, spillover: None = the paper's)
CASES = {
    "sim-100-nodes": (100, 8, 1, None),
    "sim-1000-nodes": (1000, 8, 1, None),
    # ten times the tasks: peak memory must stay where the 1x case has it (streaming)
    "sim-100-nodes-10x": (100, 8, 10, None),
    # every task placed by the global scheduler
    "sim-1000-nodes-global": (1000, 8, 1, "AlwaysGlobal"),
    "sim-10000-nodes-global": (10000, 8, 1, "AlwaysGlobal"),
    # twice the tasks at 10,000 nodes: peak memory must stay where the 1x case has it
    "sim-10000-nodes-global-2x": (10000, 8, 2, "AlwaysGlobal"),
}
DEFAULT_TASKS = 200_000
MEAN_TASK_S = 0.01
LOAD = 0.9


def bench_config(nodes: int, cpus: int, tasks: int, spillover: str | None = None) -> dict:
    from ..studies.experiment import resolve
    rate = LOAD * cpus / MEAN_TASK_S
    raw = {
        # one global scheduler replica and one GCS shard per 10 nodes, so neither saturates
        # (defaults: 100 us per decision, 10 us per GCS write, two writes per task)
        "cluster": {"nodes": nodes, "cpus_per_node": float(cpus), "global_schedulers": max(1, nodes // 10),
                    "gcs_shards": max(1, nodes // 10)},
        "scheduler": {"placement": "PaperWaitTime",
                      "spillover": {"name": "QueueThreshold", "threshold": 8},
                      "task_time": {"name": "ExponentialAverage", "alpha": 0.1},
                      "task_time_key": "function_node"},
        "workload": {"shape": "independent", "jobs": tasks, "arrival": "poisson", "drivers": nodes,
                     "rate_per_s": rate, "duration": {"dist": "exponential", "mean": MEAN_TASK_S}},
        "run": {"trace": "aggregate"},
    }
    if spillover is not None:
        raw["scheduler"]["spillover"] = spillover
    return resolve(raw)


def _case(name: str, tasks: int) -> dict:
    from .execute import make_simulation
    nodes, cpus, mult, spillover = CASES[name]
    sim = make_simulation(bench_config(nodes, cpus, tasks * mult, spillover), seed=0, keep_rows=False)
    t0 = time.perf_counter()
    res = sim.run()
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"case": name, "nodes": nodes, "tasks": int(res.metrics["finished"]), "wall_s": round(wall, 3),
            "tasks_per_s": round(res.metrics["finished"] / wall), "peak_mem_mib": round(peak_kib / 1024, 1),
            "spilled_fraction": round(res.metrics["spilled_fraction"], 4),
            "sim_time_s": round(res.info["sim_end_s"], 3)}


def run_case(name: str, tasks: int) -> dict:
    """Run one case in a fresh interpreter, so its peak RSS is the case's own."""
    out = subprocess.run([sys.executable, "-m", "testbed.studies.bench", name, str(tasks)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench case {name} failed:\n{out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_sim(json_out: bool = False, tasks: int | None = None, cases: str | None = None) -> int:
    from ..core.errors import ConfigError
    names = list(CASES) if not cases else [c.strip() for c in cases.split(",") if c.strip()]
    for n in names:
        if n not in CASES:
            raise ConfigError(f"unknown case {n!r}; cases: {', '.join(CASES)}", key="--cases")
    tasks = tasks or DEFAULT_TASKS
    results = []
    for n in names:
        r = run_case(n, tasks)
        results.append(r)
        if json_out:
            print(json.dumps(r), flush=True)
    if not json_out:
        import pandas as pd
        df = pd.DataFrame(results)[["case", "nodes", "tasks", "wall_s", "tasks_per_s", "peak_mem_mib",
                                    "spilled_fraction"]]
        print(df.to_markdown(index=False, floatfmt=",.4g"))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":       # one case, in its own process: python -m testbed.studies.bench CASE TASKS
    print(json.dumps(_case(sys.argv[1], int(sys.argv[2]))))
