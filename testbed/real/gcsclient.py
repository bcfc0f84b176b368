"""Talking to the GCS shards from a process that runs a :class:`~testbed.real.loop.Loop`
(node managers, the global scheduler): requests with callbacks, subscriptions, and
write-behind batching of writes that nothing waits for (task-table records, locations).
"""
from __future__ import annotations

import itertools
import time
from collections import defaultdict
from typing import Any, Callable

from . import transport
from .context import Context
from .loop import Loop

#: how long a process keeps retrying to reach a peer that is still starting up
CONNECT_DEADLINE_S = 20.0


def connect_retry(address: str, secret: bytes, deadline_s: float = CONNECT_DEADLINE_S) -> transport.Channel:
    """Connect to a listener that may not be up yet (the cluster's processes start together)."""
    end = time.monotonic() + deadline_s
    delay = 0.002
    while True:
        try:
            return transport.connect(address, secret)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > end:
                raise
            time.sleep(delay)          # back-off while the peer starts, bounded by the deadline
            delay = min(delay * 2, 0.05)


class GcsClient:
    def __init__(self, ctx: Context, loop: Loop):
        self.ctx = ctx
        self.loop = loop
        self.shards = [loop.add(connect_retry(ctx.gcs(k), ctx.secret)) for k in range(ctx.n_shards)]
        self._req = itertools.count(1)
        self._callbacks: dict[int, Callable[[Any], None]] = {}
        self._subs: dict[tuple, list[Callable]] = defaultdict(list)
        self._pending: dict[int, list] = defaultdict(list)
        loop.on("reply", self._on_reply)
        loop.on("pub", self._on_pub)

    def shard(self, key) -> transport.Channel:
        return self.shards[self.ctx.shard_of(key)]

    # --- writes -----------------------------------------------------------------------
    def put(self, table: str, key, value, *, later: bool = False) -> None:
        self._write(key, ("put", table, key, value), later)

    def task_update(self, task_id: bytes, fields: dict, *, later: bool = False) -> None:
        """Write task-table fields (state, node, attempt, spec): see Shard.task_update."""
        self._write(task_id, ("task_update", task_id, fields), later)

    def obj_add(self, oid: bytes, node: int, size: int, *, later: bool = False) -> None:
        self._write(oid, ("obj_add", oid, node, size), later)

    def _write(self, key, msg, later: bool) -> None:
        k = self.ctx.shard_of(key)
        if later:
            if not self._pending[k]:
                self.loop.later(0.002, lambda k=k: self.flush(k))
            self._pending[k].append(msg)
        else:
            self.loop.send(self.shards[k], msg)

    def flush(self, k: int | None = None) -> None:
        for s in ([k] if k is not None else list(self._pending)):
            msgs = self._pending.pop(s, None)
            if msgs:
                self.loop.send(self.shards[s], ("batch", msgs))

    # --- reads ------------------------------------------------------------------------
    def get(self, table: str, key, callback: Callable[[Any], None], wait: bool = False) -> None:
        req = next(self._req)
        self._callbacks[req] = callback
        self.loop.send(self.shard(key), ("get", req, table, key, wait))

    def subscribe(self, table: str, key, callback: Callable[[str, Any, Any], None]) -> None:
        """``callback(table, key, value)`` on every write of ``key`` (all keys: key=None)."""
        first = not self._subs[(table, key)]
        self._subs[(table, key)].append(callback)
        if first:
            targets = self.shards if key is None else [self.shard(key)]
            for ch in targets:
                self.loop.send(ch, ("sub", table, key))

    def _on_reply(self, ch, req, value) -> None:
        cb = self._callbacks.pop(req, None)
        if cb is not None:
            cb(value)

    def _on_pub(self, ch, table, key, value) -> None:
        for cb in list(self._subs.get((table, key), ())) + list(self._subs.get((table, None), ())):
            cb(table, key, value)
