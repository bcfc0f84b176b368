"""cluster.heartbeat_stagger_s: the simulator's nodes report on their own timers, as the real
runtime's do (each node manager runs its own heartbeat timer from its start), so the global
scheduler's view changes one node at a time and a recent-assignment count resets for the
reporting node alone (core.views.since_report)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from testbed.core.errors import ConfigError
from testbed.policy.placement import PaperWaitTime
from testbed.sim import Simulation
from testbed.studies.experiment import build_policies, resolve
from testbed.workloads import Workload, parse_workload

HB = 0.1
NO_OVERHEADS = {"latency_s": 0.0, "gcs_write_s": 0.0, "gcs_read_s": 0.0, "local_decision_s": 0.0,
                "global_decision_s": 0.0}


class Spy(PaperWaitTime):
    """PaperWaitTime that records, per decision, the time, the view's report counts, its
    recent-assignment counts before the decision and the node chosen; and every sample its
    estimators get (node, time)."""

    def __init__(self):
        super().__init__()
        self.decisions: list[tuple[float, np.ndarray, np.ndarray, int]] = []
        self.samples: list[tuple[int, float]] = []

    def place(self, task, view, now, rng):
        before = self.recent(view).copy()
        p = super().place(task, view, now, rng)
        self.decisions.append((now, view.reports.copy(), before, p.node))
        return p

    def observe_task(self, function, node, duration_s, now):
        super().observe_task(function, node, duration_s, now)
        self.samples.append((node, now))


def run(cluster: dict, seed: int = 0, jobs: int = 300, placement=None, faults=None):
    cfg = resolve({"cluster": {"nodes": 4, "cpus_per_node": 2, "heartbeat_interval_s": HB, **NO_OVERHEADS,
                               **cluster},
                   "scheduler": {"placement": "PaperWaitTime", "spillover": "AlwaysGlobal"},
                   "workload": {"jobs": jobs, "arrival": "poisson", "drivers": 2, "rate_per_s": 120.0,
                                "duration": {"dist": "exponential", "mean": 0.02}},
                   "faults": faults or {},
                   "run": {"trace": "rows"}})
    pl, sp = build_policies(cfg["scheduler"])
    if placement is not None:
        placement.bind_estimators(pl.task_time, pl.bandwidth)
        pl = placement
    sim = Simulation(cfg["cluster"], Workload(parse_workload(cfg["workload"]), seed), pl, sp, seed=seed,
                     faults=cfg["faults"])
    res = sim.run()
    return res, res.trace.sort_values("job_id").reset_index(drop=True)


def test_default_is_one_synchronized_round():
    """Default 0: every view holds the same report count for every node (one round), and an
    explicit 0 gives the same Trace."""
    assert resolve({})["cluster"]["heartbeat_stagger_s"] == 0.0
    spy = Spy()
    res, a = run({}, placement=spy)
    assert res.info["heartbeat_offsets_s"] is None
    assert all((rep == rep[0]).all() for _, rep, _, _ in spy.decisions)
    _, b = run({"heartbeat_stagger_s": 0.0})
    assert a.equals(b)


@pytest.mark.parametrize("delay", [0.0, 0.003])
def test_each_node_reports_at_its_own_offset(delay):
    """Node m's k-th heartbeat ticks at offset[m] + k x interval (offsets in [0, stagger)) and
    reaches the global scheduler heartbeat_delay_s later: a decision at t sees exactly the
    reports that arrived by t, node by node, and node m's samples reach the estimators at
    those arrivals only."""
    stagger = 0.06
    spy = Spy()
    res, _ = run({"heartbeat_stagger_s": stagger, "heartbeat_delay_s": delay}, placement=spy)
    off = np.array(res.info["heartbeat_offsets_s"])
    assert off.shape == (4,) and ((0 <= off) & (off < stagger)).all() and len(set(off)) == 4
    checked = 0
    for now, rep, _, _ in spy.decisions:
        k = (now - delay - off) / HB                   # heartbeats of each node arrived by now
        if np.any(np.abs(k - np.round(k)) < 1e-6):     # a tie with an arrival: order is the kernel's
            continue
        # the initial view counts 1 for every node; each arrived report adds one for its node
        np.testing.assert_array_equal(rep, 1 + np.maximum(np.floor(k), 0))
        checked += 1
    assert checked > 0.9 * len(spy.decisions)
    # reports differ between nodes at some decisions: the view changes one node at a time
    assert any(len(set(rep.tolist())) > 1 for _, rep, _, _ in spy.decisions)
    assert spy.samples
    for node, t in spy.samples:
        k = (t - delay - off[node]) / HB
        assert abs(k - round(k)) < 1e-6 and round(k) >= 1, (node, t)


def test_a_report_resets_only_that_nodes_recent_count():
    """The shared rule (core.views.since_report) with staggered reports: between two decisions,
    the recent-assignment count of a node that reported in between starts again from 0, and
    every other node's count carries on from where it was."""
    spy = Spy()
    run({"heartbeat_stagger_s": HB}, placement=spy)
    resets = carried = 0
    for (_, rep0, rec0, node0), (_, rep1, rec1, _) in zip(spy.decisions, spy.decisions[1:]):
        after = rec0.copy()
        after[node0] += 1
        fresh = rep1 != rep0
        np.testing.assert_array_equal(rec1[fresh], 0)
        np.testing.assert_array_equal(rec1[~fresh], after[~fresh])
        if fresh.any() and not fresh.all():
            resets += 1
            carried += int((after[~fresh] > 0).any())
    assert resets > 0 and carried > 0


