"""The simulator's GCS: chain replication, replica failures, memory and flushing
(testbed/sim/gcs.py, the gcs_client shape, the memory model of testbed/sim/engine.py).

Each test states one rule and checks it on the Trace or the run's info, with constant
costs chosen so that every expected time is exact.
"""
from __future__ import annotations

import math

import pytest

from testbed.core.errors import ConfigError
from testbed.sim.engine import MEMORY_SAMPLES, Simulation
from testbed.sim.faults import FaultySimulation
from testbed.sim.gcs_client import GcsClientSimulation
from testbed.studies.execute import make_simulation
from testbed.studies.experiment import resolve

pytestmark = pytest.mark.timeout(60)

EPS = 1e-9
LAT, W, R_S = 0.001, 0.002, 0.0005            # latency, write and read service (s)
KV = 25 + 512                                 # bytes a client write stores (the paper's sizes)


def client(jobs=400, chain=2, failures=(), reconf=0.05, replace=True, bandwidth=1e5, **cluster):
    cfg = resolve({"cluster": {"nodes": 1, "latency_s": LAT, "gcs_write_s": W, "gcs_read_s": R_S,
                               "gcs_chain_length": chain, "gcs_reconfigure_s": reconf,
                               "bandwidth_bytes_per_s": bandwidth, **cluster},
                   "workload": {"shape": "gcs_client", "jobs": jobs, "in_flight": 1},
                   "faults": {"gcs_replica_failures": list(failures), "gcs_replace_replicas": replace},
                   "run": {"trace": "rows"}})
    sim = make_simulation(cfg, 0, keep_rows=True)
    return sim, sim.run()


def latency(tr):
    return tr.finished_s - tr.submitted_s


def test_a_client_request_costs_the_round_trip_and_the_chain():
    """Without failures: a read costs 2 x latency + the tail's read; a write 2 x latency + the
    write at each of the L members + L - 1 hops between them. Even jobs write, odd ones read."""
    for chain in (1, 3):
        sim, res = client(chain=chain)
        tr = res.trace
        assert isinstance(sim, GcsClientSimulation) and res.info["complete"]
        assert list(tr.function[:4]) == ["gcs.write", "gcs.read", "gcs.write", "gcs.read"]
        assert (tr.node == -1).all() and (tr.placed_s == tr.submitted_s).all()
        lat = latency(tr)
        assert (lat[tr.function == "gcs.read"] - (2 * LAT + R_S)).abs().max() < EPS
        assert (lat[tr.function == "gcs.write"] - (2 * LAT + chain * W + (chain - 1) * LAT)).abs().max() < EPS
        assert res.info["gcs_writes_acked"] == 200


def test_a_replica_failure_holds_the_shard_for_the_reconfiguration_and_retries_the_op_in_flight():
    """The request in flight when a member dies is answered gcs_reconfigure_s after the failure
    plus its cost on the shortened chain; requests made meanwhile wait; after the fresh
    replica has copied the state (state bytes / bandwidth) writes pay the full chain again."""
    kill, reconf = 1.0003, 0.05
    sim, res = client(jobs=600, failures=[{"at_s": kill, "replica": 0}], reconf=reconf)
    tr = res.trace
    lat = latency(tr)
    spanning = tr[(tr.submitted_s < kill) & (tr.finished_s > kill)]
    assert len(spanning) == 1
    op = spanning.iloc[0]
    cost = W if op.function == "gcs.write" else R_S
    assert math.isclose(op.finished_s, kill + reconf + cost + LAT, abs_tol=EPS)
    assert res.info["gcs_reconfigurations"] == [(kill, reconf)]
    assert res.info["gcs_replicas_killed"] == 1 and res.info["gcs_replicas_added"] == 1
    # the fresh replica joins after copying the acknowledged writes' bytes
    acked = int(((tr.function == "gcs.write") & (tr.finished_s <= kill)).sum())
    join = [t for t, what, _ in sim.fault_log if what == "gcs_join"][0]
    assert math.isclose(join, kill + reconf + acked * KV / 1e5, rel_tol=1e-9)
    writes = tr[tr.function == "gcs.write"]
    short = writes[(writes.submitted_s > kill + reconf) & (writes.finished_s < join)]
    full = writes[writes.submitted_s > join]
    assert len(short) and (latency(short) - (2 * LAT + W)).abs().max() < EPS
    assert len(full) and (latency(full) - (2 * LAT + 2 * W + LAT)).abs().max() < EPS
    # no acknowledged write is lost: every write is acknowledged once, every read follows its write
    assert res.info["gcs_writes_acked"] == 300 and len(writes) == 300 and (tr.state == "finished").all()
    assert lat.max() < reconf + 0.01


