"""Placement policies: exact decisions for hand-built views and fixed seeds."""
from __future__ import annotations

import math

import numpy as np
import pytest

from testbed.core.errors import ConfigError
from testbed.core.views import InputView, TaskView, make_cluster_view
from testbed.policy.base import KeyedEstimator, Placement
from testbed.policy.estimators import ExponentialAverage, Oracle
from testbed.policy.placement import (HybridSpread, LeastLoaded, LocalityFirst, Occupancy, PaperWaitTime,
                                      PowerOfTwoChoices, Random, RecentAssignments,
                                      ResidualWaitTime, RoundRobin)
from testbed.policy.registry import build, builtins

CPU1 = {"CPU": 1.0}
ALL = [PaperWaitTime, RecentAssignments, Random, RoundRobin, LeastLoaded, PowerOfTwoChoices,
       LocalityFirst, HybridSpread, ResidualWaitTime, Occupancy]


def bind(policy, keying="node", alpha=0.5):
    """Bind EWMA task-time and bandwidth estimators with one keying; return the policy."""
    policy.bind_estimators(KeyedEstimator(lambda: ExponentialAverage(alpha), keying),
                           KeyedEstimator(lambda: ExponentialAverage(alpha), keying, "bandwidth"))
    return policy


_versions = iter(range(1_000_000, 2_000_000))


def view(queues, cpus=4, *, running=None, available=None, alive=None, version=None, extra=None):
    """A view of len(queues) nodes with ``cpus`` CPUs each (or per node); each call is a
    new heartbeat (a fresh version) unless ``version`` is given."""
    if version is None:
        version = next(_versions)
    n = len(queues)
    cpus = cpus if isinstance(cpus, list) else [cpus] * n
    nodes = []
    for m in range(n):
        total = {"CPU": cpus[m], **((extra or {}).get(m, {}))}
        avail = dict(total) if available is None else {**total, "CPU": available[m]}
        nodes.append({"total": total, "available": avail, "queue_length": queues[m],
                      "running": 0 if running is None else running[m],
                      "alive": True if alive is None else alive[m]})
    return make_cluster_view(nodes, version=version)


def task(demand=CPU1, inputs=(), submitter=-1, function="f"):
    return TaskView(task_id=1, function=function, demand=demand,
                    inputs=tuple(InputView(b, tuple(locs)) for b, locs in inputs),
                    submitter=submitter)


def rng(seed=0):
    return np.random.default_rng(seed)


# --- PaperWaitTime ------------------------------------------------------------------

def trained_paper(**kw):
    """Node task times 1 s, 2 s, 10 s (function f); no bandwidth samples."""
    p = bind(PaperWaitTime(**kw))
    for node, t in enumerate([1.0, 2.0, 10.0]):
        p.observe_task("f", node, t, 0.0)
    return p


def test_paper_wait_time_least_queue_time_per_slot_plus_transfer():
    """waits = q*t/slots + remote/1.25e9: [8*1/4, 4*2/4 + 4, 0 + 4] = [2, 6, 4] -> node 0."""
    v = view([8, 4, 0])
    t = task(inputs=[(5_000_000_000, [0])])
    p = trained_paper()
    np.testing.assert_allclose(p.predicted_waits(t, v, 1.0), [2.0, 6.0, 4.0])
    assert p.place(t, v, 1.0, rng()) == Placement(0, 2.0)


def test_paper_wait_time_literal_formula_without_slots():
    """per_slot=False: [8*1, 4*2 + 4, 0 + 4] = [8, 12, 4] -> node 2."""
    p = trained_paper(per_slot=False)
    t = task(inputs=[(5_000_000_000, [0])])
    assert p.place(t, view([8, 4, 0]), 1.0, rng()) == Placement(2, 4.0)


def test_paper_wait_time_uses_learned_bandwidth_per_node():
    """Node 2 measured 1e8 B/s, so its 5 GB transfer costs 50 s; node 1 has no sample and
    borrows the overall estimate (1e8 too): [2, 2 + 50, 50] -> node 0. Without the input:
    [2, 2, 0] -> node 2."""
    p = trained_paper()
    p.observe_transfer(0, 2, 1_000_000_000, 10.0, 0.0)
    p.observe_transfer(0, 2, 0, 10.0, 0.0)          # empty transfer: ignored
    t = task(inputs=[(5_000_000_000, [0])])
    np.testing.assert_allclose(p.predicted_waits(t, view([8, 4, 0]), 1.0), [2.0, 52.0, 50.0])
    assert p.place(t, view([8, 4, 0]), 1.0, rng()) == Placement(0, 2.0)
    assert p.place(task(), view([8, 4, 0]), 1.0, rng()) == Placement(2, 0.0)


