"""Failures in the real runtime: a node killed while its tasks run, while it holds the only
copy of an input; a worker killed mid-task; lost objects without lineage; nodes added.
Every test has a timeout, checks the answer, and leaves nothing running."""
from __future__ import annotations

import os
import time

import pytest

import testbed as tb
from conftest import FAST, assert_cluster_gone, make, poll_until, records, run_toml, total

pytestmark = pytest.mark.timeout(90)



@tb.remote
def started_then_sleep(x, t, folder):
    """Mark that it runs (a file naming its node), then work for t seconds."""
    from testbed.real import api
    open(os.path.join(folder, f"{api._worker_core.node}-{x}"), "w").close()
    time.sleep(t)            # the task's work: it must still run when the failure comes
    return x


def _wait_started(folder, node=None):
    """Until a task (on ``node``, if given) has marked its start in the folder."""
    poll_until(lambda: any(node is None or name.startswith(f"{node}-") for name in os.listdir(folder)),
               "a task started")


def _wait_dead(node_id):
    """Until the node table says the node is dead (liveness is asynchronous)."""
    poll_until(lambda: not next(n for n in tb.nodes() if n["NodeID"] == node_id)["Alive"],
               "the killed node was declared dead", timeout=20.0)


def test_node_holding_the_only_copy_of_inputs_dies_and_get_still_returns():
    """Objects made on node 1 are lost with it; their consumers' inputs are rebuilt by
    re-running the producers (attempt 2) elsewhere, transparently to get."""
    with tb.init(num_cpus=1, num_nodes=3, spillover="AlwaysGlobal", placement="RoundRobin", **FAST) as c:
        refs = [make.remote(i) for i in range(6)]
        tb.wait(refs, num_returns=6)
        victim = tb.nodes()[1]["NodeID"]
        tb.kill_node(victim)
        assert tb.get([total.remote(r) for r in refs], timeout=60) == [i * 100_000.0 for i in range(6)]
        attempts = {r["attempt"] for r in records() if r["function"] == "make"}
        assert 2 in attempts                     # some producer ran again
        _wait_dead(victim)
    assert_cluster_gone(c)


def test_node_killed_while_its_tasks_run_and_the_driver_waits(tmp_path):
    """Tasks queued and running on the dying node are re-run once it is declared dead."""
    with tb.init(num_cpus=1, num_nodes=2, spillover="AlwaysGlobal", placement="RoundRobin", **FAST) as c:
        refs = [started_then_sleep.remote(i, 0.3, str(tmp_path)) for i in range(6)]
        _wait_started(tmp_path, node=1)
        tb.kill_node(tb.nodes()[1]["NodeID"])
        assert tb.get(refs, timeout=60) == list(range(6))
    assert_cluster_gone(c)


def test_a_lost_put_or_a_lost_object_without_lineage_is_an_error_not_a_hang():
    with tb.init(num_cpus=1, num_nodes=2, spillover="AlwaysGlobal", placement="RoundRobin",
                 lineage=False, **FAST) as c:
        a, b = make.remote(1), make.remote(2)          # round robin: b is made on node 1
        tb.wait([a, b], num_returns=2)
        tb.kill_node(tb.nodes()[1]["NodeID"])
        values = []
        for r in (a, b):
            try:
                values.append(float(tb.get(r, timeout=60).sum()))
            except tb.ObjectLostError as e:
                values.append(str(e))
        assert any(isinstance(v, str) and "lineage" in v for v in values), values
    assert_cluster_gone(c)


def test_a_worker_killed_mid_task_is_retried(tmp_path):
    with tb.init(num_cpus=1, **FAST) as c:
        r = started_then_sleep.remote("done", 0.5, str(tmp_path))
        _wait_started(tmp_path)                      # it runs: the kill hits it mid-task
        tb.kill_worker()
        assert tb.get(r, timeout=60) == "done"
        assert max(x["attempt"] for x in records() if x["function"] == "started_then_sleep") == 2
    assert_cluster_gone(c)


def test_an_added_node_takes_work_and_its_resources_join_the_cluster():
    @tb.remote(resources={"accel": 1})
    def where():
        from testbed.real import api
        return api._worker_core.node

    with tb.init(num_cpus=1, num_nodes=1, **FAST) as c:
        node_id = tb.add_node(num_cpus=1, resources={"accel": 1})
        assert tb.cluster_resources() == {"CPU": 2.0, "accel": 1.0}
        assert node_id in [n["NodeID"] for n in tb.nodes()]
        assert tb.get(where.remote(), timeout=30) == 1
        with pytest.raises(ValueError, match="node 0"):
            tb.kill_node(tb.nodes()[0]["NodeID"])
    assert_cluster_gone(c)