def test_without_replacement_the_chain_stays_short():
    sim, res = client(jobs=600, failures=[{"at_s": 1.0003, "replica": -1}], replace=False)
    assert res.info["gcs_replicas_added"] == 0 and not [x for x in sim.fault_log if x[1] == "gcs_join"]
    tr = res.trace
    late = tr[(tr.function == "gcs.write") & (tr.submitted_s > 1.1)]
    assert (latency(late) - (2 * LAT + W)).abs().max() < EPS


def test_task_runs_wait_out_a_reconfiguration_of_their_shard():
    """GCS writes of a task run issued during a reconfiguration wait for its end: a run of
    sequential tasks is delayed by at most gcs_reconfigure_s plus one write."""
    base = {"nodes": 1, "latency_s": 0.0, "local_decision_s": 0.0, "gcs_write_s": 0.001, "gcs_chain_length": 2,
            "gcs_reconfigure_s": 0.05}
    wl = {"jobs": 200, "in_flight": 1, "duration": {"dist": "constant", "value": 0.01}}

    def go(failures):
        cfg = resolve({"cluster": base, "workload": wl, "faults": {"gcs_replica_failures": failures},
                       "run": {"trace": "rows"}})
        sim = make_simulation(cfg, 0, keep_rows=True)
        return sim, sim.run()
    plain_sim, plain = go([])
    sim, res = go([{"at_s": 1.0005}])
    assert type(plain_sim) is Simulation and isinstance(sim, FaultySimulation)
    delay = res.info["sim_end_s"] - plain.info["sim_end_s"]
    assert 0.0 < delay <= 0.05 + 0.002 + EPS
    tr = res.trace
    assert not ((tr.started_s > 1.0005) & (tr.started_s < 1.0505)).any()   # nothing dispatched meanwhile
    assert res.info["complete"]


def test_a_longer_chain_slows_each_gcs_write_by_its_hops():
    """With gcs_on_critical_path, a task pays its task-table and object-table writes; on a
    chain of L replicas each costs L - 1 more hops of (latency + write)."""
    def makespan(chain):
        cfg = resolve({"cluster": {"nodes": 1, "latency_s": 0.001, "local_decision_s": 0.0, "gcs_write_s": 0.001,
                                   "gcs_chain_length": chain},
                       "workload": {"jobs": 50, "in_flight": 1, "duration": {"dist": "constant", "value": 0.01}}})
        return make_simulation(cfg, 0).run().info["sim_end_s"]
    assert math.isclose(makespan(3) - makespan(1), (50 * 2 - 1) * 2 * 0.002, rel_tol=1e-6)   # the last result write ends no task


# --- memory and flushing -----------------------------------------------------------------

def _empty_tasks(flush_s, jobs=5000, **cluster):
    cfg = resolve({"cluster": {"nodes": 1, "gcs_flush_interval_s": flush_s, **cluster},
                   "workload": {"jobs": jobs, "in_flight": 1, "duration": {"dist": "constant", "value": 0.0}},
                   "run": {"trace": "aggregate"}})
    return make_simulation(cfg, 0).run()


