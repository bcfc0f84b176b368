"""One simulated run per scheduler variant: wall time, latency and herding.

    python examples/policy_check.py [--nodes 1000] [--jobs 20000] [--seed 0] [VARIANT ...]

The quickstart's workload (experiments/quickstart.toml: 20% of the nodes 3x slower, three
functions, a shift halfway) scaled to ``--nodes`` nodes at the same load per node. Prints per
variant: simulator wall seconds, simulated tasks per wall second, latency p50/p99, and the
herding counter: the most tasks the global scheduler placed on one node within one heartbeat
interval (from the Trace's placed_s and spilled columns).
"""
from __future__ import annotations

import argparse
import copy
import time
import tomllib

import numpy as np

from testbed.studies.execute import make_simulation
from testbed.studies.experiment import resolve

EWMA = {"name": "ExponentialAverage", "alpha": 0.1}
VARIANTS = {
    "ewma": {},
    "ewma-min3-coarser": {"task_time": {**EWMA, "min_samples": 3, "fallback": "coarser"}},
    "ewma-floor5ms": {"task_time": {**EWMA, "floor": 0.005}},
    "ewma-reset2": {"task_time": {**EWMA, "reset_factor": 2.0}},
    "oracle": {"task_time": "Oracle"},
    "leastloaded": {"placement": "LeastLoaded"},
    "leastloaded-old": {"placement": {"name": "LeastLoaded", "count_recent": False}},
    "residual": {"placement": "ResidualWaitTime"},
    "occupancy": {"placement": "Occupancy"},
    "occupancy-min3-coarser": {"placement": "Occupancy",
                               "task_time": {**EWMA, "min_samples": 3, "fallback": "coarser"}},
    "occupancy-floor5ms": {"placement": "Occupancy", "task_time": {**EWMA, "floor": 0.005}},
    "occupancy-oracle": {"placement": "Occupancy", "task_time": "Oracle"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("variants", nargs="*", default=list(VARIANTS))
    args = ap.parse_args()
    with open("experiments/quickstart.toml", "rb") as f:
        raw = tomllib.load(f)
    raw.pop("sweep")
    scale = args.nodes / raw["cluster"]["nodes"]
    raw["cluster"]["nodes"] = args.nodes
    raw["cluster"]["slow_nodes"] = int(raw["cluster"]["slow_nodes"] * scale)
    raw["workload"]["drivers"] = max(1, int(raw["workload"]["drivers"] * scale))
    raw["workload"]["jobs"] = args.jobs
    raw["workload"]["shift"]["after_jobs"] = args.jobs // 2
    raw["run"]["trace"] = "rows"
    hb = raw["cluster"]["heartbeat_interval_s"]
    print(f"{args.nodes} nodes, {args.jobs} jobs, seed {args.seed}")
    print(f"{'variant':20s} {'wall s':>7s} {'tasks/s':>8s} {'p50 ms':>7s} {'p99 ms':>8s} {'herd':>5s}")
    for name in args.variants:
        cfg = copy.deepcopy(raw)
        cfg["scheduler"].update(VARIANTS[name])
        sim = make_simulation(resolve(cfg), seed=args.seed, keep_rows=True)
        t0 = time.perf_counter()
        res = sim.run()
        wall = time.perf_counter() - t0
        tr = res.trace
        lat = (tr.finished_s - tr.submitted_s).to_numpy()
        g = tr[tr.spilled.astype(bool)]
        herd = int(g.groupby([g.node, (g.placed_s // hb).astype(int)]).size().max()) if len(g) else 0
        print(f"{name:20s} {wall:7.2f} {len(tr) / wall:8.0f} {1e3 * np.percentile(lat, 50):7.1f} "
              f"{1e3 * np.percentile(lat, 99):8.1f} {herd:5d}")


if __name__ == "__main__":
    main()