def test_an_actor_on_a_killed_node_fails_its_calls_clearly():
    @tb.remote(resources={"accel": 1})
    class Pinned:
        def ping(self):
            return "pong"

    with tb.init(nodes=[{"CPU": 1}, {"CPU": 1, "accel": 1}], **FAST) as c:
        a = Pinned.remote()
        assert tb.get(a.ping.remote(), timeout=30) == "pong"
        tb.kill_node(tb.nodes()[1]["NodeID"])
        with pytest.raises((tb.ActorDiedError, tb.InfeasibleError)):
            tb.get(a.ping.remote(), timeout=60)
    assert_cluster_gone(c)


def test_one_faults_section_drives_both_engines(tmp_path):
    """The same [faults] (a node killed mid-run, one added) on the simulator and the real
    runtime: both carry out the failures and finish every task. The simulator (deterministic)
    also records lost attempts and re-executions; on the real runtime whether the killed node
    held work at that instant depends on timing, so only the outcome is checked there."""
    text = """
        [cluster]
        nodes = 3
        cpus_per_node = 1
        heartbeat_interval_s = 0.05
        num_heartbeats_timeout = 10
        [scheduler]
        spillover = "AlwaysGlobal"
        placement = "RoundRobin"
        [workload]
        shape = "chains"
        chain_length = 4
        jobs = 40
        in_flight = 6
        duration = {dist = "constant", value = 0.02}
        output_bytes = {dist = "constant", value = 200000}
        [faults]
        node_failures = [{at_s = 0.2, node = 1}]
        node_additions = [{at_s = 0.4, cpus = 1}]
        [run]
        real_nodes = 3
    """
    for engine in ("sim", "real"):
        res = run_toml(tmp_path / "faults.toml", text, [f"run.engine={engine}"])
        tr = res.trace
        last = tr.sort_values("attempt").groupby("task_id").tail(1)
        assert len(last) == 160 and (last.state == "finished").all(), engine
        assert res.info["nodes_killed"] == 1 and res.info["nodes_added"] == 1, engine
        assert not (tr.state == "failed").any(), engine
        if engine == "sim":
            assert (tr.state == "lost").any() and (tr.attempt > 1).any()


# --- actor reconstruction ------------------------------------------------------------

class _Counting:
    """A counter whose state is only in the process: a rebuild must replay to get it back."""
    def __init__(self):
        self.n = 0

    def incr(self, folder=None, t=0.0):
        if folder:                      # mark that this call runs, then work
            open(os.path.join(folder, f"call-{self.n + 1}"), "w").close()
            time.sleep(t)
        self.n += 1
        return self.n


@tb.remote(max_restarts=1)
class Tally(_Counting):
    pass


@tb.remote(max_restarts=1, checkpoint_interval=3)
class CheckpointedTally(_Counting):
    pass


def _rows(name):
    return [r for r in records() if r["function"] == name]


def _replayed(name: str) -> int:
    return sum(1 for r in _rows(name) if r["attempt"] == 2)


def test_a_crashed_actor_is_rebuilt_by_replaying_its_calls():
    """max_restarts=1, no checkpoints: after its process dies, the actor is rebuilt by
    running the constructor and replaying all 5 calls; callers see each result once, and
    calls made during the rebuild run after it, in order."""
    with tb.init(num_cpus=2, **FAST) as c:
        a = Tally.remote()
        assert tb.get([a.incr.remote() for _ in range(5)]) == [1, 2, 3, 4, 5]
        tb.kill_actor_process(a)
        assert tb.get([a.incr.remote() for _ in range(3)], timeout=30) == [6, 7, 8]
        assert _replayed("Tally.incr") == 5
        tb.kill_actor_process(a)                      # no restart left
        with pytest.raises(tb.ActorDiedError):
            tb.get(a.incr.remote(), timeout=30)
    assert_cluster_gone(c)


def test_checkpoints_bound_the_replay_and_the_class_controls_what_is_saved():
    """checkpoint_interval=2: the instance is pickled every 2 calls (through __getstate__),
    so after a crash only the calls since the last checkpoint are replayed."""
    @tb.remote(max_restarts=1, checkpoint_interval=2)
    class Keeper:
        def __init__(self):
            self.items = []
            self.cache = open(os.devnull)            # not picklable: left out of checkpoints

        def __getstate__(self):
            return {"items": self.items}

        def __setstate__(self, state):
            self.items = state["items"]
            self.cache = open(os.devnull)

        def add(self, x):
            self.items.append(x)
            return list(self.items)

    with tb.init(num_cpus=2, **FAST) as c:
        k = Keeper.remote()
        tb.get([k.add.remote(i) for i in range(5)])
        tb.kill_actor_process(k)
        assert tb.get(k.add.remote(5), timeout=30) == [0, 1, 2, 3, 4, 5]
        assert _replayed("Keeper.add") == 1            # checkpoint after call 4; call 5 replayed
    assert_cluster_gone(c)


