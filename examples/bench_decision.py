"""Micro-benchmark: the cost of one global-scheduler decision, per estimator and policy.

    python examples/bench_decision.py [--nodes 1000] [--decisions 2000]

Builds a ClusterView of ``--nodes`` nodes, trains the task-time estimator with one sample
per node (keyed function x node, as the quickstart), gives Oracle estimators a truth with
the simulator's shape (true mean x per-node slowdown, and its vectorised form), and times
``place`` (CPU time, best of 5 repeats, microseconds per decision). Pure policy code: no engine.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from testbed.core.views import TaskView, make_cluster_view
from testbed.policy.base import KeyedEstimator
from testbed.policy import registry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--decisions", type=int, default=2000)
    args = ap.parse_args()
    n = args.nodes
    rng = np.random.default_rng(0)
    view = make_cluster_view([{"total": {"CPU": 4.0}, "queue_length": int(q), "running": 4}
                              for q in rng.integers(0, 5, n)], version=1)
    slow = np.where(np.arange(n) >= 0.8 * n, 3.0, 1.0)
    slow_list = list(slow)

    def truth(quantity, function, node, now):           # the simulator's shape
        if quantity == "bandwidth":
            return 3.125e9
        return 0.1 * (slow_list[node] if node is not None else float(slow.mean()))

    def truth_nodes(quantity, function, n_nodes, now):
        return np.full(n_nodes, 3.125e9) if quantity == "bandwidth" else 0.1 * slow[:n_nodes]

    cases = [("PaperWaitTime", "ExponentialAverage", {}), ("PaperWaitTime", "Oracle", {}),
             ("PaperWaitTime", "Oracle", {"scalar_truth": True}),
             ("LeastLoaded", "ExponentialAverage", {}),
             ("ResidualWaitTime", "ExponentialAverage", {}), ("Occupancy", "ExponentialAverage", {}),
             ("PaperWaitTime", "ExponentialAverage", {"cold": {"min_samples": 3, "fallback": "coarser",
                                                               "floor": 0.001}})]
    t = TaskView(1, "f", {"CPU": 1.0})
    print(f"{n} nodes, {args.decisions} decisions per repeat; microseconds per decision (CPU time, best of 5)")
    for placement, est, opt in cases:
        if placement not in registry.builtins("placement"):
            continue
        p = registry.build("placement", placement, "placement")
        cold = opt.get("cold", {})
        factory = lambda: registry.build("estimator", est, "task_time")   # noqa: E731
        p.bind_estimators(KeyedEstimator(factory, "function_node", "task_time", **cold),
                          KeyedEstimator(factory, "node", "bandwidth"))
        if opt.get("scalar_truth"):
            p.set_truth(truth)
        else:
            try:
                p.set_truth(truth, truth_nodes)
            except TypeError:                              # before the vectorised truth existed
                p.set_truth(truth)
        for m in range(n):
            p.observe_task("f", m, 0.1 * slow[m] * (0.5 + rng.random()), 0.0)
        g = np.random.default_rng(1)
        reps = []
        for _ in range(5):
            t0 = time.process_time()
            for i in range(args.decisions):
                p.place(t, view, 1.0 + i * 1e-4, g)
            reps.append((time.process_time() - t0) / args.decisions * 1e6)
        label = f"{placement} + {est}" + (" (scalar truth)" if opt.get("scalar_truth") else "") + \
            (f" {cold}" if cold else "")
        print(f"  {label:70s} {min(reps):8.1f}")


if __name__ == "__main__":
    main()
