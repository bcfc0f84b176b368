"""The real engine on the workloads that separate estimators: a trace replayed at its arrival
times, on a node that slows down mid-run (cluster.slowdowns), and a node with its own slow
link that changes mid-run (cluster.link_bandwidth, bandwidth_changes). Two small runs (a few seconds each); they leave nothing
running (conftest)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import run_toml

from testbed.real.engine import _bandwidth_events, _link_bandwidths, _slow, _slowdown_schedule

pytestmark = pytest.mark.timeout(180)

ROWS = 24
GAP_S, DURATION_S, AT_S, FACTOR = 0.05, 0.02, 0.6, 5.0


def test_a_slowdown_schedule_multiplies_the_factors_whose_time_has_come():
    """Config node k is real node k % n; each node's factors apply from t0 + at_s x scale."""
    sched = _slowdown_schedule([1.0, 2.0], [{"node": 3, "at_s": 1.0, "factor": 4.0},
                                            {"node": 1, "at_s": 0.0, "factor": 1.5}], 2, 100.0, 0.5)
    assert sched == [1.0, (2.0, ((100.0, 1.5), (100.5, 4.0)))]
    # outside a worker _slow reads node 0's entry
    assert _slow([(3.0, ((0.0, 2.0), (1e12, 10.0)))]) == 6.0
    assert _slow([2.5]) == 2.5


def test_a_trace_replays_on_the_real_engine_and_a_slowdown_slows_later_tasks(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,function,duration_s,cpus\n" + "".join(
        f"{i * GAP_S:.3f},{'ab'[i % 2]},{DURATION_S},1\n" for i in range(ROWS)))
    text = f"""
        [cluster]
        nodes = 2
        cpus_per_node = 1
        slowdowns = [{{node = 1, at_s = {AT_S}, factor = {FACTOR}}}]
        [scheduler]
        spillover = "AlwaysGlobal"
        placement = "RoundRobin"
        [workload]
        shape = "trace"
        trace_file = "{trace}"
        arrival = "trace"
        [run]
        engine = "real"
        real_nodes = 2
        real_cpus_per_node = 1
        real_time_scale = 1.0
    """
    res = run_toml(tmp_path / "real.toml", text)
    tr = res.trace.sort_values("job_id")
    assert res.info["complete"] and len(tr) == ROWS and (tr.state == "finished").all()
    assert tr.function.tolist() == ["ab"[i % 2] for i in range(ROWS)]
    # each row is submitted no earlier than its arrival time
    assert (tr.submitted_s.to_numpy() >= np.arange(ROWS) * GAP_S - 1e-3).all()
    ran = (tr.finished_s - tr.started_s).to_numpy()
    assert (ran >= DURATION_S * 0.98).all()
    late_on_1 = ((tr.node == 1) & (tr.started_s > AT_S + 0.01)).to_numpy()
    assert late_on_1.any()
    assert (ran[late_on_1] >= FACTOR * DURATION_S * 0.98).all()


def test_link_bandwidths_fold_config_nodes_onto_the_real_ones():
    c = {"bandwidth_bytes_per_s": 1e9, "link_bandwidth": [{"nodes": [1, 4], "bytes_per_s": 1e7}]}
    assert _link_bandwidths(c, 3) == [1e9, 1e7, 1e9] and _link_bandwidths(c, 2) == [1e7, 1e7]
    assert _link_bandwidths({"bandwidth_bytes_per_s": 1e9, "link_bandwidth": []}, 2) is None


def test_bandwidth_changes_become_link_events_per_real_node():
    """Each change multiplies the bandwidth a real node's link has by then (config node k is
    node k % n, once per change; nodes = [] every node), at at_s x real_time_scale."""
    c = {"bandwidth_bytes_per_s": 1e9, "link_bandwidth": [{"nodes": [1], "bytes_per_s": 1e7}],
         "bandwidth_changes": [{"at_s": 2.0, "factor": 0.5, "nodes": []},
                               {"at_s": 1.0, "factor": 0.1, "nodes": [1, 3]}]}
    assert _bandwidth_events(c, 2, 0.5) == [(0.5, "link_bandwidth", (1, 1e6)),
                                           (1.0, "link_bandwidth", (0, 5e8)), (1.0, "link_bandwidth", (1, 5e5))]
    assert _bandwidth_events({**c, "bandwidth_changes": []}, 2, 1.0) == []


def test_a_nodes_own_link_and_its_change_mid_run_set_its_fetch_times(tmp_path):
    """Two-task chains, the reader placed on node 1, whose link runs at 2e7 bytes/s and from
    1 s on at a quarter of it: a reader starts at least size / 2e7 after its input was made
    (0.05 s for 1 MB; the default link would take 0.3 ms), and one whose input was made after
    1 s at least size / 5e6 (0.2 s) after."""
    size, bw, at_s, factor = 1_000_000, 2e7, 1.0, 0.25
    text = f"""
        [cluster]
        nodes = 2
        cpus_per_node = 1
        link_bandwidth = [{{nodes = [1], bytes_per_s = {bw}}}]
        bandwidth_changes = [{{at_s = {at_s}, factor = {factor}, nodes = [1]}}]
        [scheduler]
        spillover = "AlwaysGlobal"
        placement = "RoundRobin"
        [workload]
        shape = "chains"
        chain_length = 2
        jobs = 16
        in_flight = 1
        duration = {{dist = "constant", value = 0.01}}
        output_bytes = {{dist = "constant", value = {size}}}
        [run]
        engine = "real"
        real_nodes = 2
        real_cpus_per_node = 1
    """
    res = run_toml(tmp_path / "real.toml", text)
    tr = res.trace
    assert res.info["complete"] and (tr.state == "finished").all()
    before = after = 0
    for _, job in tr.groupby("job_id"):
        job = job.sort_values("started_s")
        producer, reader = job.iloc[0], job.iloc[1]
        if reader.node != 1 or producer.node == 1:
            continue
        fetch = reader.started_s - producer.finished_s
        assert fetch >= size / bw * 0.98
        before += 1
        if producer.finished_s > at_s + 0.01:
            assert fetch >= size / (bw * factor) * 0.98
            after += 1
    assert before - after >= 1 and after >= 2


def test_shift_and_drift_read_the_submission_time_in_config_seconds(tmp_path):
    """With real_time_scale = 0.5 a shift at 1 config second happens 0.5 real seconds in (as
    [faults] times do): jobs submitted between 0.5 and 1 real second already run the shifted
    durations (20 x 10 ms x 0.5 = 0.1 real seconds), and drift reads the same clock."""
    text = """
        [cluster]
        nodes = 2
        cpus_per_node = 2
        [workload]
        shape = "independent"
        jobs = 40
        arrival = "poisson"
        rate_per_s = 40.0
        duration = {dist = "constant", value = 0.01}
        shift = {at_s = 1.0, scale = 20.0}
        [run]
        engine = "real"
        real_nodes = 2
        real_cpus_per_node = 2
        real_time_scale = 0.5
    """
    tr = run_toml(tmp_path / "real.toml", text).trace
    ran = tr.finished_s - tr.started_s
    window = (tr.submitted_s > 0.52) & (tr.submitted_s < 0.98)
    assert window.sum() >= 3
    assert (ran[tr.submitted_s > 0.52] >= 0.1 * 0.98).all()
