"""The simulator's [faults] section: each test states one rule and checks it on the Trace.

Runs are built as ``make_simulation`` builds them, plus the resolved ``[faults]`` table
(``build``). Every run here has ``run.validate`` on, so each task-state transition the
fault handling makes is checked against ``testbed.core.task``. Constant durations and no
overheads are used wherever an exact time is expected.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from testbed.core.errors import ConfigError
from testbed.sim import Simulation
from testbed.sim.faults import FaultySimulation
from testbed.studies.execute import make_simulation
from testbed.policy.build import build_policies
from testbed.studies.experiment import resolve
from testbed.workloads import Workload, parse_workload

pytestmark = pytest.mark.timeout(60)

NO_OVERHEADS = {"latency_s": 0.0, "gcs_write_s": 0.0, "gcs_read_s": 0.0, "local_decision_s": 0.0}
SHAPE_PARAMS = {"chain_length": 4, "map_tasks": 3, "reduce_tasks": 2, "tree_leaves": 5, "tree_fanin": 2}
EPS = 1e-9


def const(x: float) -> dict:
    return {"dist": "constant", "value": x}


def config(cluster=None, workload=None, scheduler=None, faults=None, **run) -> dict:
    return resolve({"cluster": cluster or {}, "workload": workload or {}, "scheduler": scheduler or {},
                    "faults": faults or {}, "run": {"trace": "rows", "validate": True, **run}})


def build(cfg: dict, seed: int = 0) -> Simulation:
    """A Simulation exactly as ``make_simulation`` builds it, with the [faults] table passed on."""
    placement, spillover = build_policies(cfg["scheduler"])
    workload = Workload(parse_workload(cfg["workload"]), seed)
    return Simulation(cfg["cluster"], workload, placement, spillover, seed=seed, keep_rows=True,
                      validate=cfg["run"]["validate"], max_sim_time_s=cfg["run"]["max_sim_time_s"],
                      faults=cfg["faults"], decide_at=cfg["scheduler"]["decide_at"])


def simulate(cluster=None, workload=None, scheduler=None, faults=None, *, seed=0, **run):
    sim = build(config(cluster, workload, scheduler, faults, **run), seed)
    return sim, sim.run()


def last_rows(tr: pd.DataFrame) -> pd.DataFrame:
    """Each task's row of its highest attempt."""
    return tr.sort_values(["task_id", "attempt"]).groupby("task_id").tail(1)


def assert_attempts_well_formed(tr: pd.DataFrame, info: dict) -> None:
    """One row per (task, attempt), attempts numbered 1..k, and info counts the re-executions."""
    assert not tr.duplicated(["task_id", "attempt"]).any()
    g = tr.groupby("task_id").attempt
    assert (g.max() == g.size()).all() and (g.min() == 1).all()
    assert info["reexecuted"] == int((tr.attempt > 1).sum())


def kills(sim) -> list[tuple[float, int]]:
    return [(t, m) for t, what, m in sim.fault_log if what == "kill"]


# --- construction ---------------------------------------------------------------------

def test_a_faults_table_that_injects_nothing_gives_the_plain_simulation():
    """Without failures or additions the engine is the fault-free one (its hot path untouched),
    it reports zero fault counters, and its Trace equals make_simulation's."""
    cfg = config({"nodes": 3}, {"shape": "chains", "jobs": 20, **SHAPE_PARAMS},
                 faults={"lineage": False, "max_retries": 0, "restore_after_s": 1.0})
    sim = build(cfg, seed=2)
    assert type(sim) is Simulation
    res = sim.run()
    assert all(res.info[k] == 0 for k in ("reexecuted", "lost_objects", "nodes_killed", "nodes_added"))
    plain = make_simulation(cfg, seed=2, keep_rows=True).run()
    assert res.trace.equals(plain.trace)
    assert isinstance(build(config(faults={"kill_every_s": 1.0})), FaultySimulation)


