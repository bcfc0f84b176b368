"""The simulator's calibrated overheads ([cluster] task_overhead_s, duration_inflation_s,
result_return_s, heartbeat_delay_s, worker_start_s): each does exactly what its doc says,
on one node with constant durations and every other overhead off."""
from __future__ import annotations

import math

import numpy as np
import pytest

from testbed.policy.base import Placement, PlacementPolicy
from testbed.sim import Simulation
from testbed.studies.experiment import build_policies, resolve
from testbed.workloads import Workload, parse_workload

NO_OVERHEADS = {"latency_s": 0.0, "gcs_write_s": 0.0, "gcs_read_s": 0.0, "local_decision_s": 0.0,
                "global_decision_s": 0.0}
ONE_SLOT = {"nodes": 1, "cpus_per_node": 1, **NO_OVERHEADS}
DUR, N = 0.1, 6


def run(cluster, workload=None, placement=None, scheduler=None):
    cfg = resolve({"cluster": cluster, "workload": {"jobs": N, "in_flight": 1,
                                                      "duration": {"dist": "constant", "value": DUR},
                                                      **(workload or {})},
                   "scheduler": scheduler or {}, "run": {"trace": "rows", "validate": True}})
    pl, sp = build_policies(cfg["scheduler"])
    if placement is not None:
        placement.bind_estimators(pl.task_time, pl.bandwidth)
        pl = placement
    sim = Simulation(cfg["cluster"], Workload(parse_workload(cfg["workload"]), 0), pl, sp, seed=0,
                     validate=True)
    res = sim.run()
    return res, res.trace.sort_values("task_id").reset_index(drop=True)


def test_defaults_are_zero_and_change_nothing():
    """The new keys default to 0, and a run with them explicitly 0 is the same Trace."""
    cfg = resolve({})["cluster"]
    for k in ("task_overhead_s", "duration_inflation_s", "result_return_s", "heartbeat_delay_s", "worker_start_s"):
        assert cfg[k] == 0.0
    _, a = run(ONE_SLOT)
    _, b = run({**ONE_SLOT, "task_overhead_s": 0.0, "duration_inflation_s": 0.0})
    assert a.equals(b)


def test_task_overhead_holds_the_slot_before_each_task():
    """One slot, closed loop: each task starts task_overhead_s after it was placed, so the makespan
    grows by exactly n x task_overhead_s and each run time is still the drawn duration."""
    ov = 0.003
    base, _ = run(ONE_SLOT)
    res, tr = run({**ONE_SLOT, "task_overhead_s": ov})
    assert res.info["sim_end_s"] == pytest.approx(base.info["sim_end_s"] + N * ov, abs=1e-12)
    np.testing.assert_allclose(tr.started_s - tr.placed_s, ov, atol=1e-12)
    np.testing.assert_allclose(tr.finished_s - tr.started_s, DUR, atol=1e-12)


def test_task_overhead_delays_a_queued_task_behind_a_busy_slot():
    """Six jobs in flight on one slot: task k starts at k x (overhead + duration) + overhead — the
    slot is held for the overhead of every task, not only of the first."""
    ov = 0.004
    res, tr = run({**ONE_SLOT, "task_overhead_s": ov}, {"in_flight": N})
    k = np.arange(N)
    np.testing.assert_allclose(tr.started_s, k * (ov + DUR) + ov, atol=1e-12)
    assert res.info["sim_end_s"] == pytest.approx(N * (ov + DUR), abs=1e-12)


def test_duration_inflation_lengthens_every_run_and_is_observed():
    """Each task runs duration + duration_inflation_s (also on a slow node: the inflation is not
    scaled), and the placement's estimator sees that inflated time."""
    inf = 0.002
    pol = RecordObserved()
    res, tr = run({**ONE_SLOT, "duration_inflation_s": inf, "slow_nodes": 1, "slow_factor": 2.0}, placement=pol)
    np.testing.assert_allclose(tr.finished_s - tr.started_s, 2 * DUR + inf, atol=1e-12)
    assert res.info["sim_end_s"] == pytest.approx(N * (2 * DUR + inf), abs=1e-12)
    # samples reach the estimators with the node's next heartbeat (policy.base.deliver_reports):
    # every task that finished before the last heartbeat round was reported, none after
    interval = 0.1                                   # the schema's heartbeat_interval_s
    last_round = math.floor(res.info["sim_end_s"] / interval + 1e-9) * interval
    reported = int((tr.finished_s <= last_round + 1e-9).sum())
    assert len(pol.observed) == reported > 0
    np.testing.assert_allclose(pol.observed, 2 * DUR + inf, atol=1e-12)


class RecordObserved(PlacementPolicy):
    """Node 0 always; records every run time the engine reports to the estimators."""

    def __init__(self):
        self.observed: list[float] = []

    def place(self, task, view, now, rng):
        return Placement(0)

    def observe_task(self, function, node, duration_s, now):
        self.observed.append(duration_s)
        super().observe_task(function, node, duration_s, now)


def test_result_return_delays_what_the_driver_and_dependents_see():
    """Closed loop: the driver submits its next job result_return_s after the previous one finished;
    in a chain, each task starts result_return_s after its input finished (placed at submission,
    it waits on its node for the input to become visible)."""
    ret = 0.005
    _, tr = run({**ONE_SLOT, "result_return_s": ret})
    np.testing.assert_allclose(tr.submitted_s.iloc[1:].to_numpy() - tr.finished_s.iloc[:-1].to_numpy(), ret,
                               atol=1e-12)
    _, ch = run({**ONE_SLOT, "result_return_s": ret}, {"jobs": 1, "shape": "chains", "chain_length": 4})
    np.testing.assert_allclose(ch.started_s.iloc[1:].to_numpy() - ch.finished_s.iloc[:-1].to_numpy(), ret,
                               atol=1e-12)


