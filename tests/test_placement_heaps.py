"""PaperWaitTime's O(log n) heap path decides exactly as its vector path: the same nodes and
the same predicted waits, over views, estimator updates, several functions and demands
interleaved, dead and infeasible nodes, per-slot or not, with or without recent counts."""
from __future__ import annotations

import numpy as np
import pytest

from testbed.core.views import InputView, TaskView, make_cluster_view
from testbed.policy.base import KeyedEstimator
from testbed.policy.estimators import ExponentialAverage, Oracle
from testbed.policy.placement import PaperWaitTime


def _pair(keying, cold=None, **kw):
    out = []
    for heaps in (True, False):
        p = PaperWaitTime(**kw)
        p.bind_estimators(KeyedEstimator(lambda: ExponentialAverage(0.3), keying, **(cold or {})),
                          KeyedEstimator(lambda: ExponentialAverage(0.3), keying, "bandwidth"))
        p.use_heaps = heaps
        out.append(p)
    return out


def _view(rng, n, version):
    nodes = []
    for m in range(n):
        cpus = float(rng.choice([1, 2, 4, 8]))
        nodes.append({"total": {"CPU": cpus, **({"GPU": 1.0} if m % 3 == 0 else {})},
                      "available": {"CPU": cpus}, "queue_length": int(rng.integers(0, 6)),
                      "running": 0, "alive": bool(rng.random() > 0.1)})
    return make_cluster_view(nodes, version=version)


@pytest.mark.parametrize("keying", ["global", "node", "function", "function_node"])
@pytest.mark.parametrize("kw", [{}, {"per_slot": False}, {"count_recent": False},
                                {"cold": {"min_samples": 3, "fallback": "coarser", "floor": 0.05,
                                          "reset_factor": 2.0}}])
def test_heaps_decide_as_the_vector_path(keying, kw):
    rng = np.random.default_rng(7)
    fast, ref = _pair(keying, **kw)
    demands = [{"CPU": 1.0}, {"CPU": 2.0}, {"CPU": 1.0, "GPU": 1.0}]
    for version in range(12):
        view = _view(rng, 40, version)
        for k in range(150):
            demand = demands[int(rng.integers(len(demands)))]
            fn = f"f{int(rng.integers(3))}"
            inputs = (InputView(1000, (int(rng.integers(40)),)),) if rng.random() < 0.05 else ()
            t = TaskView(k, fn, demand, inputs, -1)
            a, b = fast.place(t, view, float(version), None), ref.place(t, view, float(version), None)
            assert a == b, (version, k)
        for m in range(0, 40, 3):                 # samples arrive with the next heartbeat
            x = float(rng.exponential(0.1)) + 1e-3
            for p in (fast, ref):
                p.observe_task(f"f{m % 3}", m, x, float(version))


def test_an_oracle_or_a_time_dependent_estimator_takes_the_vector_path():
    p = PaperWaitTime()
    p.bind_estimators(KeyedEstimator(Oracle, "function_node"), KeyedEstimator(Oracle, "node", "bandwidth"))
    p.set_truth(lambda q, f, n, now: 0.1 * (1 + (n or 0)))
    view = make_cluster_view([{"total": {"CPU": 1.0}, "available": {"CPU": 1.0}, "queue_length": 0,
                               "running": 0}] * 3, version=1)
    assert not p.task_time.changes_only_on_update
    assert [p.place(TaskView(i, "f", {"CPU": 1.0}, (), -1), view, 0.0, None).node for i in range(5)] == [0, 1, 2, 0, 0]
    assert not p._heaps
