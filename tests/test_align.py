"""Rules both engines share, checked on both: the same config and seed give the same
job -> driver split and the same draws in the simulator and the real runtime.
Real runs are small (a few seconds each) and leave nothing running (conftest)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import run_toml

from test_sim_faults import config, kills, simulate

from testbed.core.errors import ConfigError
from testbed.core.faults import (RANDOM_KILL_PROTECTED, check_real_node_failures, driver_nodes,
                                  random_kill_rng, random_victim)
from testbed.real.engine import _driver_nodes
from testbed.workloads import Workload, parse_workload

pytestmark = pytest.mark.timeout(120)

CONFIG = """
    [cluster]
    nodes = 4
    cpus_per_node = 2
    [workload]
    shape = "independent"
    jobs = 40
    drivers = 2
    in_flight = 1
    arrival = "{arrival}"
    rate_per_s = 40.0
    functions = [{{name = "a", weight = 2.0, duration = {{dist = "exponential", mean = 0.01}}}},
                 {{name = "b", duration = {{dist = "uniform", low = 0.001, high = 0.02}}}}]
    [run]
    engine = "sim"
    real_nodes = 4
    real_cpus_per_node = 2
    real_max_jobs = 40
    real_time_scale = 1.0
"""


def _jobs(trace):
    """(job_id, submitter node, function) of every finished task."""
    done = trace[trace.state == "finished"]
    return sorted(zip(done.job_id.tolist(), done.submitter.tolist(), done.function.tolist()))


@pytest.mark.parametrize("arrival", ["closed", "poisson"])
def test_job_j_has_the_same_driver_and_draws_in_both_engines(tmp_path, arrival):
    """Driver d submits jobs d, d + D, ... in both engines (the workload's split rule), and job
    j's function and duration are the workload's draws for j in both; the simulator's arrival
    times are each driver's own gaps, which the real drivers wait out too."""
    text = CONFIG.format(arrival=arrival)
    sim = run_toml(tmp_path / "sim.toml", text).trace
    real = run_toml(tmp_path / "real.toml", text, ["run.engine=real"]).trace
    assert len(sim) == len(real) == 40
    assert _jobs(sim) == _jobs(real)
    wl_table = {"shape": "independent", "jobs": 40, "drivers": 2, "in_flight": 1, "arrival": arrival,
                "rate_per_s": 40.0, "functions": [
                    {"name": "a", "weight": 2.0, "duration": {"dist": "exponential", "mean": 0.01}},
                    {"name": "b", "duration": {"dist": "uniform", "low": 0.001, "high": 0.02}}]}
    wl = Workload(parse_workload(wl_table), 0)
    drivers = {0: 0, 2: 1}            # the default driver nodes of 2 drivers on 4 nodes
    for tr in (sim, real):
        assert set(tr.submitter) == set(drivers)
        for node, d in drivers.items():
            mine = tr[tr.submitter == node].sort_values("submitted_s", kind="stable")
            assert mine.job_id.tolist() == list(wl.driver_jobs(d))      # in its order, too
    for j, fn, ran in zip(sim.job_id, sim.function, sim.finished_s - sim.started_s):
        task = wl.job(int(j), int(j) % 2, 0.0).tasks[0]
        assert fn == task.function and ran == pytest.approx(task.duration_s)
    for j, ran in zip(real.job_id, real.finished_s - real.started_s):
        assert ran >= wl.job(int(j), int(j) % 2, 0.0).tasks[0].duration_s * 0.95   # slept its draw
    if arrival == "poisson":
        gaps = Workload(parse_workload(wl_table), 0)
        for node, d in drivers.items():
            want = np.cumsum([gaps.next_arrival_gap(d) for _ in wl.driver_jobs(d)])
            got_sim = sim[sim.submitter == node].sort_values("job_id").submitted_s.to_numpy()
            got_real = real[real.submitter == node].sort_values("job_id").submitted_s.to_numpy()
            assert got_sim == pytest.approx(want)
            # the real driver waits out the same gaps (x the CPU ratio, 1 here) from its own
            # start: a busy machine can make a submission late, never early (no job comes before
            # its drawn time on the run's clock; it used to count gaps >= drawn - 5 ms, which a
            # loaded machine's catch-up after a late start broke 1 time in 3)
            assert (got_real >= want - 0.005).all()


# --- driver nodes and random kills: one rule in testbed.core.faults -------------------------

@pytest.mark.parametrize("faults, want", [
    ({"node_failures": [{"at_s": 1.0, "node": 3}, {"at_s": 2.0, "node": 1}]}, [0, 0, 2, 2]),
    ({"kill_every_s": 0.5}, [0, 0, 0, 0]),
    ({}, [0, 1, 2, 3]),
])
def test_both_engines_put_the_drivers_on_the_same_nodes(faults, want):
    """Drivers spread over the nodes no fault kills, by one rule (core.faults.driver_nodes)."""
    cluster = {"nodes": 4, "heartbeat_interval_s": 0.05}
    workload = {"jobs": 8, "drivers": 4}
    sim, _ = simulate(cluster, workload, None, faults)
    full = config(cluster, workload, None, faults)
    assert sim._driver_nodes() == want
    assert _driver_nodes(dict(full["workload"]), full["faults"], 4) == want
    assert driver_nodes((), 4, 4, [3, 1]) == [0, 0, 2, 2]
    assert driver_nodes((5, 2), 2, 4) == [1, 2]            # given: node k is k % n


@pytest.mark.parametrize("node, real_nodes", [(0, 4), (4, 4), (2, 2)])
def test_a_scheduled_failure_the_real_engine_cannot_honour_is_a_config_error(node, real_nodes):
    """A scheduled failure of what is node 0 on the real engine (node k is k % real_nodes
    there; node 0 holds the driver) is rejected before anything runs, naming the key — never
    skipped, which would give a fault-free run with drivers placed as if it had a fault. The
    simulator carries it out."""
    faults = {"node_failures": [{"at_s": 0.1, "node": 1}, {"at_s": 0.2, "node": node}]}
    cluster = {"nodes": 8}
    with pytest.raises(ConfigError) as exc:
        config(cluster, {"jobs": 8}, None, faults, engine="real", real_nodes=real_nodes)
    assert exc.value.key == "faults.node_failures[1].node"
    assert "node 0 of the real engine" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match=r"faults.node_failures\[1\].node"):
        check_real_node_failures(faults["node_failures"], real_nodes)   # run_real's own check
    sim, _ = simulate(cluster, {"jobs": 40, "drivers": 2, "duration": {"dist": "constant", "value": 0.5}},
                      None, faults)
    assert (0.2, node) in kills(sim)                     # the simulator carries it out
    ok = config(cluster, {"jobs": 8}, None, {"node_failures": [{"at_s": 1.0, "node": 3}]}, engine="real",
                real_nodes=4)
    assert ok["faults"]["node_failures"] == [{"at_s": 1.0, "node": 3}]


