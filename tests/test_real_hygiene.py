"""The runtime cleans up after itself: no second cluster from inside a task, a worker pool
that shrinks back, no task's child outliving the cluster, no leftovers of a killed cluster
kept for good, and a warning that names checkpoint_interval when a restart replays much."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import testbed as tb
from conftest import alive as _alive, assert_cluster_gone, poll_until

pytestmark = pytest.mark.timeout(120)


# --- tb.init inside a task -------------------------------------------------------------------

@tb.remote
def _init_inside(ignore: bool):
    try:
        got = tb.init(num_cpus=1, ignore_reinit_error=ignore)
    except tb.ClusterError as exc:
        return ("error", str(exc))
    return ("connected", type(got).__name__, tb.is_initialized(), tb.get(tb.put(41)) + 1)


def test_init_inside_a_task_is_an_error_or_the_existing_connection():
    """As in Ray: a worker is connected already, so tb.init there raises, or (with
    ignore_reinit_error=True) returns the connection it has; no second cluster starts."""
    with tb.init(num_cpus=1) as c:
        kind, why = tb.get(_init_inside.remote(False), timeout=60)
        assert kind == "error" and "inside a task" in why and "ignore_reinit_error" in why
        assert tb.get(_init_inside.remote(True), timeout=60) == ("connected", "WorkerConnection", True, 42)
    assert_cluster_gone(c)


# --- the worker pool shrinks back ----------------------------------------------------------

@tb.remote
def _nest(depth: int):
    if depth == 0:
        return os.getpid()
    return tb.get(_nest.remote(depth - 1))


def _pooled_workers(c) -> list[int]:
    return [pid for pid, (role, args) in list(c.pids.items()) if role == "worker" and _alive(pid)]


def test_the_worker_pool_shrinks_back_after_nested_tasks():
    """Each blocked nested task's worker makes the node start another; once they are done,
    idle workers beyond the node's CPUs exit after idle_worker_timeout_s."""
    depth = 12
    with tb.init(num_cpus=1, _system_config={"idle_worker_timeout_s": 0.2}) as c:
        tb.get(_nest.remote(depth), timeout=90)
        poll_until(lambda: len(_pooled_workers(c)) == 1, "the pool shrank back to one worker per CPU",
                   timeout=30)
        assert tb.get(_nest.remote(2), timeout=60) > 0     # it still works, and grows again
    assert_cluster_gone(c)


def test_the_idle_worker_timeout_is_a_documented_parameter():
    from testbed.real import params
    f = params.RUNTIME["idle_worker_timeout_s"]
    assert f.doc.startswith("seconds:") and f.default > 0


# --- a task's child dies with the cluster ----------------------------------------------------

@tb.remote
def _fork_sleeper(new_session: bool):
    p = subprocess.Popen(["sleep", "600"], start_new_session=new_session)
    return p.pid


@pytest.mark.parametrize("new_session", [False, True])
def test_a_tasks_child_does_not_outlive_shutdown(new_session):
    """A task that starts a process and returns (its child orphaned, or still the worker's,
    even in a session of its own): after shutdown no such process is alive."""
    pids = []
    try:
        with tb.init(num_cpus=1) as c:
            pids = tb.get([_fork_sleeper.remote(new_session) for _ in range(2)], timeout=60)
            assert all(_alive(p) for p in pids)
        assert_cluster_gone(c)
        assert [p for p in pids if _alive(p)] == [], "a task's child outlived shutdown"
    finally:
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


# --- leftovers of a killed cluster are removed by the next tb.init ---------------------------

_DRIVER = """
import json, sys
import numpy as np
import testbed as tb
c = tb.init(num_cpus=1)
ref = tb.put(np.ones(200_000))             # a shared-memory segment exists
print(json.dumps({"dir": c.dir, "prefix": c.shm_prefix, "pids": list(c.pids) + [c.proc.pid]}), flush=True)
sys.stdin.readline()
print(float(tb.get(ref).sum()), flush=True)    # still working after the other cluster's cleanup
"""


def _start_driver(tmp_path: Path, name: str) -> subprocess.Popen:
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(_DRIVER))
    return subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=tmp_path, start_new_session=True)


def _files_of(info: dict) -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(info["prefix"])]


def test_init_removes_the_leftovers_of_a_killed_cluster_and_nothing_live(tmp_path):
    """Killing a driver's whole process group (driver, supervisor and all) leaves its folder
    and /dev/shm files; the next tb.init removes them, as their owners are dead, and leaves a
    live cluster's alone."""
    dead = _start_driver(tmp_path, "dead")
    live = _start_driver(tmp_path, "live")
    try:
        d_info = json.loads(dead.stdout.readline())
        l_info = json.loads(live.stdout.readline())
        os.killpg(dead.pid, signal.SIGKILL)
        dead.wait(timeout=30)
        poll_until(lambda: not any(_alive(p) for p in d_info["pids"]), "the killed cluster's processes exited")
        assert Path(d_info["dir"]).exists() and _files_of(d_info), "nothing was left to clean up"
        with tb.init(num_cpus=1) as c:
            assert not Path(d_info["dir"]).exists()
            assert _files_of(d_info) == []
            assert Path(l_info["dir"]).exists() and _files_of(l_info)
        assert_cluster_gone(c)
        out, _ = live.communicate("go\n", timeout=60)
        assert out.strip() == "200000.0" and live.returncode == 0
    finally:
        for p in (dead, live):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        from testbed.real.objstore import cleanup_prefix
        for info in (locals().get("d_info"), locals().get("l_info")):
            if info:
                cleanup_prefix(info["prefix"])