def test_fault_handling_adds_nothing_when_no_fault_fires():
    """Random kills that min_live_nodes always skips leave the run exactly as without faults:
    same Trace, no kill (the fault engine's own bookkeeping changes no decision)."""
    cluster = {"nodes": 4, "cpus_per_node": 2}
    workload = {"shape": "map_reduce", "jobs": 30, "in_flight": 3, "drivers": 2, **SHAPE_PARAMS,
                "output_bytes": {"dist": "exponential", "mean": 1e6}}
    scheduler = {"spillover": {"name": "QueueThreshold", "threshold": 1}}
    sim, res = simulate(cluster, workload, scheduler, {"kill_every_s": 0.05, "min_live_nodes": 4}, seed=1)
    assert isinstance(sim, FaultySimulation)
    assert res.info["nodes_killed"] == 0 and sim.fault_log == []
    plain = make_simulation(config(cluster, workload, scheduler), seed=1, keep_rows=True).run()
    assert res.trace.equals(plain.trace)


def test_a_failure_of_a_node_that_does_not_exist_is_a_config_error():
    """node_failures / worker_failures name existing nodes (or ones added by then); otherwise
    the error names the key."""
    with pytest.raises(ConfigError, match=r"faults.node_failures\[0\].node"):
        build(config({"nodes": 2}, faults={"node_failures": [{"at_s": 1.0, "node": 2}]}))
    with pytest.raises(ConfigError, match=r"faults.worker_failures\[0\].node"):
        build(config({"nodes": 2}, faults={"node_additions": [{"at_s": 2.0}],
                                           "worker_failures": [{"at_s": 1.0, "node": 2}]}))
    build(config({"nodes": 2}, faults={"node_additions": [{"at_s": 1.0}],
                                       "node_failures": [{"at_s": 1.0, "node": 2}]}))


# --- determinism ------------------------------------------------------------------------

def _random_kill_run(seed):
    return simulate({"nodes": 6, "cpus_per_node": 2, "heartbeat_interval_s": 0.05, "num_heartbeats_timeout": 3},
                    {"shape": "chains", "jobs": 40, "in_flight": 3, "drivers": 2, **SHAPE_PARAMS,
                     "output_bytes": {"dist": "exponential", "mean": 1e6}},
                    {"spillover": {"name": "QueueThreshold", "threshold": 1}},
                    {"kill_every_s": 0.2, "min_live_nodes": 2, "restore_after_s": 0.3, "max_retries": -1,
                     "worker_failures": [{"at_s": 0.1 * k, "node": k % 6} for k in range(1, 6)]},
                    seed=seed)


def test_same_seed_gives_the_same_trace_and_kills_under_faults():
    """Same config + seed -> identical Trace (re-executions included) and the same kills;
    another seed draws other random kills."""
    sim_a, a = _random_kill_run(3)
    sim_b, b = _random_kill_run(3)
    sim_c, _ = _random_kill_run(4)
    assert a.info["complete"] and a.info["nodes_killed"] >= 3 and a.info["reexecuted"] > 0
    assert a.trace.equals(b.trace)
    assert sim_a.fault_log == sim_b.fault_log
    assert [m for _, m in kills(sim_a)] != [m for _, m in kills(sim_c)]


# --- conservation ------------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["independent", "chains", "map_reduce", "tree_reduce"])
def test_with_retries_every_task_ends_finished_and_the_run_completes(shape):
    """Nodes fail (some come back), retries are unlimited: the run completes, every task's
    last attempt is "finished", attempts are numbered 1..k, and nothing starts on a dead node."""
    jobs = 40                  # enough that the run outlasts the last failure (0.9 s)
    # 6 jobs in flight per driver on 10 CPUs: each failure finds tasks on its node to lose
    sim, res = simulate({"nodes": 5, "cpus_per_node": 2, "heartbeat_interval_s": 0.05, "num_heartbeats_timeout": 4},
                        {"shape": shape, "jobs": jobs, "in_flight": 6, "drivers": 2, **SHAPE_PARAMS,
                         "output_bytes": {"dist": "exponential", "mean": 1e6}},
                        {"spillover": {"name": "QueueThreshold", "threshold": 1}, "placement": "Random"},
                        {"node_failures": [{"at_s": 0.3, "node": 1}, {"at_s": 0.6, "node": 3}, {"at_s": 0.9, "node": 0}],
                         "restore_after_s": 0.5, "max_retries": -1})
    tr = res.trace
    assert res.info["complete"] and not res.info["stuck"]
    assert res.info["nodes_killed"] == 3 and res.info["nodes_restored"] >= 2
    assert (tr.state == "lost").any()
    assert tr.task_id.nunique() == jobs * sim.workload.tasks_per_job
    assert (last_rows(tr).state == "finished").all()
    assert_attempts_well_formed(tr, res.info)
    for t, m in kills(sim):
        started_dead = tr[(tr.node == m) & (tr.started_s > t + EPS) & (tr.started_s < t + 0.5 - EPS)]
        assert started_dead.empty


