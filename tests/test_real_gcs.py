"""The GCS survives its replicas: chain replication, reconfiguration, fresh replicas, and
flushing of finished lineage to disk. Every test has a timeout and leaves nothing running."""
from __future__ import annotations

import threading

import pytest

import testbed as tb
from conftest import FAST, assert_cluster_gone, make, poll_until, records, total
from testbed.real import api

pytestmark = pytest.mark.timeout(120)

@tb.remote
def inc(x):
    return x + 1


@pytest.mark.parametrize("victim", [0, -1, 1], ids=["head", "tail", "middle"])
def test_no_acknowledged_write_is_lost_when_a_replica_dies_mid_write(victim):
    """A writer keeps writing (one write in flight, as in the paper's Fig. 10a) while another
    thread kills a member of the 3-replica chain; every acknowledged write is then readable,
    every replica holds the same state, and a fresh replica brings the chain back to 3."""
    with tb.init(num_cpus=1, gcs_chain_length=3) as c:
        g = api._gcs_client()
        halfway = threading.Event()
        killed = []
        killer = threading.Thread(target=lambda: (halfway.wait(60), killed.append(tb.kill_gcs_replica(0, victim))))
        killer.start()
        n = 1500
        for i in range(n):
            if i == n // 3:
                halfway.set()
            g.write("bench", f"k{i}".encode(), i)      # returns once the tail acknowledged it
        killer.join(60)
        assert killed, "the replica was not killed"
        assert killed[0] not in tb.gcs_chains()[0]
        assert [g.read("bench", f"k{i}".encode()) for i in range(n)] == list(range(n))
        poll_until(lambda: len(tb.gcs_chains()[0]) == 3, "a fresh replica joined")
        stats = api._gcs_stats()
        assert len({s["entries"]["bench"] for s in stats.values()}) == 1, stats
        assert all(s["entries"]["bench"] == n for s in stats.values())
        g.close()
    assert_cluster_gone(c)


def test_tasks_run_on_while_head_and_tail_of_different_shards_die():
    with tb.init(num_cpus=2, num_nodes=2, gcs_shards=2, gcs_chain_length=2) as c:
        refs = [inc.remote(i) for i in range(300)]
        tb.kill_gcs_replica(0, 0)
        refs += [inc.remote(i) for i in range(300, 600)]
        tb.kill_gcs_replica(1, -1)
        refs += [inc.remote(i) for i in range(600, 900)]
        assert tb.get(refs, timeout=60) == list(range(1, 901))
        poll_until(lambda: all(len(ch) == 2 for ch in tb.gcs_chains().values()), "both chains are whole again")
        assert tb.get([inc.remote(i) for i in range(50)], timeout=60) == list(range(1, 51))
    assert_cluster_gone(c)


def test_without_replacement_the_chain_shrinks_and_still_serves():
    with tb.init(num_cpus=1, gcs_chain_length=2, gcs_replace_replicas=False) as c:
        first = tb.gcs_chains()[0]
        tb.kill_gcs_replica(0, -1)
        poll_until(lambda: len(tb.gcs_chains()[0]) == 1, "the chain dropped its dead tail")
        assert tb.gcs_chains()[0] == first[:1]
        assert tb.get([inc.remote(i) for i in range(20)], timeout=60) == list(range(1, 21))
        with pytest.raises(ValueError, match="gcs_chain_length"):
            tb.kill_gcs_replica(0, 0)             # the last replica: its state would be gone
    assert_cluster_gone(c)


def test_bad_replica_kills_are_clear_errors():
    with tb.init(num_cpus=1) as c:
        with pytest.raises(ValueError, match="1 replica"):
            tb.kill_gcs_replica()
        with pytest.raises(ValueError, match="no GCS shard 3"):
            tb.kill_gcs_replica(3)
        with pytest.raises(TypeError, match="replica"):
            tb.kill_gcs_replica(0, "head")
    assert_cluster_gone(c)


def test_flushing_bounds_the_task_table_and_lineage_is_read_back_from_disk():
    """Finished tasks' entries leave memory; a lost object whose producer's entry is on disk
    is still rebuilt from it."""
    with tb.init(num_cpus=1, num_nodes=2, spillover="AlwaysGlobal", placement="RoundRobin",
                 gcs_flush_interval_s=0.05, **FAST) as c:
        assert tb.get([inc.remote(i) for i in range(400)], timeout=60) == list(range(1, 401))
        refs = [make.remote(i, 50_000) for i in range(4)]             # round robin: some on node 1
        tb.wait(refs, num_returns=4)
        poll_until(lambda: sum(s["flushed"] for s in api._gcs_stats().values()) >= 404, "the lineage was flushed")
        in_memory = sum(s["entries"].get("task", 0) for s in api._gcs_stats().values())
        assert in_memory < 100, in_memory
        tb.kill_node(tb.nodes()[1]["NodeID"])
        assert tb.get([total.remote(r) for r in refs], timeout=60) == [i * 50_000.0 for i in range(4)]
        assert 2 in {r["attempt"] for r in records() if r["function"] == "make"}   # rebuilt from flushed lineage
    assert_cluster_gone(c)


