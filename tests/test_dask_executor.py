"""``testbed run CONFIG --executor dask`` (a LocalCluster of worker processes) and
``--executor dask://HOST:PORT`` (a running scheduler) write the same results folder as the local
executor, but for wall-clock columns; resume works across executors; an unreachable scheduler,
a worker with another testbed, or no dask at all is one line, exit 2, nothing written; Ctrl-C
keeps the finished runs and leaves no process behind."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import distributed  # in the test extra: CI runs these on a real LocalCluster
import pandas as pd
import pytest

from testbed.cli import main
from testbed.studies import executors

pytestmark = pytest.mark.timeout(120)

#: 2 points x 2 seeds with per-run Traces and a study that writes timeseries.csv
TINY = """\
[cluster]
nodes = 4
cpus_per_node = 4

[workload]
shape = "independent"
jobs = 300
duration = {dist = "exponential", mean = 0.01}

[run]
seeds = [0, 1]
trace_out = "csv"

[sweep]
"cluster.nodes" = [2, 4]
"""
#: columns that measure this machine, not the run
WALL = ["engine_wall_s"]
REPO = Path(__file__).resolve().parents[1]


def runs(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "runs.csv").drop(columns=WALL)


def assert_same_folder(a: Path, b: Path) -> None:
    """Same runs.csv (all but wall-clock columns), same files, same per-run Traces."""
    pd.testing.assert_frame_equal(runs(a), runs(b))
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    traces = [n for n in names if n.startswith("trace-")]
    assert len(traces) == len(runs(a))
    for n in traces:
        pd.testing.assert_frame_equal(pd.read_csv(a / n), pd.read_csv(b / n))
    assert (a / "config.toml").read_text() == (b / "config.toml").read_text()


@pytest.fixture(scope="module", autouse=True)
def resource_tracker():
    """Spawned worker processes make multiprocessing start its resource tracker, a helper
    process that lives as long as this interpreter: start it before any test looks at its
    children, so that the leftover check (conftest) sees what the tests themselves started."""
    from multiprocessing import resource_tracker
    resource_tracker.ensure_running()


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "exp.toml"
    path.write_text(TINY)
    return path


@pytest.fixture
def local_run(cfg, tmp_path):
    out = tmp_path / "local"
    assert main(["run", str(cfg), "--out", str(out), "--jobs", "2", "--quiet"]) == 0
    return out


@pytest.fixture
def scheduler():
    """A running scheduler with one in-process worker thread; its address."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def one_error_line(err: str, *words: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("testbed: error: ")
    for w in words:
        assert w in lines[0]
    return lines[0]


def test_local_dask_cluster_writes_the_local_executors_folder(cfg, local_run, tmp_path):
    """Two worker processes (spawned, so they import testbed afresh) give the same rows."""
    out = tmp_path / "dask"
    assert main(["run", str(cfg), "--out", str(out), "--jobs", "2", "--quiet", "--executor", "dask"]) == 0
    assert_same_folder(local_run, out)


def test_a_running_scheduler_writes_the_same_folder(cfg, local_run, scheduler, tmp_path):
    out = tmp_path / "remote"
    addr = scheduler.removeprefix("tcp://")
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--executor", f"dask://{addr}"]) == 0
    assert_same_folder(local_run, out)


def test_resume_on_a_dask_cluster_runs_only_the_missing_seeds(cfg, local_run, scheduler, tmp_path, monkeypatch):
    """A one-seed local run, resumed on the cluster with both seeds, is the full local run."""
    part = tmp_path / "part"
    assert main(["run", str(cfg), "--out", str(part), "--jobs", "1", "--quiet", "--set", "run.seeds=[0]"]) == 0
    submitted = []
    client_submit = distributed.Client.submit

    def submit(self, fn, task, **kw):
        submitted.append((task[0], task[2]))
        return client_submit(self, fn, task, **kw)

    monkeypatch.setattr(distributed.Client, "submit", submit)
    out = tmp_path / "resumed"
    assert main(["run", str(cfg), "--out", str(out), "--quiet", "--resume", str(part),
                 "--executor", f"dask://{scheduler.removeprefix('tcp://')}"]) == 0
    assert sorted(submitted) == [(0, 1), (1, 1)]
    assert_same_folder(local_run, out)


def test_an_unreachable_scheduler_is_one_line_within_seconds(cfg, tmp_path, capsys):
    out = tmp_path / "out"
    t0 = time.monotonic()
    code = main(["run", str(cfg), "--out", str(out), "--quiet", "--executor", "dask://127.0.0.1:1"])
    took = time.monotonic() - t0
    assert code == 2
    one_error_line(capsys.readouterr().err, "dask://127.0.0.1:1", "cannot reach")
    assert took < executors.DASK_CONNECT_TIMEOUT_S + 10      # a connect timeout, not a hang
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml"]


