"""The simulator on the workloads that separate estimators: nodes that slow down mid-run,
links that differ per node and change over time, and trace replay. Constant durations and
no overheads wherever an exact time is expected."""
from __future__ import annotations

import numpy as np
import pytest

from testbed.core.errors import ConfigError
from testbed.studies.execute import make_simulation
from testbed.studies.experiment import resolve

NO_OVERHEADS = {"latency_s": 0.0, "gcs_write_s": 0.0, "gcs_read_s": 0.0, "local_decision_s": 0.0,
                "global_decision_s": 0.0}
ROUND_ROBIN = {"spillover": "AlwaysGlobal", "placement": "RoundRobin"}


def const(x: float) -> dict:
    return {"dist": "constant", "value": x}


def simulate(cluster, workload, scheduler=None, seed=0):
    cfg = resolve({"cluster": {**NO_OVERHEADS, **cluster}, "workload": workload,
                   "scheduler": scheduler or ROUND_ROBIN, "run": {"trace": "rows"}})
    sim = make_simulation(cfg, seed=seed, keep_rows=True)
    return sim, sim.run()


# --- nodes that slow down mid-run ----------------------------------------------------------

def test_a_slowdown_applies_to_tasks_that_start_on_its_node_from_its_time_on():
    """cluster.slowdowns = [{node = 1, at_s = 1, factor = 4}]: tasks starting on node 1 at or
    after 1 s take 4x their duration; before it, and on node 0, they take it; a slow node's
    slowdown multiplies its slow_factor."""
    _, res = simulate({"nodes": 3, "cpus_per_node": 1, "slow_nodes": 1, "slow_factor": 2.0,
                       "slowdowns": [{"node": 1, "at_s": 1.0, "factor": 4.0},
                                     {"node": 2, "at_s": 1.0, "factor": 1.5}]},
                      {"jobs": 90, "arrival": "poisson", "rate_per_s": 20.0, "duration": const(0.05)})
    tr = res.trace
    assert res.info["complete"]
    ran = tr.finished_s - tr.started_s
    late = tr.started_s >= 1.0
    for node, before, after in ((0, 0.05, 0.05), (1, 0.05, 0.2), (2, 0.1, 0.15)):
        on = tr.node == node
        assert (on & ~late).any() and (on & late).any()
        np.testing.assert_allclose(ran[on & ~late], before, atol=1e-12)
        np.testing.assert_allclose(ran[on & late], after, atol=1e-12)


def test_the_oracle_sees_a_slowdown_once_it_happened():
    sim, _ = simulate({"nodes": 2, "slowdowns": [{"node": 0, "at_s": 0.5, "factor": 3.0}]},
                      {"jobs": 200, "arrival": "poisson", "rate_per_s": 100.0, "duration": const(0.01)},
                      {"task_time": "Oracle", "task_time_key": "node"})
    est = sim.placement.task_time
    assert est.estimate(None, 0) == pytest.approx(0.03) and est.estimate(None, 1) == pytest.approx(0.01)


# --- links that differ ---------------------------------------------------------------------

def chain_run(cluster, size=1e6, jobs=8):
    """Three-task chains, their tasks placed alternately on nodes 0 and 1, so every reader
    fetches its input over its own node's link; returns the readers' rows with their fetch time."""
    _, res = simulate({"nodes": 2, **cluster},
                      {"shape": "chains", "chain_length": 3, "jobs": jobs, "in_flight": 1,
                       "duration": const(0.05), "output_bytes": const(size)},
                      {**ROUND_ROBIN, "decide_at": "inputs_ready"})
    tr = res.trace.sort_values("task_id")
    readers = tr[tr.bytes_transferred > 0].copy()
    readers["fetch_s"] = readers.started_s - readers.placed_s
    assert res.info["complete"] and len(readers) == 2 * jobs
    return readers


def test_link_bandwidth_sets_the_fetch_time_of_each_listed_nodes_inputs():
    """An input fetched onto node m takes size / (m's link bandwidth): the listed nodes' own,
    the others' bandwidth_bytes_per_s."""
    size = 1e6
    r = chain_run({"bandwidth_bytes_per_s": 1e9, "link_bandwidth": [{"nodes": [1], "bytes_per_s": 1e7}]}, size)
    assert set(r.node) == {0, 1}
    np.testing.assert_allclose(r.fetch_s[r.node == 0], size / 1e9, atol=1e-9)
    np.testing.assert_allclose(r.fetch_s[r.node == 1], size / 1e7, atol=1e-9)