def test_paper_wait_time_cold_start_orders_by_queue_per_slot():
    """No samples: default 1 s per task, so the least queue/slots wins (node 1: 3/8)."""
    p = bind(PaperWaitTime())
    assert p.place(task(), view([2, 3, 1], cpus=[2, 8, 1]), 0.0, rng()) == Placement(1, 3 / 8)
    p = bind(PaperWaitTime(default_task_time_s=2.0))
    assert p.place(task(), view([2, 3, 1], cpus=[2, 8, 1]), 0.0, rng()) == Placement(1, 6 / 8)


def test_paper_wait_time_ties_go_to_the_lowest_index():
    assert bind(PaperWaitTime()).place(task(), view([2, 1, 1, 1]), 0.0, rng()).node == 1


def test_paper_wait_time_unbound_uses_global_averages():
    """Without bind_estimators the policy still works (global EWMA, alpha 0.1)."""
    p = PaperWaitTime()
    p.observe_task("f", 0, 4.0, 0.0)
    assert p.place(task(), view([1, 2]), 0.0, rng()) == Placement(0, 1.0)


def test_paper_wait_time_with_oracle_estimates():
    """Oracle estimators read the truth given to set_truth: node 0 is 10x slower."""
    p = PaperWaitTime()
    p.bind_estimators(KeyedEstimator(Oracle, "function_node"),
                      KeyedEstimator(Oracle, "node", "bandwidth"))
    p.set_truth(lambda q, f, n, now: (10.0 if n == 0 else 1.0) if q == "task_time" else 1e9)
    assert p.place(task(), view([1, 4]), 0.0, rng()) == Placement(1, 1.0)


# --- other policies -----------------------------------------------------------------

def test_recent_assignments_spreads_and_resets_on_new_view_version():
    """Cost = queue + tasks sent since the heartbeat; a new view version resets the counts."""
    p = bind(RecentAssignments())
    v0 = view([0, 2, 0])
    assert [p.place(task(), v0, 0.0, rng()).node for _ in range(5)] == [0, 2, 0, 2, 0]
    v1 = view([0, 2, 0], version=1)
    assert [p.place(task(), v1, 0.0, rng()).node for _ in range(3)] == [0, 2, 0]
    v2 = view([0, 0, 0])
    assert [p.place(task(), v2, 0.0, rng()).node for _ in range(3)] == [0, 1, 2]


def test_random_repeats_with_the_same_seed_and_skips_infeasible():
    v = view([0] * 6, cpus=[4, 4, 0.5, 4, 4, 4])
    r1, r2 = rng(0), rng(0)
    s1 = [bind(Random()).place(task(), v, 0.0, r1).node for _ in range(20)]
    s2 = [bind(Random()).place(task(), v, 0.0, r2).node for _ in range(20)]
    feasible = np.array([0, 1, 3, 4, 5])
    r3 = rng(0)
    assert s1 == s2 == [int(feasible[r3.integers(5)]) for _ in range(20)]
    assert 2 not in s1 and len(set(s1)) > 1


def test_round_robin_cycles_over_feasible_nodes():
    v = view([0] * 5, cpus=[4, 4, 0.5, 4, 4])
    p = bind(RoundRobin())
    assert [p.place(task(), v, 0.0, rng()).node for _ in range(6)] == [0, 1, 3, 4, 0, 1]


def test_least_loaded_uses_queue_plus_running_per_slot():
    """(q + r) / slots = [4/2, 6/8, 1/1] -> node 1."""
    v = view([2, 2, 0], cpus=[2, 8, 1], running=[2, 4, 1])
    assert bind(LeastLoaded()).place(task(), v, 0.0, rng()).node == 1