# --- lineage reconstruction ------------------------------------------------------------------

#: a chain of 3 one-second tasks, each through the global scheduler (0.5 s per decision),
#: placed round-robin on 3 nodes, each decided once its input exists: t0 runs on node 0 in
#: [0.5, 1.5]; t1 is being decided in [1.5, 2.0] when node 0 dies at 1.7, taking t0's output
#: with it
CHAIN = ({"nodes": 3, "cpus_per_node": 1, **NO_OVERHEADS, "global_decision_s": 0.5,
          "heartbeat_interval_s": 0.1, "num_heartbeats_timeout": 1},
         {"shape": "chains", "chain_length": 3, "jobs": 1, "in_flight": 1, "duration": const(1.0),
          "driver_nodes": [0]},
         {"spillover": "AlwaysGlobal", "placement": "RoundRobin", "decide_at": "inputs_ready"})


def _rows(tr):
    return {(r.task_id, r.attempt): (r.state, r.node, r.started_s, r.finished_s) for r in tr.itertuples()}


def test_a_lost_intermediate_object_is_rebuilt_by_reexecuting_its_producer():
    """t0's output dies with node 0 before t1 fetched it: t0 runs again (attempt 2, on node 1,
    via the moved driver and the global scheduler, which has declared node 0 dead by then),
    t1 waits for it, and the chain finishes; t0's first attempt stays "finished"."""
    sim, res = simulate(*CHAIN, {"node_failures": [{"at_s": 1.7, "node": 0}]})
    rows = _rows(res.trace)
    assert rows.keys() == {(0, 1), (0, 2), (1, 1), (2, 1)}
    # decisions: t1 [1.5, 2.0] (it finds its input gone), t0's rebuild [2.0, 2.5], t1 [3.5, 4.0], t2 [5.0, 5.5]
    for key, (state, node, start, end) in {(0, 1): ("finished", 0, 0.5, 1.5), (0, 2): ("finished", 1, 2.5, 3.5),
                                           (1, 1): ("finished", 2, 4.0, 5.0), (2, 1): ("finished", 1, 5.5, 6.5)}.items():
        got = rows[key]
        assert got[:2] == (state, node), key
        assert got[2:] == pytest.approx((start, end), abs=EPS), key
    assert res.info["lost_objects"] == 1 and res.info["reexecuted"] == 1 and res.info["complete"]
    assert sim.driver_nodes == [1]


def test_without_lineage_the_reader_of_a_lost_object_fails():
    """lineage = false: t0's lost output cannot be rebuilt, so t1 (which still needed it) and
    t2 after it end "failed" when node 0 dies; nothing runs twice and the job still ends."""
    _, res = simulate(*CHAIN, {"node_failures": [{"at_s": 1.7, "node": 0}], "lineage": False})
    rows = _rows(res.trace)
    assert rows.keys() == {(0, 1), (1, 1), (2, 1)}
    assert rows[(0, 1)][0] == "finished"
    assert [rows[(k, 1)][0] for k in (1, 2)] == ["failed", "failed"]
    assert [rows[(k, 1)][3] for k in (1, 2)] == pytest.approx([1.7, 1.7])
    assert res.info["complete"] and res.info["reexecuted"] == 0 and res.metrics["failed"] == 2