def test_worker_start_holds_back_the_first_tasks():
    """No task starts before worker_start_s; the first one starts exactly then."""
    ws = 0.25
    _, tr = run({**ONE_SLOT, "worker_start_s": ws})
    assert tr.started_s.iloc[0] == pytest.approx(ws, abs=1e-12)
    assert (tr.started_s >= ws - 1e-12).all()


class RecordViews(PlacementPolicy):
    """Node 0 always; records (now, the view's as_of) for every decision."""

    def __init__(self):
        self.seen: list[tuple[float, float]] = []

    def place(self, task, view, now, rng):
        self.seen.append((now, view.as_of))
        return Placement(0)


@pytest.mark.parametrize("delay", [0.0, 0.03])
def test_heartbeat_delay_is_the_age_of_the_view_when_it_arrives(delay):
    """Heartbeats every 0.1 s: a decision at time t uses the view of the last tick at or before
    t - heartbeat_delay_s (or the initial view); without delay, the last tick before t."""
    hb = 0.1
    pol = RecordViews()
    run({"nodes": 2, "cpus_per_node": 1, **NO_OVERHEADS, "heartbeat_interval_s": hb, "heartbeat_delay_s": delay},
        {"jobs": 40, "duration": {"dist": "constant", "value": 0.013}}, placement=pol,
        scheduler={"spillover": "AlwaysGlobal"})
    assert len(pol.seen) == 40
    for now, as_of in pol.seen:
        expected = max(0.0, np.floor((now - delay) / hb + 1e-9) * hb) if now >= delay else 0.0
        assert as_of == pytest.approx(expected, abs=1e-9), (now, as_of)
    if delay:
        assert any(now - as_of >= delay - 1e-12 for now, as_of in pol.seen if as_of > 0)


@pytest.mark.parametrize("delay", [0.0, 0.03])
def test_heartbeat_delay_applies_in_runs_with_faults(delay):
    """The same rule in a run with [faults] (one heartbeat round, shared with the fault model):
    a node killed after the last task leaves the Trace unchanged, and every decision uses the
    view of the last tick at or before t - heartbeat_delay_s."""
    hb = 0.1
    pol = RecordViews()
    cfg = resolve({"cluster": {"nodes": 3, "cpus_per_node": 1, **NO_OVERHEADS, "heartbeat_interval_s": hb,
                               "heartbeat_delay_s": delay},
                   "workload": {"jobs": 40, "in_flight": 1, "duration": {"dist": "constant", "value": 0.013}},
                   "scheduler": {"spillover": "AlwaysGlobal"},
                   "faults": {"node_failures": [{"at_s": 0.35, "node": 2}]},
                   "run": {"trace": "rows", "validate": True}})
    pl, sp = build_policies(cfg["scheduler"])
    pol.bind_estimators(pl.task_time, pl.bandwidth)
    sim = Simulation(cfg["cluster"], Workload(parse_workload(cfg["workload"]), 0), pol, sp, seed=0,
                     validate=True, faults=cfg["faults"])
    res = sim.run()
    assert type(sim).__name__ == "FaultySimulation" and res.info["nodes_killed"] == 1
    assert res.info["complete"] and len(pol.seen) == 40
    for now, as_of in pol.seen:
        expected = max(0.0, np.floor((now - delay) / hb + 1e-9) * hb) if now >= delay else 0.0
        assert as_of == pytest.approx(expected, abs=1e-9), (now, as_of)
    if delay:
        assert any(now - as_of >= delay - 1e-12 for now, as_of in pol.seen if as_of > 0)


def test_heartbeat_delay_delays_what_a_faulty_round_tells_the_global_scheduler():
    """With [faults], a dead node is declared at the tick of its num_heartbeats_timeout-th
    missed heartbeat, and the global scheduler learns it (a lost actor is rebuilt, a waiting
    task is placed) heartbeat_delay_s later: an actor lost with its node is re-created exactly
    then."""
    hb, delay, timeout = 0.1, 0.03, 2
    out = {}
    for d in (0.0, delay):
        cfg = resolve({"cluster": {"nodes": 2, "cpus_per_node": 1, **NO_OVERHEADS, "heartbeat_interval_s": hb,
                                   "heartbeat_delay_s": d, "num_heartbeats_timeout": timeout},
                       "workload": {"shape": "actors", "actors": 2, "jobs": 60, "in_flight": 1,
                                    "duration": {"dist": "constant", "value": 0.01}},
                       "faults": {"node_failures": [{"at_s": 0.205, "node": 1}]},
                       "run": {"trace": "rows", "validate": True}})
        pl, sp = build_policies(cfg["scheduler"])
        res = Simulation(cfg["cluster"], Workload(parse_workload(cfg["workload"]), 0), pl, sp, seed=0,
                         validate=True, faults=cfg["faults"]).run()
        tr = res.trace
        init = tr[(tr.function == "Actor.__init__") & (tr.attempt == 2)]
        assert len(init) == 1 and res.info["actors_rebuilt"] == 1
        out[d] = float(init.submitted_s.iloc[0])
    declared = 0.2 + timeout * hb            # the kill at 0.205 misses the ticks at 0.3 and 0.4
    assert out[0.0] == pytest.approx(declared, abs=1e-9)
    assert out[delay] == pytest.approx(declared + delay, abs=1e-9)