def test_power_of_two_choices_samples_d_and_picks_least_loaded():
    loads = [5, 0, 3, 1, 4, 2, 6, 7]
    v = view(loads)
    p = bind(PowerOfTwoChoices(d=2))
    r = rng(7)
    got = [p.place(task(), v, 0.0, r).node for _ in range(10)]
    r = rng(7)
    want = []
    for _ in range(10):
        pair = np.sort(r.choice(np.arange(8), size=2, replace=False))
        want.append(int(pair[np.argmin(np.array(loads)[pair])]))
    assert got == want
    # d >= feasible count: no sampling, the least loaded overall (lowest index on ties)
    assert bind(PowerOfTwoChoices(d=8)).place(task(), view([3, 1, 1]), 0.0, rng()).node == 1


def test_locality_first_prefers_most_local_bytes_then_least_wait():
    p = bind(LocalityFirst())
    t = task(inputs=[(100, [1, 2]), (50, [2]), (100, [0, 3])])
    assert p.place(t, view([9, 0, 9, 0]), 0.0, rng()).node == 2      # 150 bytes
    t = task(inputs=[(100, [1, 2])])
    assert p.place(t, view([0, 5, 3]), 0.0, rng()).node == 2          # tie 100: less queue
    assert p.place(t, view([0, 3, 3]), 0.0, rng()).node == 1          # full tie: lowest index
    v = view([4, 2, 3])
    assert p.place(task(), v, 0.0, rng()) == bind(PaperWaitTime()).place(task(), v, 0.0, rng())


def test_hybrid_keeps_on_submitter_under_threshold():
    """Submitter at 25 % CPU (score 0 below 0.5) ties the best score: it keeps the task."""
    v = view([0] * 4, available=[4, 3, 4, 4])
    assert bind(HybridSpread()).place(task(submitter=1), v, 0.0, rng()).node == 1


def test_hybrid_spreads_above_threshold():
    """Submitter at 75 %: top-k of the score-0 nodes; k = max(1, floor(0.2*4)) = 1 -> node 0;
    with top_k_fraction 1 the choice spreads over the available ones by seed."""
    v = view([0] * 4, available=[4, 1, 4, 4])
    assert bind(HybridSpread()).place(task(submitter=1), v, 0.0, rng()).node == 0
    p = bind(HybridSpread(top_k_fraction=1.0))
    r = rng(1)
    picks = [p.place(task(submitter=1), v, 0.0, r).node for _ in range(40)]
    assert set(picks) == {0, 1, 2, 3} and picks.count(1) < 20
    r = rng(1)
    assert picks == [p.place(task(submitter=1), v, 0.0, r).node for _ in range(40)]


def test_hybrid_prefers_available_over_busy_and_orders_by_score():
    """Node 0 has no free CPU (not a candidate while others are); then least score wins."""
    v = view([0] * 3, available=[0, 1, 1.5])          # scores 1, 0.75, 0.625
    assert bind(HybridSpread()).place(task(submitter=0), v, 0.0, rng()).node == 2
    busy = view([0] * 3, available=[0, 0, 0])         # none available: feasible, by index
    assert bind(HybridSpread()).place(task(), busy, 0.0, rng()).node == 0
    assert bind(HybridSpread()).place(task(submitter=2), busy, 0.0, rng()).node == 2


@pytest.mark.parametrize("cls", ALL)
def test_infeasible_task_gets_none(cls):
    assert bind(cls()).place(task({"GPU": 1}), view([0, 0]), 0.0, rng()) is None
    dead = view([0, 0], alive=[False, False])
    assert bind(cls()).place(task(), dead, 0.0, rng()) is None


@pytest.mark.parametrize("cls", ALL)
def test_dead_node_never_chosen_and_prediction_reported(cls):
    """The idle node 1 is dead; every choice is alive and feasible, with the shared
    predicted wait of the chosen node."""
    v = view([3, 0, 1, 2, 0], alive=[True, False, True, True, True], cpus=[4, 4, 4, 4, 0.5])
    p = bind(cls())
    r = rng(5)
    for i in range(20):
        t = task(inputs=[(1000, [i % 5])], submitter=i % 5)
        before = p.predicted_waits(t, v, 0.0)      # the prediction made at decision time
        pl = p.place(t, v, 0.0, r)
        assert pl.node not in (1, 4)
        assert pl.predicted_wait_s == before[pl.node]


def test_custom_resources_restrict_feasibility():
    v = view([5, 0, 0], extra={0: {"GPU": 1}})
    assert bind(PaperWaitTime()).place(task({"CPU": 1, "GPU": 1}), v, 0.0, rng()).node == 0