def test_a_lost_sink_is_rebuilt_before_the_driver_gets_the_job():
    """A sink that finished while its job is not done yet dies with its node: it is re-executed,
    recursively with its lost input, and the driver gets the job only after the rebuild.
    Map-reduce 2 x 2, round-robin: maps on nodes 0, 1 in [0, 1]; reduce r0 on the slow node 2
    in [1, 3], r1 on node 0 in [1, 2]. Node 0 dies at 2.5 with r1's output and map m0's: m0 runs
    again on node 1 in [2.5, 3.5], then r1 on node 2 in [3.5, 5.5]."""
    sim, res = simulate({"nodes": 3, "cpus_per_node": 1, **NO_OVERHEADS, "global_decision_s": 0.0,
                         "slow_nodes": 1, "slow_factor": 2.0, "heartbeat_interval_s": 0.1,
                         "num_heartbeats_timeout": 1},
                        {"shape": "map_reduce", "map_tasks": 2, "reduce_tasks": 2, "jobs": 1,
                         "duration": const(1.0), "driver_nodes": [0]},
                        {"spillover": "AlwaysGlobal", "placement": "RoundRobin", "decide_at": "inputs_ready"},
                        {"node_failures": [{"at_s": 2.5, "node": 0}]})
    rows = _rows(res.trace)
    want = {(0, 1): ("finished", 0, 0.0, 1.0), (0, 2): ("finished", 1, 2.5, 3.5), (1, 1): ("finished", 1, 0.0, 1.0),
            (2, 1): ("finished", 2, 1.0, 3.0), (3, 1): ("finished", 0, 1.0, 2.0), (3, 2): ("finished", 2, 3.5, 5.5)}
    assert rows.keys() == want.keys()
    for key, (state, node, start, end) in want.items():
        assert rows[key][:2] == (state, node), key
        assert rows[key][2:] == pytest.approx((start, end), abs=EPS), key
    assert res.info["lost_objects"] == 2 and res.info["reexecuted"] == 2
    assert res.info["complete"] and res.info["sim_end_s"] == pytest.approx(5.5)


# --- retries --------------------------------------------------------------------------------

def test_with_max_retries_zero_a_lost_task_fails():
    """max_retries = 0: a task whose attempt dies with its node ends "failed" in that one row;
    no task ever runs twice, and the run still completes."""
    sim, res = simulate({"nodes": 2, "cpus_per_node": 1, **NO_OVERHEADS, "heartbeat_interval_s": 0.1,
                         "num_heartbeats_timeout": 2},
                        {"jobs": 20, "in_flight": 2, "duration": const(0.1), "driver_nodes": [0]},
                        {"spillover": "AlwaysGlobal", "placement": "RoundRobin"},
                        {"node_failures": [{"at_s": 0.25, "node": 1}], "max_retries": 0})
    tr = res.trace
    assert res.info["complete"] and not res.info["stuck"]
    assert (tr.attempt == 1).all() and tr.task_id.is_unique and len(tr) == 20
    assert set(tr.state) == {"finished", "failed"}
    killed = tr[(tr.node == 1) & np.isclose(tr.finished_s, 0.25)]
    assert len(killed) == 1 and (killed.state == "failed").all()
    assert (tr[tr.state == "failed"].node == 1).all()
    assert res.metrics["lost"] == 0 and res.info["reexecuted"] == 0


def test_a_killed_worker_costs_its_task_exactly_one_extra_attempt():
    """worker_failures kills the lowest task id running on the node: that attempt ends "lost"
    at the kill and the task runs again at once (the node lives on); a worker failure on a
    node running nothing does nothing."""
    sim, res = simulate({"nodes": 2, "cpus_per_node": 2, **NO_OVERHEADS},
                        {"jobs": 2, "in_flight": 2, "duration": const(1.0), "driver_nodes": [0]},
                        {"spillover": "AlwaysLocal"},
                        {"worker_failures": [{"at_s": 0.25, "node": 1}, {"at_s": 0.5, "node": 0}]})
    rows = _rows(res.trace)
    assert rows.keys() == {(0, 1), (0, 2), (1, 1)}
    assert rows[(0, 1)][:2] == ("lost", 0) and rows[(0, 1)][2:] == pytest.approx((0.0, 0.5))
    assert rows[(0, 2)][:2] == ("finished", 0) and rows[(0, 2)][2:] == pytest.approx((0.5, 1.5))
    assert rows[(1, 1)][:2] == ("finished", 0) and rows[(1, 1)][2:] == pytest.approx((0.0, 1.0))
    assert sim.fault_log == [(0.5, "worker", 0)]
    assert res.info["reexecuted"] == 1 and res.info["nodes_killed"] == 0