def test_a_scheduler_without_workers_is_one_line(cfg, tmp_path, capsys):
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None) as c:
        code = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet",
                     "--executor", "dask://" + c.scheduler_address.removeprefix("tcp://")])
    assert code == 2
    one_error_line(capsys.readouterr().err, "no worker", "dask worker")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml"]


@pytest.mark.parametrize("expr, words", [
    ("('9.9.9', 'x')", ["has testbed 9.9.9", executors.fingerprint()[0]]),
    ("(__import__('testbed').__version__, 'x')", ["other source files"]),
    ("__import__('testbed_not_installed_here')", ["cannot import testbed", "pip install testbed=="]),
])
def test_a_worker_with_another_testbed_is_refused(cfg, scheduler, tmp_path, capsys, monkeypatch, expr, words):
    """What a worker answers on connect (its version, its sources) must match this machine's."""
    monkeypatch.setattr(executors, "_FINGERPRINT_EXPR", expr)
    code = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet",
                 "--executor", f"dask://{scheduler.removeprefix('tcp://')}"])
    assert code == 2
    one_error_line(capsys.readouterr().err, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml"]


def test_without_dask_installed_it_says_how_to_install(cfg, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in ("dask", "distributed") else real(name, *a))
    code = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--executor", "dask"])
    assert code == 2
    one_error_line(capsys.readouterr().err, "--executor dask", "pip install 'testbed[dask]'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml"]


@pytest.mark.parametrize("bad", ["dask://nohost", "dask://h:0", "dask://h:x", "ray", "dask://h:1/x"])
def test_a_malformed_executor_is_one_line(cfg, tmp_path, capsys, bad):
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--executor", bad]) == 2
    one_error_line(capsys.readouterr().err, f"--executor {bad}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml"]


def test_a_failing_run_on_the_cluster_names_its_point_and_seed(cfg, scheduler, tmp_path, capsys, monkeypatch):
    from testbed.studies import execute

    def boom(config, seed, **kw):
        if seed == 1 and config["cluster"]["nodes"] == 4:
            raise ZeroDivisionError("injected")
        return real(config, seed, **kw)

    real = execute.run_once
    monkeypatch.setattr(execute, "run_once", boom)    # the worker is a thread of this process
    code = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet",
                 "--executor", f"dask://{scheduler.removeprefix('tcp://')}"])
    assert code == 2
    one_error_line(capsys.readouterr().err, "point 1 [nodes=4], seed 1 failed", "ZeroDivisionError: injected")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml"]


def _group_alive(pgid: int) -> list[int]:
    alive = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append(int(d.name))
    return alive


def test_ctrl_c_on_a_local_dask_cluster_keeps_the_finished_runs(tmp_path):
    """SIGINT to the whole process group, as a terminal sends it (the workers get it too): the
    finished runs are saved in out-interrupted, and every process of the group is gone."""
    cfg = tmp_path / "exp.toml"
    cfg.write_text(TINY.replace("jobs = 300", "jobs = 4000").replace("seeds = [0, 1]", "seeds = [0, 1, 2, 3, 4, 5]")
                   .replace('trace_out = "csv"', ""))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", str(cfg), "--out", str(out),
                             "--jobs", "2", "--executor", "dask"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    err = bytearray()
    first_done = threading.Event()

    def read():
        while chunk := proc.stderr.read1(4096):
            err.extend(chunk)
            if b" 1/12 " in err or b"| 1/12" in err:
                first_done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert first_done.wait(90), err.decode(errors="replace")
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(10)
    text = err.decode(errors="replace")
    assert proc.returncode == 130, text
    saved = tmp_path / "out-interrupted"
    assert text.strip().splitlines()[-1].endswith(f"testbed: interrupted; finished runs are in {saved}")
    assert not out.exists()
    n = len(pd.read_csv(saved / "runs.csv"))
    assert 1 <= n < 12
    assert f"{n} of 12" in (saved / "summary.md").read_text()
    # the cluster is stopped before the command exits: no worker outlives it
    assert not _group_alive(proc.pid), "dask worker processes outlived the interrupted run"


def test_a_sweep_on_the_real_runtime_stays_on_the_local_executor(cfg, tmp_path, capsys):
    """A real-engine run starts a runtime cluster where it runs: refused before anything starts."""
    code = main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet", "--executor", "dask",
                 "--set", "run.engine=real"])
    assert code == 2
    one_error_line(capsys.readouterr().err, "--executor dask", "engine 'real'", "local executor")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml"]
