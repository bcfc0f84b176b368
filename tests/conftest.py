"""Suite-wide guard: no test may leave a process or a shared-memory segment behind."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

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


def _segments() -> set[str]:
    try:
        return set(os.listdir(SHM))
    except OSError:
        return set()


@pytest.fixture(autouse=True)
def no_leftovers():
    """Fail a test that leaves a child process or a /dev/shm segment behind (and clean up)."""
    me = os.getpid()
    procs_before = _children(me)
    shm_before = _segments()
    yield
    procs = _children(me) - procs_before
    shm = _segments() - shm_before
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