# --- heartbeats ---------------------------------------------------------------------------

def test_tasks_sent_to_a_dead_node_are_lost_until_the_view_declares_it_dead():
    """Node 2 dies at 1.0; the view shows it alive until 5 heartbeats (0.5 s) are missed. Until
    then the global scheduler keeps sending it tasks, which are lost on arrival and placed again
    once it is declared dead; no attempt starts on it after its death, none is sent after."""
    interval, missed, t_kill = 0.1, 5, 1.0
    sim, res = simulate({"nodes": 4, "cpus_per_node": 1, **NO_OVERHEADS, "heartbeat_interval_s": interval,
                         "num_heartbeats_timeout": missed},
                        {"jobs": 120, "in_flight": 4, "duration": const(0.1), "driver_nodes": [0]},
                        {"spillover": "AlwaysGlobal", "placement": "RoundRobin"},
                        {"node_failures": [{"at_s": t_kill, "node": 2}], "max_retries": -1})
    tr = res.trace
    declared = t_kill + missed * interval
    on2 = tr[tr.node == 2]
    assert res.info["complete"] and (last_rows(tr).state == "finished").all()
    assert not (on2.started_s > t_kill + EPS).any()
    assert not (on2.placed_s > declared + EPS).any()
    lost_on_arrival = on2[(on2.state == "lost") & (on2.placed_s > t_kill)]
    assert len(lost_on_arrival) >= 3
    assert (lost_on_arrival.finished_s <= declared + EPS).all()
    retried = tr[tr.task_id.isin(lost_on_arrival.task_id) & (tr.state == "finished")]
    assert len(retried) == len(lost_on_arrival)
    assert (retried.placed_s >= declared - EPS).all() and (retried.node != 2).all()


# --- nodes joining -----------------------------------------------------------------------

def test_an_added_node_runs_tasks_once_the_view_shows_it():
    """A node added at 1.0 gets a new index and runs tasks, placed only from the first
    heartbeat after it joined."""
    sim, res = simulate({"nodes": 2, "cpus_per_node": 1, **NO_OVERHEADS, "heartbeat_interval_s": 0.25},
                        {"jobs": 100, "in_flight": 4, "duration": const(0.1)},
                        {"spillover": "AlwaysGlobal", "placement": "LeastLoaded"},
                        {"node_additions": [{"at_s": 0.9, "cpus": 2, "speed": 2.0}]})
    tr = res.trace
    new = tr[tr.node == 2]
    assert res.info["complete"] and res.info["nodes_added"] == 1 and res.info["nodes"] == 3
    assert len(new) > 10 and (new.placed_s >= 1.0 - EPS).all()
    np.testing.assert_allclose(new.finished_s - new.started_s, 0.05, atol=EPS)   # speed 2


def test_a_demand_only_a_future_node_holds_waits_for_it_and_one_no_node_holds_is_infeasible():
    """GPU tasks no initial node can hold wait (not "infeasible") and run on the GPU node added
    at 2.0; a TPU demand that no configured or added node ever has is "infeasible"."""
    functions = [{"name": "cpu", "weight": 2.0}, {"name": "gpu", "resources": {"CPU": 1.0, "GPU": 1.0}},
                 {"name": "tpu", "resources": {"CPU": 1.0, "TPU": 1.0}, "weight": 0.5}]
    _, res = simulate({"nodes": 2, "cpus_per_node": 2, "heartbeat_interval_s": 0.1},
                      {"jobs": 80, "in_flight": 4, "drivers": 2, "duration": const(0.05), "functions": functions},
                      {"spillover": {"name": "QueueThreshold", "threshold": 2}},
                      {"node_additions": [{"at_s": 2.0, "cpus": 1, "gpus": 1}]})
    tr = res.trace
    gpu, tpu = tr[tr.function == "gpu"], tr[tr.function == "tpu"]
    assert res.info["complete"] and len(gpu) > 5 and len(tpu) > 2
    assert (gpu.state == "finished").all() and (gpu.node == 2).all() and (gpu.started_s >= 2.0).all()
    assert (tpu.state == "infeasible").all()