def test_random_kills_with_restores_on_the_real_engine(tmp_path):
    """kill_every_s with restore_after_s: nodes die at random (never below min_live_nodes,
    never node 0) and come back as new nodes; a map-reduce workload still completes."""
    res = run_toml(tmp_path / "random.toml", """
        [cluster]
        nodes = 4
        cpus_per_node = 2
        heartbeat_interval_s = 0.05
        num_heartbeats_timeout = 10
        [workload]
        shape = "map_reduce"
        map_tasks = 4
        reduce_tasks = 1
        jobs = 200
        in_flight = 8
        duration = {dist = "constant", value = 0.002}
        output_bytes = {dist = "constant", value = 50000}
        [faults]
        kill_every_s = 0.4
        restore_after_s = 0.3
        min_live_nodes = 2
        max_retries = 20
        [run]
        engine = "real"
        real_nodes = 4
    """)
    assert res.info["nodes_killed"] >= 1 and res.info["nodes_added"] >= 1
    assert not (res.trace.state == "failed").any()




@tb.remote
class Fragile:
    def ping(self):
        return "pong"


def test_actors_on_a_killed_node_are_rebuilt_elsewhere_by_replay_from_their_checkpoints():
    """Node 1 dies with three actors. With max_restarts=1 each is rebuilt on a live node:
    the one without checkpoints replays all 7 calls, the checkpointed one (every 3 calls)
    only the 1 after its checkpoint; both go on counting where they were. The one with
    max_restarts=0 is dead: calls on it fail clearly."""
    with tb.init(num_cpus=1, num_nodes=3, **FAST) as c:
        plain, ckpt, fragile = (Tally.options(_node=1).remote(), CheckpointedTally.options(_node=1).remote(),
                                Fragile.options(_node=1).remote())
        assert tb.get([plain.incr.remote() for _ in range(7)]) == list(range(1, 8))
        assert tb.get([ckpt.incr.remote() for _ in range(7)]) == list(range(1, 8))
        assert tb.get(fragile.ping.remote()) == "pong"
        victim = tb.nodes()[1]["NodeID"]
        tb.kill_node(victim)
        _wait_dead(victim)
        assert tb.get([plain.incr.remote() for _ in range(3)], timeout=60) == [8, 9, 10]
        assert tb.get([ckpt.incr.remote() for _ in range(3)], timeout=60) == [8, 9, 10]
        with pytest.raises(tb.ActorDiedError, match="max_restarts=0"):
            tb.get(fragile.ping.remote(), timeout=60)
        assert _replayed("Tally.incr") == 7
        assert _replayed("CheckpointedTally.incr") == 1
        rebuilt = {r["node"] for r in _rows("Tally.__init__") + _rows("CheckpointedTally.__init__") if r["attempt"] == 2}
        assert rebuilt and 1 not in rebuilt                     # on live nodes
    assert_cluster_gone(c)


def test_calls_in_flight_when_the_actors_node_dies_run_once_in_order():
    """Calls sent while the node dies are sent again to the rebuilt actor: a call that ran
    is not run twice (its result comes back by replay), one that had not runs after the
    replay, and the results are each caller's calls in order."""
    with tb.init(num_cpus=1, num_nodes=3, **FAST) as c:
        t = Tally.options(_node=1).remote()
        first = [t.incr.remote() for _ in range(30)]
        tb.kill_node(tb.nodes()[1]["NodeID"])
        later = [t.incr.remote() for _ in range(10)]
        assert tb.get(first + later, timeout=60) == list(range(1, 41))
    assert_cluster_gone(c)


def test_an_actor_process_killed_mid_call_runs_that_call_once_after_the_rebuild(tmp_path):
    """With max_task_retries=1, the call that was running when the actor's process died runs
    again after the replay (the state it had not changed yet is rebuilt first), and later
    calls follow in order."""
    with tb.init(num_cpus=2, **FAST) as c:
        a = Tally.options(max_task_retries=1).remote()
        assert tb.get([a.incr.remote() for _ in range(3)]) == [1, 2, 3]
        mid = a.incr.remote(str(tmp_path), 1.0)
        after = [a.incr.remote() for _ in range(2)]
        _wait_started(tmp_path)                        # call 4 is running
        tb.kill_actor_process(a)
        assert tb.get([mid] + after, timeout=60) == [4, 5, 6]
        assert _replayed("Tally.incr") == 4      # the replay of calls 1-3, and call 4's second attempt
    assert_cluster_gone(c)