def test_random_kills_spare_the_same_nodes_in_both_engines():
    """The simulator's random kills spare node 0, as the runtime's must (its driver
    connection), and draw from the same generator: the victims of a run are the ones
    random_victim picks from random_kill_rng(seed) over the same live nodes."""
    sim, res = simulate({"nodes": 4, "cpus_per_node": 2, "heartbeat_interval_s": 0.05, "num_heartbeats_timeout": 4},
                        {"jobs": 400, "in_flight": 2, "duration": {"dist": "constant", "value": 0.05}},
                        None, {"kill_every_s": 0.2, "restore_after_s": 0.3, "min_live_nodes": 1,
                               "max_retries": -1})
    victims = [m for _, m in kills(sim)]
    assert len(victims) >= 5 and 0 not in victims
    assert RANDOM_KILL_PROTECTED == {0}
    rng = random_kill_rng(0)
    assert random_victim(range(4), 1, rng, protected=RANDOM_KILL_PROTECTED) in (1, 2, 3)


# --- a spillover that keeps a task its node can never hold: SpilloverPolicy.forwards -------

def test_the_runtime_forwards_a_task_its_node_can_never_hold_whatever_the_spillover_says(tmp_path):
    """The same rule as the simulator's (test_sim): GPU tasks a never-forwarding policy
    keeps on the GPU-less driver node are forwarded, and run on the GPU node."""
    res = run_toml(tmp_path / "keep.toml", """
        [cluster]
        node_groups = [{count = 1, cpus = 2}, {count = 1, cpus = 2, gpus = 1}]
        [scheduler]
        spillover = "tests.align_plugins:KeepEverything"
        [workload]
        jobs = 6
        in_flight = 2
        driver_nodes = [0]
        resources = {CPU = 1.0, GPU = 1.0}
        duration = {dist = "constant", value = 0.005}
        [run]
        engine = "real"
        real_nodes = 2
        real_cpus_per_node = 2
        real_max_jobs = 6
    """)
    tr = res.trace
    assert res.info["complete"] and len(tr) == 6
    assert (tr.state == "finished").all() and tr.spilled.all() and (tr.node == 1).all()


# --- recent-assignment counts: reset per node when its own report arrives --------------------

def _view(version, queue, reports=None):
    from testbed.core.views import ClusterView
    n = len(queue)
    return ClusterView(version=version, as_of=0.0, resource_names=["CPU"], total=np.full((n, 1), 2.0),
                       available=np.full((n, 1), 2.0), queue_length=np.array(queue), running=np.zeros(n),
                       reports=reports)


@pytest.mark.parametrize("name", ["PaperWaitTime", "RecentAssignments"])
def test_recent_counts_reset_only_for_the_node_whose_report_arrived(name):
    """The real global scheduler rebuilds its view at each node's heartbeat: a report from
    node 1 must not forget what was sent to node 0 since node 0's report (the 2018 rule).
    A synchronized round (the simulator's view, reports default to the version) resets all."""
    from testbed.core.views import TaskView
    from testbed.policy.registry import build
    pol = build("placement", name, "scheduler.placement")
    task = TaskView(0, "f", {"CPU": 1.0})
    rng = np.random.default_rng(0)
    v1 = _view(1, [0, 0], reports=np.array([1, 1]))
    assert [pol.place(task, v1, 0.0, rng).node for _ in range(3)] == [0, 1, 0]   # sent: 2 to node 0, 1 to node 1
    v2 = _view(2, [0, 0], reports=np.array([1, 2]))      # node 1 reported (its queue drained)
    assert [pol.place(task, v2, 0.0, rng).node for _ in range(2)] == [1, 1]      # node 0 still counts 2
    v3 = _view(3, [0, 0])                                 # a synchronized round: every count resets
    assert pol.place(task, v3, 0.0, rng).node == 0