def test_a_task_only_a_dead_node_could_hold_waits_and_the_run_ends_stuck():
    """The only GPU node dies and never comes back: GPU tasks wait instead of being
    "infeasible", and with nothing left to happen the run ends "stuck" instead of hanging."""
    _, res = simulate({"node_groups": [{"count": 2, "cpus": 2}, {"count": 1, "cpus": 2, "gpus": 1}],
                       "heartbeat_interval_s": 0.1, "num_heartbeats_timeout": 2},
                      {"jobs": 60, "in_flight": 2, "duration": const(0.1),
                       "functions": [{"name": "cpu", "weight": 2.0},
                                     {"name": "gpu", "resources": {"CPU": 1.0, "GPU": 1.0}}]},
                      {}, {"node_failures": [{"at_s": 0.5, "node": 2}], "max_retries": -1})
    assert res.info["stuck"] and not res.info["complete"]
    assert res.info["sim_end_s"] < 2.0
    assert not (res.trace.state == "infeasible").any()


def test_a_restored_node_runs_tasks_again_after_it_comes_back():
    """restore_after_s: node 1 dies at 1.0 and comes back empty at 2.0; it runs nothing in
    between and runs tasks again afterwards (from the first heartbeat that shows it)."""
    sim, res = simulate({"nodes": 3, "cpus_per_node": 1, **NO_OVERHEADS, "heartbeat_interval_s": 0.1,
                         "num_heartbeats_timeout": 3},
                        {"jobs": 150, "in_flight": 3, "duration": const(0.1), "driver_nodes": [0]},
                        {"spillover": "AlwaysGlobal", "placement": "RoundRobin"},
                        {"node_failures": [{"at_s": 1.0, "node": 1}], "restore_after_s": 1.0, "max_retries": -1})
    tr = res.trace
    on1 = tr[tr.node == 1]
    assert res.info["complete"] and res.info["nodes_restored"] == 1
    assert sim.fault_log == [(1.0, "kill", 1), (2.0, "restore", 1)]
    assert not ((on1.started_s > 1.0 + EPS) & (on1.started_s < 2.0)).any()
    assert ((on1.started_s >= 2.0) & (on1.state == "finished")).sum() > 10


def test_a_driver_on_a_dead_node_moves_to_the_lowest_live_node():
    """The driver's node 0 dies: later jobs, and the retries of the tasks lost with it, are
    submitted from node 1, the lowest live node."""
    sim, res = simulate({"nodes": 3, "cpus_per_node": 2, **NO_OVERHEADS},
                        {"jobs": 60, "in_flight": 2, "duration": const(0.1), "driver_nodes": [0]},
                        {}, {"node_failures": [{"at_s": 1.0, "node": 0}], "max_retries": -1})
    tr = res.trace
    assert res.info["complete"] and sim.driver_nodes == [1]
    assert (tr[tr.submitted_s > 1.0].submitter == 1).all()
    assert (tr[tr.attempt > 1].submitter == 1).all()
    assert (tr[(tr.submitted_s < 1.0) & (tr.attempt == 1)].submitter == 0).all()


# --- random kills ----------------------------------------------------------------------------

def test_random_kills_never_go_below_min_live_nodes():
    """kill_every_s kills a random live node each period but skips a kill that would leave
    fewer than min_live_nodes alive: with 5 nodes and a minimum of 2, exactly 3 die."""
    sim, res = simulate({"nodes": 5, "cpus_per_node": 2, "heartbeat_interval_s": 0.05, "num_heartbeats_timeout": 2},
                        {"jobs": 200, "in_flight": 4, "duration": const(0.05)},
                        {"spillover": {"name": "QueueThreshold", "threshold": 1}},
                        {"kill_every_s": 0.2, "min_live_nodes": 2, "max_retries": -1})
    assert res.info["complete"] and res.info["nodes_killed"] == 3
    assert len({m for _, m in kills(sim)}) == 3
    assert sum(sim.alive) == 2