# --- replaying a long history says how to avoid it ---------------------------------------------

@tb.remote(max_restarts=2)
class _Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n


def test_a_restart_replaying_many_calls_warns_once_naming_checkpoint_interval(capfd):
    with tb.init(num_cpus=1, _system_config={"replay_warn_calls": 5}) as c:
        a = _Counter.remote()
        assert tb.get([a.incr.remote() for _ in range(8)], timeout=60) == list(range(1, 9))
        tb.kill_actor_process(a)
        assert tb.get(a.incr.remote(), timeout=60) == 9          # rebuilt by replaying 8 calls
        tb.kill_actor_process(a)
        assert tb.get(a.incr.remote(), timeout=60) == 10
    assert_cluster_gone(c)
    err = capfd.readouterr().err
    assert err.count("checkpoint_interval") == 1, err
    assert "_Counter" in err and "replays 8 calls" in err


# --- a result fetched from another node is freed there too -----------------------------------

@tb.remote
def _produce(i):
    import numpy as np
    return np.full(12_500, float(i))          # 100 kB: kept inline by the node that made it


@tb.remote
def _node_objects():
    from testbed.real import api
    return api._core().request("store_stats")["objects"]


def test_a_fetched_result_is_freed_on_the_node_that_made_it():
    """The driver (node 0) gets results made on node 1 and drops them: once it frees its
    copy, node 1 frees the original (before, node 1 kept one object per round for good)."""
    from testbed.real import api
    rounds = 60
    with tb.init(num_cpus=1, num_nodes=2) as c:
        for i in range(rounds):
            assert float(tb.get(_produce.options(_node=1).remote(i), timeout=60)[0]) == i
        poll_until(lambda: tb.get(_node_objects.options(_node=1).remote(), timeout=60) <= 4,
                   f"node 1 freed the {rounds} results the driver fetched and dropped", timeout=30)
        assert api._core().request("store_stats")["objects"] <= 4
        kept = _produce.options(_node=1).remote(-1)       # a result still referenced stays
        assert float(tb.get(kept, timeout=60)[0]) == -1.0
        assert float(tb.get(kept, timeout=60)[0]) == -1.0
    assert_cluster_gone(c)


def test_a_result_dropped_before_it_is_made_elsewhere_is_freed_there():
    """Fire and forget: results made on node 1 whose refs the driver dropped at once are
    freed on node 1 once they exist (before, each stayed there for good)."""
    rounds = 40
    with tb.init(num_cpus=1, num_nodes=2) as c:
        for i in range(rounds):
            _produce.options(_node=1).remote(i)           # the ref dies at once
        assert float(tb.get(_produce.options(_node=1).remote(-1), timeout=60)[0]) == -1.0
        poll_until(lambda: tb.get(_node_objects.options(_node=1).remote(), timeout=60) <= 4,
                   f"node 1 freed the {rounds} results nobody holds", timeout=30)
    assert_cluster_gone(c)


def test_leftovers_are_removed_only_when_every_owner_is_dead(tmp_path, monkeypatch):
    """The owner record's rules, without a cluster: all owners dead (or a reused pid: another
    start time) -> folder and /dev/shm files go; a live owner, or no record, -> untouched.
    `testbed` commands sweep too."""
    import uuid

    from testbed.cli import main
    from testbed.real import leftovers

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me, my_start = os.getpid(), leftovers.start_time(os.getpid())
    cases = {"dead": [[dead.pid, 1]], "reused": [[me, my_start + 1]], "live": [[dead.pid, 1], [me, my_start]],
             "norecord": None}
    made = {}
    try:
        for name, owners in cases.items():
            prefix = f"tb-{uuid.uuid4().hex[:10]}-"
            folder = tmp_path / f"testbed-{name}"
            folder.mkdir()
            if owners is not None:
                (folder / leftovers.RECORD).write_text(json.dumps({"shm_prefix": prefix, "owners": owners}))
            (Path("/dev/shm") / f"{prefix}n0-1").write_bytes(b"x")
            made[name] = (folder, prefix)
        removed = leftovers.remove_dead(str(tmp_path))
        assert sorted(Path(f).name for f in removed) == ["testbed-dead", "testbed-reused"]
        for name, (folder, prefix) in made.items():
            kept = name in ("live", "norecord")
            assert folder.exists() == kept and (Path("/dev/shm") / f"{prefix}n0-1").exists() == kept, name
        (made["live"][0] / leftovers.RECORD).write_text(json.dumps({"shm_prefix": made["live"][1],
                                                                    "owners": [[dead.pid, 1]]}))
        import tempfile
        monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
        assert main(["list"]) == 0                      # any command sweeps first
        assert not made["live"][0].exists() and made["norecord"][0].exists()
    finally:
        from testbed.real.objstore import cleanup_prefix
        for _, prefix in made.values():
            cleanup_prefix(prefix)