def test_an_actor_process_killed_mid_call_fails_that_call_by_default(tmp_path):
    """max_task_retries=0 (the default, as in Ray): the call that was running when the
    actor's process died fails with ActorDiedError; the actor is restarted (calls 1-3
    replayed) and later calls run in order."""
    with tb.init(num_cpus=2, **FAST) as c:
        a = Tally.remote()
        assert tb.get([a.incr.remote() for _ in range(3)]) == [1, 2, 3]
        mid = a.incr.remote(str(tmp_path), 1.0)
        after = [a.incr.remote() for _ in range(2)]
        _wait_started(tmp_path)                        # call 4 is running
        tb.kill_actor_process(a)
        with pytest.raises(tb.ActorDiedError, match="max_task_retries=0"):
            tb.get(mid, timeout=60)
        assert tb.get(after, timeout=60) == [4, 5]
        assert _replayed("Tally.incr") == 3
    assert_cluster_gone(c)


def test_a_node_killed_around_a_large_transfer_from_it():
    """Node 2 pulls a 200 MB object from node 1, which is killed right after the consumer is
    submitted: before, during or after the transfer. Whichever it hits, the consumer gets the
    right value (pulled whole, or rebuilt by re-running the producer) and nothing hangs."""
    with tb.init(num_cpus=1, num_nodes=3, object_store_bytes=1 << 30, **FAST) as c:
        big = make.options(_node=1).remote(3, 25_000_000)          # 25M float64: 200 MB
        tb.wait([big])
        s = total.options(_node=2).remote(big)
        tb.kill_node(tb.nodes()[1]["NodeID"])
        assert tb.get(s, timeout=90) == 3 * 25_000_000.0
    assert_cluster_gone(c)


def test_a_lost_actor_is_rebuilt_where_the_placement_policy_puts_it():
    """Where a lost actor is rebuilt: the rule both engines share (policy.base.place_rebuild;
    test_sim_actors checks the simulator) — the global scheduler's policy places it, here one
    that always picks the highest live node."""
    with tb.init(num_cpus=1, num_nodes=4, placement="tests.report_plugins:HighestLiveNode", **FAST) as c:
        a = Tally.options(_node=3).remote()
        assert tb.get([a.incr.remote() for _ in range(2)]) == [1, 2]
        victim = tb.nodes()[3]["NodeID"]
        tb.kill_node(victim)
        _wait_dead(victim)
        assert tb.get(a.incr.remote(), timeout=60) == 3
        rebuilt = [r["node"] for r in _rows("Tally.__init__") if r["attempt"] == 2]
        assert rebuilt == [2]                                   # node 3 is dead: the highest live one
    assert_cluster_gone(c)


@tb.remote(max_restarts=1, resources={"accel": 1})
class AccelTally(_Counting):
    pass


def test_a_lost_actor_no_live_node_can_hold_waits_for_one():
    """The rule both engines share (test_sim_actors checks the simulator): an actor whose
    rebuild finds no live node that can hold it is not given up — its entry says restarting,
    on no node — and a node that joins and can hold it gets it (placed by the policy); the
    call made meanwhile returns."""
    from testbed.real import api
    with tb.init(nodes=[{"CPU": 1}, {"CPU": 1, "accel": 1}], **FAST) as c:
        a = AccelTally.remote()
        assert tb.get([a.incr.remote() for _ in range(2)], timeout=30) == [1, 2]
        victim = tb.nodes()[1]["NodeID"]
        tb.kill_node(victim)
        g = api._gcs_client()
        try:
            entry = {}

            def tried():                      # the global scheduler has tried to rebuild it
                entry.update(g.read("actor", a._actor_id))
                return entry["node"] != 1 or entry["state"] == "dead"
            poll_until(tried, "the rebuild was tried", timeout=30.0)
        finally:
            g.close()
        assert entry["state"] == "restarting" and entry["node"] == -1, entry
        ref = a.incr.remote()
        tb.add_node(num_cpus=1, resources={"accel": 1})
        assert tb.get(ref, timeout=60) == 3
        rebuilt = [r["node"] for r in _rows("AccelTally.__init__") if r["attempt"] == 2]
        assert rebuilt == [2]
    assert_cluster_gone(c)
