"""Suite-wide guard: no test may leave a process or a shared-memory segment behind; and the
helpers the runtime's tests share (failure settings, polling, tasks that make objects)."""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest

import testbed as tb

SHM = Path("/dev/shm")


def _children(pid: int) -> set[int]:
    """Live (non-zombie) descendants of ``pid``, from /proc."""
    out: set[int] = set()
    stack = [pid]
    while stack:
        p = stack.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for k in map(int, kids):
                if k not in out:
                    out.add(k)
                    stack.append(k)
    live = set()
    for k in out:
        try:
            state = Path(f"/proc/{k}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            live.add(k)
    return live


#: shm prefixes of the runtime clusters this test process started (every cluster's files
#: start with its prefix): another process's cluster — a second test run on the same machine
#: — is not ours to check or to clean up
_OUR_CLUSTERS: set[str] = set()
_CLUSTER_FILE = re.compile(r"tb-[0-9a-f]{10}-")


def _record_clusters() -> None:
    from testbed.real import api
    init = api.Cluster.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        _OUR_CLUSTERS.add(self.shm_prefix)
    api.Cluster.__init__ = recording_init


_record_clusters()


def _ours(name: str) -> bool:
    if name.startswith("sem.mp-"):
        # multiprocessing's POSIX semaphores carry no owner in their names, so another
        # process's (a concurrent test run's process pool) cannot be told from ours; Python's
        # resource tracker unlinks the ones our processes leave
        return False
    m = _CLUSTER_FILE.match(name)
    return m is None or m.group(0) in _OUR_CLUSTERS


def _segments() -> set[str]:
    """Names in /dev/shm this process may have made (other processes' clusters left out)."""
    try:
        return {n for n in os.listdir(SHM) if _ours(n)}
    except OSError:
        return set()


def _live_cluster():
    """(supervisor pid, shm prefix) of a runtime cluster that is still meant to run (a
    module-scoped fixture's), whose processes and segments are not leftovers yet."""
    import sys
    api = sys.modules.get("testbed.real.api")
    c = getattr(api, "_cluster", None) if api else None
    if c is None:
        return None, None
    return c.proc.pid, c.shm_prefix


@pytest.fixture(autouse=True)
def no_leftovers():
    """Fail a test that leaves a child process or a /dev/shm segment behind (and clean up).
    A cluster that a module-scoped fixture keeps running is checked when it shuts down."""
    me = os.getpid()
    procs_before = _children(me)
    shm_before = _segments()
    yield
    sup, prefix = _live_cluster()
    procs = _children(me) - procs_before
    shm = _segments() - shm_before
    if sup is not None:
        procs -= {sup} | _children(sup)
        shm = {s for s in shm if not s.startswith(prefix)}
        # a cluster process that exited between the two looks (an idle worker trimmed, a killed
        # actor's) was seen by the first and not the second: gone, so not left behind
        procs &= _children(me)
    for pid in procs:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for name in shm:
        try:
            (SHM / name).unlink()
        except OSError:
            pass
    assert not procs, f"test left processes running: {sorted(procs)}"
    assert not shm, f"test left shared-memory segments: {sorted(shm)}"


def alive(pid: int) -> bool:
    """Is ``pid`` a running process (not gone, not a zombie)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def assert_cluster_gone(cluster) -> None:
    """After shutdown: the cluster's supervisor and everything it started have exited, its
    shared memory and its folder are gone."""
    assert cluster.proc.poll() is not None, "the supervisor still runs"
    running = [pid for pid in cluster.pids if alive(pid)]
    assert not running, f"cluster processes still running: {running}"
    left = [n for n in _segments() if n.startswith(cluster.shm_prefix)]
    assert not left, f"shared memory left behind: {left}"
    assert not Path(cluster.dir).exists()


@tb.remote
def make(i, size=100_000):
    """A task whose output is an object worth losing: ``size`` floats equal to i."""
    return np.full(size, float(i))


@tb.remote
def total(a):
    return float(a.sum())


def records() -> list[dict]:
    """The runtime's task rows so far, each a dict by column name (api.RECORD_COLUMNS)."""
    from testbed.real import api
    return [dict(zip(api.RECORD_COLUMNS, r)) for r in api.task_records()]


#: tb.init options for failure tests: a silent node is declared dead after 0.5 s
FAST = dict(heartbeat_interval_s=0.05, num_heartbeats_timeout=10)


def poll_until(cond, what: str, timeout: float = 30.0, every: float = 0.02) -> None:
    """Poll a condition the cluster reaches asynchronously (liveness, reconfiguration, a task
    marking its start), bounded by ``timeout``; fail naming ``what``."""
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting until {what}")


def run_toml(path: Path, text: str, overrides=()):
    """Write a config to ``path`` and run its first point once with seed 0, keeping the
    Trace (the engine is the config's, or an override's)."""
    import textwrap

    from testbed.studies.execute import run_once
    from testbed.studies.experiment import load_experiment
    path.write_text(textwrap.dedent(text))
    exp = load_experiment(path, list(overrides))
    res = run_once(exp.points[0].config, 0, keep_rows=True)
    # the runtime's task table moved only along the shared transitions (gcs.Shard._check_move)
    assert res.info.get("illegal_state_moves", 0) == 0, res.info["illegal_state_moves"]
    return res
