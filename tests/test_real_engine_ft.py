"""The real engine on the fault-tolerance workloads of Figs. 10 and 11b: a GCS client across a
chain-replica failure, GCS flushing under sequential empty tasks, and stateful actors.
Small configs (each run a few seconds); every test leaves nothing running (conftest)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import run_toml

from testbed.real.engine import _driver_nodes

pytestmark = pytest.mark.timeout(120)


def test_gcs_client_loses_no_acknowledged_write_when_the_head_dies(tmp_path):
    """Fig. 10a on the real runtime: the chain's head is killed while one client writes and
    reads; the chain master reconfigures the chain, the client's request in flight is sent
    again, every request gets an answer (one row each) and every acknowledged write can be
    read back."""
    res = run_toml(tmp_path / "gcs.toml", """
        [cluster]
        nodes = 2
        gcs_chain_length = 2
        [workload]
        shape = "gcs_client"
        jobs = 3000
        drivers = 1
        in_flight = 1
        gcs_key_bytes = 25
        gcs_value_bytes = 512
        [faults]
        gcs_replica_failures = [{at_s = 0.2, shard = 0, replica = 0}]
        [run]
        engine = "real"
        study = "gcs"
        real_nodes = 2
        real_cpus_per_node = 1
        real_max_jobs = 3000
        """)
    info, tr = res.info, res.trace
    assert info["complete"] and info["jobs_done"] == 3000
    assert info["gcs_replicas_killed"] == 1
    assert info["gcs_writes_acked"] == 1500
    assert info["gcs_acked_writes_lost"] == 0 and info["gcs_reads_wrong"] == 0
    # the kill came while the client ran, and the master took a measurable, short time
    (t_kill, took), = info["gcs_reconfigurations"]
    assert 0.2 <= t_kill < float(tr.finished_s.max()) and 0 < took < 5.0
    # one row per request, with the simulator's conventions
    assert sorted(tr.job_id) == list(range(3000))
    assert (tr.function == np.where(tr.job_id % 2 == 0, "gcs.write", "gcs.read")).all()
    assert (tr.node == -1).all() and (tr.attempt == 1).all() and (tr.state == "finished").all()
    assert (tr.placed_s == tr.submitted_s).all() and (tr.started_s == tr.submitted_s).all()
    assert (tr.finished_s >= tr.submitted_s).all() and tr.submitted_s.min() >= 0
    # requests in flight one at a time: each is sent once the one before was answered
    by_job = tr.sort_values("job_id")
    assert (by_job.submitted_s.to_numpy()[1:] >= by_job.finished_s.to_numpy()[:-1]).all()


def test_sequential_empty_tasks_with_flushing_flush_lineage(tmp_path):
    """Fig. 10b on the real runtime: with gcs_flush_interval_s the GCS moves finished tasks'
    lineage to disk while the tasks run; the GCS's memory is sampled over the run."""
    res = run_toml(tmp_path / "flush.toml", """
        [cluster]
        nodes = 2
        gcs_flush_interval_s = 0.05
        [workload]
        shape = "independent"
        jobs = 800
        drivers = 1
        in_flight = 1
        duration = {dist = "constant", value = 0.0}
        [run]
        engine = "real"
        study = "gcs"
        real_nodes = 2
        real_cpus_per_node = 1
        real_max_jobs = 800
        """)
    info = res.info
    assert info["complete"] and len(res.trace) == 800
    assert info["gcs_flushed_entries"] > 0       # tasks, and the driver actor's calls
    mem = info["gcs_memory"]
    assert len(mem) >= 2 and all(b > 0 for _, b in mem)
    assert mem[0][0] >= 0 and mem[-1][0] >= info["wall_s"] - 1e-6
    assert info["gcs_memory_peak_bytes"] == max(b for _, b in mem)


@pytest.mark.parametrize("arrival, checkpoint", [("closed", 0), ("poisson", 4)])
def test_actors_apply_every_call_once_in_each_callers_order(tmp_path, arrival, checkpoint):
    """Shape "actors" without faults: actors round-robin over the nodes, job j a call on actor
    j % actors; each actor's state afterwards holds exactly its calls (each caller's in order),
    and the Trace has one Actor.step row per call and one Actor.__init__ row per actor."""
    res = run_toml(tmp_path / "actors.toml", f"""
        [cluster]
        nodes = 4
        cpus_per_node = 2
        [workload]
        shape = "actors"
        actors = 12
        jobs = 300
        drivers = 3
        in_flight = 4
        arrival = "{arrival}"
        rate_per_s = 200.0          # per driver; x 6 / 12 actors: 100 calls/s each
        duration = {{dist = "constant", value = 0.005}}
        actor_checkpoint_interval = {checkpoint}
        [run]
        engine = "real"
        study = "actor_recovery"
        real_nodes = 2
        real_cpus_per_node = 1
        real_actors = 6
        real_max_jobs = 300
        """)
    info, tr = res.info, res.trace
    assert info["actor_state_ok"] is True
    assert info["actors"] == 6 and info["complete"] and info["jobs_done"] == 300
    assert info["actors_rebuilt"] == 0 and info["actor_calls_replayed"] == 0 and info["actor_calls_failed"] == 0
    step = tr[tr.function == "Actor.step"]
    assert len(step) == 300 and step.task_id.nunique() == 300
    assert (step.state == "finished").all() and (step.attempt == 1).all()
    init = tr[tr.function == "Actor.__init__"]
    assert len(init) == 6 and (init.state == "finished").all()
    assert sorted(init.node) == [0, 0, 0, 1, 1, 1]          # round-robin over the 2 nodes
    assert not tr.function.str.startswith(("_Driver", "Actor.state")).any()


def test_drivers_stay_off_the_nodes_that_the_faults_kill():
    """A driver dying with its node would end the run: drivers spread over the others."""
    faults = {"node_failures": [{"at_s": 1.0, "node": 3}, {"at_s": 2.0, "node": 7}], "kill_every_s": 0.0,
              "min_live_nodes": 1}
    assert _driver_nodes({"drivers": 4, "driver_nodes": []}, faults, 4) == [0, 0, 1, 2]
    assert _driver_nodes({"drivers": 1, "driver_nodes": [3]}, faults, 4) == [3]    # given: kept
    assert _driver_nodes({"drivers": 2, "driver_nodes": []}, dict(faults, kill_every_s=1.0), 4) == [0, 0]
    assert _driver_nodes({"drivers": 4, "driver_nodes": []}, dict(faults, node_failures=[]), 4) == [0, 1, 2, 3]