# --- the task table's ordering rule (no processes) -------------------------------------------

def _bare_shard():
    """A GCS shard's tables and task_update, without its loop or chain (the rule alone)."""
    from collections import defaultdict
    from testbed.real.gcs import Shard
    sh = Shard.__new__(Shard)
    sh.tables, sh.subs, sh.waiting, sh.db = defaultdict(dict), {}, defaultdict(list), None
    sh.index = sh.replica = sh.illegal_moves = 0
    return sh


def test_a_task_sent_back_reads_as_assigned_where_it_went_not_queued_where_it_was():
    """Node 0 queued the task, sent it back (spillback: hop 1), the global scheduler assigned it
    to node 2: the table must say node 2, so that node 2's death makes a waiter rebuild it
    (before hops, "assigned" ranked below "queued" and was dropped: the entry read queued on
    live node 0, and the run hung with nothing to rebuild it — seen under kills + restores)."""
    sh = _bare_shard()
    tid = b"t" * 16
    sh.task_update(None, tid, {"node": 0, "state": "submitted", "attempt": 1, "name": "f"})
    sh.task_update(None, tid, {"node": 0, "state": "queued", "attempt": 1, "hop": 0})
    sh.task_update(None, tid, {"node": 2, "state": "assigned", "attempt": 1, "hop": 1})
    assert {k: sh.tables["task"][tid][k] for k in ("node", "state", "hop")} == {"node": 2, "state": "assigned", "hop": 1}
    # a write of the earlier placement arriving late (write-behind) changes nothing
    sh.task_update(None, tid, {"node": 0, "state": "finished", "attempt": 1, "hop": 0})
    assert sh.tables["task"][tid]["node"] == 2 and sh.tables["task"][tid]["state"] == "assigned"
    # within a placement the state only advances; the node's own writes carry its hop
    sh.task_update(None, tid, {"node": 2, "state": "finished", "attempt": 1, "hop": 1})
    sh.task_update(None, tid, {"node": 2, "state": "queued", "attempt": 1, "hop": 1})
    assert sh.tables["task"][tid]["state"] == "finished"
    # a rebuild is a new attempt: it starts over, at its first placement
    sh.task_update(None, tid, {"node": 3, "state": "reconstructing", "attempt": 2})
    entry = sh.tables["task"][tid]
    assert (entry["node"], entry["state"], entry["attempt"], entry.get("hop", 0)) == (3, "reconstructing", 2, 0)
    sh.task_update(None, tid, {"node": 2, "state": "finished", "attempt": 1, "hop": 1, "extra": 1})
    assert sh.tables["task"][tid]["attempt"] == 2 and sh.tables["task"][tid]["extra"] == 1


def test_the_task_table_counts_a_move_the_shared_transitions_do_not_allow():
    """The runtime checks every recorded move against core.task's transitions (the table sees
    only some of an attempt's states: a move must be reachable): submitted -> finished and a
    rebuild's finished -> reconstructing are legal, finished -> failed within one attempt is not."""
    from testbed.core.task import legal_record, TaskState as S
    assert legal_record(S.SUBMITTED, S.FINISHED, False) and legal_record(S.QUEUED, S.ASSIGNED, False)
    assert legal_record(S.FINISHED, S.RECONSTRUCTING, True) and legal_record(S.QUEUED, S.FINISHED, True)
    assert not legal_record(S.FINISHED, S.FAILED, False) and not legal_record(S.RECONSTRUCTING, S.SUBMITTED, False)
    # the table checks the same rule through its precomputed sets of values
    from testbed.core.task import NEW_ATTEMPT_STATES, RECORD_MOVES
    assert all(((a.value, b.value) in RECORD_MOVES) == legal_record(a, b, False) for a in S for b in S)
    assert all((b.value in NEW_ATTEMPT_STATES) == legal_record(a, b, True) for a in S for b in S)
    sh = _bare_shard()
    tid = b"u" * 16
    sh.task_update(None, tid, {"node": 0, "state": "submitted", "attempt": 1})
    sh.task_update(None, tid, {"node": 1, "state": "finished", "attempt": 1})
    assert sh.illegal_moves == 0
    sh.task_update(None, tid, {"node": 1, "state": "failed", "attempt": 1})
    assert sh.illegal_moves == 1
    sh.task_update(None, tid, {"node": 2, "state": "reconstructing", "attempt": 2})
    assert sh.illegal_moves == 1
