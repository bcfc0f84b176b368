"""The runtime's life cycle: however the driver ends, nothing is left behind; a crashing
worker becomes an error or a retry, never a hang."""
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
from conftest import alive as _alive, assert_cluster_gone, run_toml

pytestmark = pytest.mark.timeout(90)


def _driver(tmp_path: Path, body: str) -> subprocess.Popen:
    """A driver script that starts a cluster, prints what to check, then runs ``body``."""
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent("""
        import json, os, sys, time
        import testbed as tb
        from testbed.real import api
        c = tb.init(num_cpus=2, num_nodes=2)
        @tb.remote
        def f(x):
            return x + 1
        assert tb.get(f.remote(1)) == 2
        print(json.dumps({"pids": list(c.pids), "prefix": c.shm_prefix, "dir": c.dir,
                          "supervisor": c.proc.pid}), flush=True)
    """) + textwrap.dedent(body))
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)


def _gone(info: dict, timeout: float = 20.0) -> None:
    """Every process of the cluster has exited, its shared memory and folder are gone
    (the supervisor cleans up asynchronously after the driver is gone, so wait for its exit)."""
    import time
    pids = info["pids"] + [info["supervisor"]]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            break
        time.sleep(0.05)    # polling the OS for exits that we cannot wait() on (not our children)
    assert not [p for p in pids if _alive(p)], "cluster processes outlived the driver"
    left = [n for n in os.listdir("/dev/shm") if n.startswith(info["prefix"])]
    assert not left, f"shared memory left: {left}"
    assert not Path(info["dir"]).exists(), f"cluster folder left: {info['dir']}"


def test_shutdown_leaves_nothing_behind():
    c = tb.init(num_cpus=1, num_nodes=2)
    assert len(tb.nodes()) == 2
    tb.shutdown()
    assert_cluster_gone(c)
    assert not tb.is_initialized()


def test_init_as_a_context_manager_and_rays_forms():
    with tb.init(num_cpus=2, num_gpus=0, resources={"accel": 1}) as c:
        assert tb.cluster_resources() == {"CPU": 2.0, "accel": 1.0}
        with pytest.raises(tb.ClusterError, match="already"):
            tb.init()
    assert_cluster_gone(c)
    with tb.init(num_nodes=3, num_cpus=1) as c:
        assert [n["Resources"] for n in tb.nodes()] == [{"CPU": 1.0}] * 3
    with tb.init(nodes=[{"CPU": 1}, {"CPU": 2, "GPU": 1}]) as c:
        assert tb.cluster_resources() == {"CPU": 3.0, "GPU": 1.0}
    assert_cluster_gone(c)


def test_bad_init_arguments_fail_at_the_call():
    with pytest.raises(ValueError, match="num_nodes"):
        tb.init(num_nodes=0)
    with pytest.raises(ValueError, match="placement"):
        tb.init(placement="NoSuchPolicy")
    with pytest.raises(ValueError, match="num_cpus"):
        tb.init(num_cpus=-1)
    assert not tb.is_initialized()


def test_using_the_api_before_init_is_a_clear_error():
    @tb.remote
    def f():
        return 1
    with pytest.raises(tb.ClusterError, match="init"):
        f.remote()


@pytest.mark.parametrize("ending, rc", [
    ("", 0),                                             # the script just ends
    ("raise RuntimeError('driver failed')", 1),          # an exception escapes the driver
    ("sys.exit(3)", 3),
])
def test_driver_ending_leaves_nothing_behind(tmp_path, ending, rc):
    p = _driver(tmp_path, ending)
    out, err = p.communicate(timeout=60)
    assert p.returncode == rc, err
    _gone(json.loads(out.splitlines()[0]))


def test_driver_killed_with_sigkill_leaves_nothing_behind(tmp_path):
    p = _driver(tmp_path, "sys.stdin.read()\n")       # blocks until we kill it
    p.stdin = None
    line = p.stdout.readline()
    info = json.loads(line)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    p.stdout.close()
    p.stderr.close()
    _gone(info)


def test_a_worker_that_dies_mid_task_is_an_error_or_a_retry(tmp_path):
    marker = tmp_path / "crashed-once"

    @tb.remote
    def crash():
        os._exit(1)

    @tb.remote(max_retries=1)
    def crash_once(path):
        if not os.path.exists(path):
            open(path, "w").close()
            os._exit(1)
        return "second attempt"

    with tb.init(num_cpus=1) as c:
        with pytest.raises(tb.WorkerCrashedError):
            tb.get(crash.remote(), timeout=30)
        assert tb.get(crash_once.remote(str(marker)), timeout=30) == "second attempt"

        @tb.remote
        def ok():
            return "still working"
        assert tb.get(ok.remote(), timeout=30) == "still working"
    assert_cluster_gone(c)


@tb.remote
def _double(x):
    return 2 * x


def test_an_actor_holds_its_resources_for_its_lifetime():
    """On a one-CPU node an actor holding the CPU keeps a CPU task waiting until it dies."""
    @tb.remote(num_cpus=1)
    class Holder:
        def ping(self):
            return "pong"

    with tb.init(num_cpus=1) as c:
        h = Holder.remote()
        assert tb.get(h.ping.remote()) == "pong"
        task = _double.remote(4)
        ready, _ = tb.wait([task], timeout=0.5)
        assert ready == []
        tb.kill(h)
        assert tb.get(task, timeout=20) == 8
    assert_cluster_gone(c)


def test_an_experiment_config_runs_on_the_real_engine(tmp_path, capsys):
    """`testbed run CONFIG --set run.engine=real`: the same workload as real tasks (a
    map-reduce DAG with objects, from two drivers), a Trace with the simulator's columns, and
    the same results folder."""
    import pandas as pd

    from testbed.cli import main
    from testbed.core.trace import NAMES
    cfg = tmp_path / "exp.toml"
    res = run_toml(cfg, """
        [cluster]
        nodes = 8
        cpus_per_node = 2
        [scheduler]
        spillover = {name = "QueueThreshold", threshold = 1}
        [workload]
        shape = "map_reduce"
        map_tasks = 3
        reduce_tasks = 1
        jobs = 12
        drivers = 2
        in_flight = 2
        duration = {dist = "constant", value = 0.01}
        output_bytes = {dist = "constant", value = 200000}
        [run]
        real_nodes = 2
        real_max_jobs = 10
    """, ["run.engine=real"])
    tr = res.trace
    assert list(tr.columns) == list(NAMES)
    assert len(tr) == 10 * 4 and (tr.state == "finished").all()
    assert set(tr.node) <= {0, 1} and tr.job_id.nunique() == 10
    assert (tr.started_s >= tr.placed_s - 1e-6).all() and (tr.finished_s >= tr.started_s).all()
    assert tr.bytes_transferred.sum() > 0          # reduces pulled map outputs from the other node
    assert res.metrics["finished"] == 40
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--set", "run.engine=real", "--out", str(out), "--quiet"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert runs.loc[0, "finished"] == 40 and runs.loc[0, "engine_nodes"] == 2