def test_bandwidth_changes_apply_to_transfers_booked_from_their_time_on():
    """bandwidth_changes = [{at_s, factor, nodes}]: fetches onto those nodes (all, for [])
    booked at or after at_s run at factor x the bandwidth; earlier ones keep theirs."""
    size, bw = 1e6, 1e8
    one = chain_run({"bandwidth_bytes_per_s": bw,
                     "bandwidth_changes": [{"at_s": 0.2, "factor": 0.25, "nodes": [0]}]}, size)
    asked = one.placed_s
    for node, late_bw in ((0, bw * 0.25), (1, bw)):
        on = one.node == node
        np.testing.assert_allclose(one.fetch_s[on & (asked < 0.2)], size / bw, atol=1e-9)
        np.testing.assert_allclose(one.fetch_s[on & (asked >= 0.2)], size / late_bw, atol=1e-9)
        assert (on & (asked < 0.2)).any() and (on & (asked >= 0.2)).any()
    every = chain_run({"bandwidth_bytes_per_s": bw, "bandwidth_changes": [
        {"at_s": 0.0, "factor": 0.5}, {"at_s": 0.0, "factor": 0.5, "nodes": [1]}]}, size)
    np.testing.assert_allclose(every.fetch_s[every.node == 0], size / (bw * 0.5), atol=1e-9)
    np.testing.assert_allclose(every.fetch_s[every.node == 1], size / (bw * 0.25), atol=1e-9)


def test_the_bandwidth_oracle_knows_each_nodes_link():
    sim, _ = simulate({"nodes": 3, "bandwidth_bytes_per_s": 1e9, "link_bandwidth": [{"nodes": [2], "bytes_per_s": 1e8}]},
                      {"jobs": 10}, {"bandwidth": "Oracle", "bandwidth_key": "node"})
    assert [sim.placement.bandwidth.estimate(None, m) for m in range(3)] == [1e9, 1e9, 1e8]


@pytest.mark.parametrize("cluster,key", [
    ({"nodes": 4, "slowdowns": [{"node": 4, "at_s": 1.0, "factor": 2.0}]}, "cluster.slowdowns[0].node"),
    ({"slowdowns": [{"node": 0, "at_s": 1.0, "factor": 0}]}, "cluster.slowdowns[0].factor"),
    ({"slowdowns": [{"node": 0, "factor": 2.0}]}, "cluster.slowdowns[0].at_s"),
    ({"slowdowns": [{"node": 0, "at_s": -1.0, "factor": 2.0}]}, "cluster.slowdowns[0].at_s"),
    ({"node_groups": [{"count": 2}], "link_bandwidth": [{"nodes": [0, 2], "bytes_per_s": 1e8}]},
     "cluster.link_bandwidth[0].nodes"),
    ({"link_bandwidth": [{"nodes": [], "bytes_per_s": 1e8}]}, "cluster.link_bandwidth[0].nodes"),
    ({"link_bandwidth": [{"nodes": [0], "bytes_per_s": 0}]}, "cluster.link_bandwidth[0].bytes_per_s"),
    ({"bandwidth_changes": [{"at_s": 1.0, "factor": 2.0, "node": 1}]}, "cluster.bandwidth_changes[0].node"),
    ({"bandwidth_changes": [{"at_s": 1.0, "factor": -2.0}]}, "cluster.bandwidth_changes[0].factor"),
])
def test_bad_node_changes_name_the_key(cluster, key):
    with pytest.raises(ConfigError) as info:
        resolve({"cluster": cluster})
    assert info.value.key == key


# --- trace replay --------------------------------------------------------------------------

def test_a_trace_is_replayed_at_its_arrival_times_with_its_durations_and_demands(tmp_path):
    """Each row is submitted at its arrival_s (arrival = "trace"), runs its duration and holds
    its CPUs: a 2-CPU row on a 2-CPU node runs alone."""
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,function,duration_s,cpus,output_bytes\n"
                    "0.0,a,0.5,2,0\n0.1,b,0.2,1,100\n0.1,b,0.2,1,100\n0.7,a,0.1,1,0\n")
    _, res = simulate({"nodes": 1, "cpus_per_node": 2},
                      {"shape": "trace", "trace_file": str(path), "arrival": "trace", "drivers": 2},
                      {"spillover": {"name": "QueueThreshold", "threshold": 100}})
    tr = res.trace.sort_values("job_id")
    assert res.info["complete"] and len(tr) == 4
    np.testing.assert_allclose(tr.submitted_s, [0.0, 0.1, 0.1, 0.7], atol=1e-12)
    np.testing.assert_allclose(tr.finished_s - tr.started_s, [0.5, 0.2, 0.2, 0.1], atol=1e-12)
    assert tr.function.tolist() == ["a", "b", "b", "a"]
    # the 2-CPU task holds the node: the others start when it ends
    assert tr.started_s.iloc[1] >= tr.finished_s.iloc[0] - 1e-12
    assert tr.started_s.iloc[2] >= tr.finished_s.iloc[0] - 1e-12


def test_testbed_validate_names_the_config_the_trace_file_its_line_and_column(tmp_path, monkeypatch, capsys):
    """A trace path is relative to the config file; a bad row is one line on stderr, exit 2."""
    from testbed.cli import main
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "t.csv").write_text("arrival_s,function,duration_s\n0,a,1\n1,a,-2\n")
    cfg = tmp_path / "exp.toml"
    cfg.write_text('[workload]\nshape = "trace"\ntrace_file = "traces/t.csv"\n')
    monkeypatch.chdir("/")
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert f"{cfg}: workload.trace_file: {tmp_path / 'traces' / 't.csv'}: line 3, column duration_s" in err
    (tmp_path / "traces" / "t.csv").write_text("arrival_s,function,duration_s\n0,a,1\n1,a,2\n")
    assert main(["validate", str(cfg)]) == 0