def test_gcs_memory_grows_with_the_tasks_without_flushing_and_stays_bounded_with_it():
    """Memory = gcs_entry_bytes per task submitted, less the ended tasks flushed each interval:
    without flushing it ends at tasks x entry bytes; with it the peak is what one interval adds."""
    entry = resolve({})["cluster"]["gcs_entry_bytes"]
    grow = _empty_tasks(0.0)
    flush = _empty_tasks(0.01)
    mem = grow.info["gcs_memory"]
    assert mem[0] == (0.0, 0.0) and math.isclose(mem[-1][1], 5000 * entry)
    assert all(b1 <= b2 for (_, b1), (_, b2) in zip(mem, mem[1:]))
    assert grow.info["gcs_flushed_entries"] == 0 and grow.info["gcs_memory_peak_bytes"] == 5000 * entry
    rate = 5000 / flush.info["sim_end_s"]                  # tasks per second
    assert flush.info["gcs_flushed_entries"] > 4000
    assert flush.info["gcs_memory_peak_bytes"] <= (rate * 0.01 + 2) * entry
    assert flush.info["gcs_memory_peak_bytes"] < grow.info["gcs_memory_peak_bytes"] / 5


def test_memory_samples_are_thinned_to_a_bound():
    res = _empty_tasks(0.0, jobs=20000, heartbeat_interval_s=0.0001)
    mem = res.info["gcs_memory"]
    assert len(mem) <= MEMORY_SAMPLES + 1 and mem[0][0] == 0.0
    assert [t for t, _ in mem] == sorted(t for t, _ in mem)
    assert mem[-1][0] == res.info["sim_end_s"]


# --- validation ---------------------------------------------------------------------------

@pytest.mark.parametrize("cluster, faults, key", [
    ({"gcs_chain_length": 2}, {"gcs_replica_failures": [{"at_s": 1.0, "shard": 1}]},
     r"faults.gcs_replica_failures\[0\].shard"),
    ({"gcs_chain_length": 2}, {"gcs_replica_failures": [{"at_s": 1.0, "replica": 2}]},
     r"faults.gcs_replica_failures\[0\].replica"),
    ({"gcs_chain_length": 2}, {"gcs_replica_failures": [{"at_s": 1.0, "replica": -3}]},
     r"faults.gcs_replica_failures\[0\].replica"),
    ({"gcs_chain_length": 2}, {"gcs_replica_failures": [{"replica": 0}]},
     r"faults.gcs_replica_failures\[0\].at_s"),
    ({}, {"gcs_replica_failures": [{"at_s": 1.0}]}, r"faults.gcs_replica_failures\[0\]"),
    ({"gcs_chain_length": 2}, {"gcs_replica_failures": [{"at_s": 1.0}, {"at_s": 2.0}],
                               "gcs_replace_replicas": False}, r"faults.gcs_replica_failures\[1\]"),
    ({"gcs_chain_length": 0}, {}, r"cluster.gcs_chain_length"),
    ({"gcs_flush_interval_s": -1}, {}, r"cluster.gcs_flush_interval_s"),
    ({"gcs_reconfigure_s": -0.1}, {}, r"cluster.gcs_reconfigure_s"),
    ({"gcs_entry_bytes": 0}, {}, r"cluster.gcs_entry_bytes"),
])
def test_bad_gcs_settings_are_config_errors_naming_the_key(cluster, faults, key):
    with pytest.raises(ConfigError, match=key):
        resolve({"cluster": cluster, "faults": faults})


def test_killing_the_last_live_replica_at_run_time_is_a_config_error():
    """Two failures before the first replacement has joined leave no replica: named, not a hang."""
    with pytest.raises(ConfigError, match=r"faults.gcs_replica_failures\[1\].*last live replica"):
        client(failures=[{"at_s": 0.5}, {"at_s": 0.51}], reconf=0.05)


@pytest.mark.parametrize("workload, key", [({"gcs_key_bytes": 0}, "workload.gcs_key_bytes"),
                                           ({"gcs_value_bytes": -1}, "workload.gcs_value_bytes")])
def test_bad_client_sizes_are_config_errors(workload, key):
    with pytest.raises(ConfigError, match=key):
        resolve({"workload": {"shape": "gcs_client", **workload}})