def _herding(decisions) -> float:
    """Fraction of decisions in runs of >= 3 consecutive choices of one node."""
    nodes = [d[3] for d in decisions]
    runs, c = [], 1
    for a, b in zip(nodes, nodes[1:]):
        if a == b:
            c += 1
        else:
            runs.append(c)
            c = 1
    runs.append(c)
    return sum(r for r in runs if r >= 3) / len(nodes)


def test_staggered_reports_make_paper_wait_time_herd():
    """The effect measured on the real runtime (issue 8): a node whose report arrives alone
    has its count reset while the others' still hold the tasks sent since their reports, so
    PaperWaitTime sends it several tasks in a row; with one synchronized round it does not."""
    herd = {}
    for stagger in (0.0, HB):
        spies = [Spy() for _ in range(3)]
        for seed, spy in enumerate(spies):
            run({"heartbeat_stagger_s": stagger}, seed=seed, jobs=600, placement=spy)
        herd[stagger] = np.mean([_herding(s.decisions) for s in spies])
    assert herd[HB] > 2 * herd[0.0] + 0.02, herd


def test_stagger_changes_no_workload_draw_and_is_deterministic():
    """The offsets have their own stream: jobs, durations and submission times are the same
    as without staggering (common random numbers), and the same seed gives the same Trace."""
    _, a = run({})
    res, b = run({"heartbeat_stagger_s": 0.05})
    _, c = run({"heartbeat_stagger_s": 0.05})
    assert b.equals(c)
    np.testing.assert_array_equal(a.job_id, b.job_id)
    np.testing.assert_allclose(a.submitted_s, b.submitted_s, atol=1e-12)
    np.testing.assert_allclose(a.finished_s - a.started_s, b.finished_s - b.started_s, atol=1e-12)
    assert not a.node.equals(b.node)                    # but the placements are not the same
    _, other = run({"heartbeat_stagger_s": 0.05}, seed=1)
    res1, _ = run({"heartbeat_stagger_s": 0.05}, seed=1)
    assert res1.info["heartbeat_offsets_s"] != res.info["heartbeat_offsets_s"]


def test_not_applied_with_faults():
    """Documented: with [faults] the nodes still report in one round (the key is ignored)."""
    faults = {"node_failures": [{"at_s": 100.0, "node": 3}]}     # after the run: changes nothing
    res, a = run({"heartbeat_stagger_s": 0.05}, faults=faults)
    _, b = run({}, faults=faults)
    assert res.info.get("heartbeat_offsets_s") is None
    assert a.equals(b)


def test_negative_stagger_is_a_config_error():
    with pytest.raises(ConfigError, match="heartbeat_stagger_s"):
        resolve({"cluster": {"heartbeat_stagger_s": -0.01}})
