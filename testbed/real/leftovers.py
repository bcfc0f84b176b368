"""Leftovers of clusters whose owners died without cleaning up, found and removed.

A cluster's supervisor cleans up after the driver however the driver ends; but when both die
at once (the driver's whole process group SIGKILLed) nothing is left to do it, and the
cluster's folder (``/tmp/testbed-*``) and its ``/dev/shm/tb-*`` files stay for good. So every
cluster writes an owner record in its folder at start::

    <folder>/owner.json  {"shm_prefix": "tb-0123456789-", "owners": [[pid, start time], ...]}

(the driver's and the supervisor's pids, each with its start time from /proc, so a reused pid
is not mistaken for the owner), and :func:`remove_dead` — called by every ``tb.init`` — removes
the folder and the shared memory of each record whose owners are all dead. A folder without a
record (a cluster being created this instant, or someone else's) is never touched, nor one any
owner of which is alive.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile

from .objstore import cleanup_prefix

RECORD = "owner.json"
_PREFIX = re.compile(r"tb-[0-9a-f]{10}-\Z")


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22), or None
    if it is not running (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def write_owner(folder: str, shm_prefix: str, pids: list[int]) -> None:
    """Record (atomically) who owns the cluster in ``folder``."""
    owners = [[p, start_time(p)] for p in pids]
    tmp = os.path.join(folder, RECORD + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"shm_prefix": shm_prefix, "owners": owners}, f)
    os.replace(tmp, os.path.join(folder, RECORD))


def _owners_dead(record: dict) -> bool:
    owners = record.get("owners")
    if not isinstance(owners, list) or not owners:
        return False
    for pid, started in owners:
        now = start_time(int(pid))
        if now is not None and (started is None or now == started):
            return False                    # this owner (or a process we cannot tell from it) runs
    return True


def remove_dead(tmpdir: str | None = None) -> list[str]:
    """Remove the folder and /dev/shm files of every cluster of this user whose owners are
    all dead; returns the folders removed."""
    tmpdir = tmpdir or tempfile.gettempdir()
    removed = []
    try:
        names = sorted(n for n in os.listdir(tmpdir) if n.startswith("testbed-"))
    except OSError:
        return removed
    uid = os.getuid()
    for name in names:
        folder = os.path.join(tmpdir, name)
        try:
            if os.lstat(folder).st_uid != uid or not os.path.isdir(folder) or os.path.islink(folder):
                continue
            with open(os.path.join(folder, RECORD)) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue                        # no record: starting now, or not a cluster of ours
        prefix = record.get("shm_prefix") if isinstance(record, dict) else None
        if not isinstance(prefix, str) or not _PREFIX.match(prefix) or not _owners_dead(record):
            continue
        cleanup_prefix(prefix)              # the shared memory first: the folder holds the record
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed
