"""The simulator configured as textbook queueing systems, against closed forms
(testbed/studies/theory.py), and the closed forms against textbook values."""
from __future__ import annotations

import numpy as np
import pytest

from testbed.sim.engine import FifoServers, _serve
from testbed.studies.execute import make_simulation
from testbed.studies.experiment import resolve


def _sim(cluster: dict, scheduler: dict, workload: dict, seed: int = 0):
    raw = {"cluster": cluster, "scheduler": scheduler, "workload": workload, "run": {"trace": "rows"}}
    return make_simulation(resolve(raw), seed=seed).run()


def test_server_reached_over_a_link_adds_latency_wait_and_service():
    """A global scheduler replica at load 0.8 reached over a 0.1 ms link: every decision
    completes exactly when the Lindley recursion says (arrival = submission + latency),
    so the mean is latency + M/D/1 wait + service, not service + max(wait, latency)."""
    d, lat, rho = 1e-4, 1e-4, 0.8
    res = _sim({"nodes": 1, "cpus_per_node": 1e4, "latency_s": lat, "global_decision_s": d,
                "gcs_write_s": 0.0, "gcs_read_s": 0.0},
               {"placement": "Random", "spillover": "AlwaysGlobal"},
               {"shape": "independent", "jobs": 20000, "arrival": "poisson", "drivers": 1,
                "rate_per_s": rho / d, "duration": {"dist": "constant", "value": 0.0}}, seed=1)
    df = res.trace.sort_values("submitted_s", kind="stable")
    sub = df.submitted_s.to_numpy()
    end, prev = np.empty_like(sub), -1.0
    for k, a in enumerate(sub + lat):
        prev = max(prev, a) + d
        end[k] = prev
    np.testing.assert_allclose(df.placed_s.to_numpy(), end, rtol=0, atol=1e-12)
    md1 = lat + d + rho * d / (2 * (1 - rho))
    assert abs((end - sub).mean() / md1 - 1) < 0.03


def test_server_serves_in_issue_order_once_arrived():
    """Requests wait for the server and for their own arrival; a request that arrives
    before an earlier-issued one still in flight uses the idle time before it."""
    s = FifoServers(1)
    assert _serve(s, 0, 0.0, 0.0, 1.0) == 1.0          # idle: arrival + service
    assert _serve(s, 0, 0.0, 0.5, 1.0) == 2.0          # busy until 1: waits, then served
    assert _serve(s, 0, 0.5, 2.0, 1.0) == 3.0          # its own wait (chained) is not counted twice
    assert _serve(s, 0, 0.5, 10.0, 1.0) == 11.0        # due later: starts when it arrives
    assert _serve(s, 0, 1.0, 4.0, 1.0) == 5.0          # arrives before it: fits in [3, 10)
    assert _serve(s, 0, 1.0, 9.5, 1.0) == 12.0         # does not fit before 10: queued behind
    assert _serve(s, 0, 1.0, 5.0, 1.0) == 6.0          # fills [5, 6), the rest of that gap