# --- validation mode -------------------------------------------------------------------------

VALIDATION_CASES = {
    "kills_restores_workers": {"kill_every_s": 0.15, "min_live_nodes": 1, "restore_after_s": 0.2,
                               "worker_failures": [{"at_s": 0.05 * k, "node": k % 4} for k in range(1, 10)]},
    "no_lineage": {"kill_every_s": 0.15, "min_live_nodes": 2, "lineage": False},
    "no_retries": {"kill_every_s": 0.15, "min_live_nodes": 2, "max_retries": 0,
                   "worker_failures": [{"at_s": 0.1, "node": 0}]},
    "additions": {"node_failures": [{"at_s": 0.1, "node": 0}, {"at_s": 0.3, "node": 4}],
                  "node_additions": [{"at_s": 0.2, "cpus": 1}], "restore_after_s": 0.3},
}


@pytest.mark.parametrize("shape", ["chains", "map_reduce", "tree_reduce"])
@pytest.mark.parametrize("case", VALIDATION_CASES)
def test_validation_mode_accepts_every_transition_under_faults(case, shape):
    """With run.validate every transition of lost, retried, rebuilt and failed tasks is a legal
    one of core/task.py; attempts stay well formed and the run ends."""
    sim, res = simulate({"nodes": 4, "cpus_per_node": 2, "heartbeat_interval_s": 0.05, "num_heartbeats_timeout": 2},
                        {"shape": shape, "jobs": 25, "in_flight": 3, "drivers": 2, **SHAPE_PARAMS,
                         "duration": {"dist": "exponential", "mean": 0.05},
                         "output_bytes": {"dist": "exponential", "mean": 1e6}},
                        {"spillover": {"name": "QueueThreshold", "threshold": 1}}, VALIDATION_CASES[case])
    tr = res.trace
    assert res.info["complete"] and res.info["nodes_killed"] >= 1
    assert tr.task_id.nunique() == 25 * sim.workload.tasks_per_job
    assert_attempts_well_formed(tr, res.info)
    assert not math.isnan(res.metrics["makespan_s"])


def test_a_task_placed_at_submission_is_lost_with_the_node_it_waits_on():
    """decide_at = "submit": the chain's three tasks are decided at submission, one after
    another by the global scheduler (0.5 s each): t0 on node 0 runs in [0.5, 1.5], t1 waits on
    node 1 for t0's output, t2 on node 2 for t1's. Node 1 dies at 1.2 with t1 waiting there:
    t1's attempt is lost (it never started), and its retry is decided at once, like a new
    task (the global scheduler is free at 1.5: placed at 2.0, on a live node); it runs in
    [2.0, 3.0] and t2, still waiting on node 2, in [3.0, 4.0]."""
    cluster, workload, scheduler = CHAIN
    sim, res = simulate(cluster, workload, {**scheduler, "decide_at": "submit"},
                        {"node_failures": [{"at_s": 1.2, "node": 1}]})
    rows = _rows(res.trace)
    assert rows.keys() == {(0, 1), (1, 1), (1, 2), (2, 1)}
    state, node, start, end = rows[(1, 1)]
    assert (state, node, end) == ("lost", 1, pytest.approx(1.2)) and start != start   # never started
    for key, (state, start, end) in {(0, 1): ("finished", 0.5, 1.5), (1, 2): ("finished", 2.0, 3.0),
                                     (2, 1): ("finished", 3.0, 4.0)}.items():
        assert rows[key][0] == state, key
        assert rows[key][2:] == pytest.approx((start, end), abs=EPS), key
    assert rows[(0, 1)][1] == 0 and rows[(1, 2)][1] != 1 and rows[(2, 1)][1] == 2
    tr = res.trace
    assert tr.placed_s[(tr.task_id == 2)].iloc[0] == pytest.approx(1.5)      # decided at submission
    assert res.info["complete"] and res.info["reexecuted"] == 1