# --- validation and registry --------------------------------------------------------

@pytest.mark.parametrize("make, word", [
    (lambda: PaperWaitTime(default_task_time_s=0), "default_task_time_s"),
    (lambda: PaperWaitTime(default_bandwidth_bytes_per_s=-1), "default_bandwidth_bytes_per_s"),
    (lambda: PaperWaitTime(per_slot="yes"), "per_slot"),
    (lambda: PowerOfTwoChoices(d=0), "d must"),
    (lambda: HybridSpread(spread_threshold=1.5), "spread_threshold"),
    (lambda: HybridSpread(top_k_fraction=-0.1), "top_k_fraction"),
    (lambda: HybridSpread(top_k_absolute=0), "top_k_absolute"),
])
def test_constructor_validation(make, word):
    with pytest.raises(ValueError, match=word):
        make()


def test_registry_builds_placements_and_names_key_on_error():
    assert list(builtins("placement")) == [c.__name__ for c in ALL]
    p = build("placement", {"name": "HybridSpread", "top_k_absolute": 3}, key="scheduler.placement")
    assert isinstance(p, HybridSpread) and p.top_k_absolute == 3
    for spec in ({"name": "PowerOfTwoChoices", "d": 0}, {"name": "Random", "k": 1},
                 "NoSuch", "testbed.policy.estimators:Holt"):
        with pytest.raises(ConfigError, match="scheduler.placement"):
            build("placement", spec, key="scheduler.placement")


def test_count_recent_spreads_decisions_between_heartbeats():
    """With count_recent (the default) the tasks sent since the heartbeat count as queued,
    so equal nodes share the work; without it every decision on one view picks the same
    node (the herd a stale view causes)."""
    v = view([0, 0, 0, 0], cpus=1, version=5)
    p = bind(PaperWaitTime())
    assert [p.place(task(), v, 0.0, rng()).node for _ in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    literal = bind(PaperWaitTime(count_recent=False))
    assert [literal.place(task(), v, 0.0, rng()).node for _ in range(4)] == [0, 0, 0, 0]
    # a new heartbeat resets the counts
    v2 = view([0, 0, 0, 0], cpus=1, version=6)
    assert p.place(task(), v2, 0.0, rng()).node == 0
    # the prediction counts them too: the 5th task on a 1-slot node behind 1 sent task
    p3 = bind(PaperWaitTime(default_task_time_s=2.0))
    v3 = view([0, 0], cpus=1, version=9)
    waits = [p3.place(task(), v3, 0.0, rng()).predicted_wait_s for _ in range(4)]
    assert waits == [0.0, 0.0, 2.0, 2.0]


# --- fair baselines, residual wait, occupancy -----------------------------------------

def test_least_loaded_counts_its_own_assignments_since_the_heartbeat():
    """Between two heartbeats the view does not change: LeastLoaded adds what it sent each
    node since that node's report (as PaperWaitTime does), so it alternates instead of
    sending everything to node 0 (loads 0,0,1 -> 1,0,1 -> 1,1,1 -> 2,1,1 -> 2,2,1);
    count_recent=False is the herding rule."""
    v = view([0, 0, 1], cpus=1, running=[0, 0, 0])
    p = bind(LeastLoaded())
    assert [p.place(task(), v, 0.0, rng()).node for _ in range(5)] == [0, 1, 0, 1, 2]
    assert p.place(task(), view([0, 0, 1], cpus=1), 0.1, rng()).node == 0    # new heartbeat: reset
    herd = bind(LeastLoaded(count_recent=False))
    assert [herd.place(task(), v, 0.0, rng()).node for _ in range(5)] == [0] * 5


def trained(policy, times):
    """``policy`` with a per-node EWMA task time of ``times[m]`` on node m."""
    p = bind(policy)
    for m, t in enumerate(times):
        p.observe_task("f", m, t, 0.0)
    return p


def test_residual_wait_counts_running_tasks():
    """Node 0's slots are all busy with an empty queue: the paper says wait 0 and picks it;
    with each running task half an estimate from its end it waits 4 x 0.5 / 4 = 0.5 s,
    node 1 has a free slot (wait 0), node 2 (1 queued + 4 running) 0.75 s. The prediction
    reported is the paper's (0 for node 1)."""
    v = view([0, 0, 1], running=[4, 2, 4])
    assert trained(PaperWaitTime(), [1.0] * 3).place(task(), v, 0.0, rng()).node == 0
    p = trained(ResidualWaitTime(), [1.0] * 3)
    assert p.residual_waits(task(), v, 0.0).tolist() == [0.5, 0.0, 0.75]
    assert p.place(task(), v, 0.0, rng()) == Placement(1, 0.0)
    assert trained(ResidualWaitTime(residual_fraction=1.0), [1.0] * 3).residual_waits(
        task(), v, 0.0).tolist() == [1.0, 0.0, 1.25]
    literal = trained(ResidualWaitTime(per_slot=False), [1.0] * 3)
    assert literal.residual_waits(task(), v, 0.0).tolist() == [2.0, 0.0, 3.0]
    t = task(inputs=[(1.25e9, [1])])               # 1 s to fetch anywhere but node 1
    assert p.residual_waits(t, v, 0.0).tolist() == [1.5, 0.0, 1.75]


def test_residual_wait_counts_recent_assignments():
    """Node 1 (2 of 4 slots busy) takes two tasks at wait 0, then is full: the third goes
    to node 0 or 1 by residual wait (0.5 vs (0 + 0.5*2 + 2 recent) / 4 = 0.75)."""
    v = view([0, 0], running=[4, 2])
    p = trained(ResidualWaitTime(), [1.0, 1.0])
    assert [p.place(task(), v, 0.0, rng()).node for _ in range(3)] == [1, 1, 0]


def test_occupancy_prefers_the_node_that_finishes_first():
    """Two idle nodes: the paper ties at wait 0 and takes node 0 (3 s per task); Occupancy
    takes node 1 (1 s). Inputs on node 0 cost remote_bytes / 1.25e9 B/s elsewhere: 1 GB
    (0.8 s + 1 s < 3 s) still goes to node 1, 4 GB (3.2 s + 1 s) stays on node 0."""
    v = view([0, 0], running=[0, 0])
    assert trained(PaperWaitTime(), [3.0, 1.0]).place(task(), v, 0.0, rng()).node == 0
    p = trained(Occupancy(), [3.0, 1.0])
    assert p.place(task(), v, 0.0, rng()) == Placement(1, 0.0)
    assert p.place(task(inputs=[(1e9, [0])]), view([0, 0]), 0.0, rng()).node == 1
    assert p.place(task(inputs=[(4e9, [0])]), view([0, 0]), 0.0, rng()).node == 0


def test_occupancy_uses_absolute_estimates():
    """The same estimates x 10 change the choice when weighed against transfer time (4 GB
    on node 0: 30 s there vs 3.2 s + 10 s on node 1), and submitter_margin_s keeps a task
    on its submitter within that many seconds of the best."""
    t = task(inputs=[(4e9, [0])])
    assert trained(Occupancy(), [30.0, 10.0]).place(t, view([0, 0]), 0.0, rng()).node == 1
    v = view([0, 0])
    assert trained(Occupancy(submitter_margin_s=2.5), [3.0, 1.0]).place(
        task(submitter=0), v, 0.0, rng()).node == 0             # 3 <= 1 + 2.5
    assert trained(Occupancy(submitter_margin_s=1.5), [3.0, 1.0]).place(
        task(submitter=0), v, 0.0, rng()).node == 1


def test_occupancy_counts_queue_running_and_recent():
    """finish = (q + 0.5 r) x t / slots + t: nodes (q, r) = (2, 4), (0, 4), (0, 2) with
    t = 1 and 4 slots: 1.75, 1.5, 1.25 -> node 2; then node 2 with its recent task
    (1 + 1) / 4 + 1 = 1.5 ties node 1: lowest index."""
    v = view([2, 0, 0], running=[4, 4, 2])
    p = trained(Occupancy(), [1.0] * 3)
    assert [p.place(task(), v, 0.0, rng()).node for _ in range(3)] == [2, 1, 2]


@pytest.mark.parametrize("make, word", [
    (lambda: ResidualWaitTime(residual_fraction=-0.5), "residual_fraction"),
    (lambda: Occupancy(residual_fraction=math.inf), "residual_fraction"),
    (lambda: Occupancy(submitter_margin_s=-1), "submitter_margin_s"),
])
def test_new_policies_validate_arguments(make, word):
    with pytest.raises(ValueError, match=word):
        make()
