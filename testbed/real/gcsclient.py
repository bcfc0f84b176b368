"""Talking to the GCS shards from a process that runs a :class:`~testbed.real.loop.Loop`
(node managers, the global scheduler): requests with callbacks, subscriptions, and
write-behind batching of writes that nothing waits for (task-table records, locations).

    client ──("watch",)──> chain master ──("chains", version, {shard: [replica, ...]})──> client
    client ──writes──> each shard's head;   client ──reads, subscriptions──> each shard's tail
    tail ──("ack", shard, seq)|("applied", shard, seq)──> client   (chains longer than 1)

With a chain of one replica per shard (the default) writes are plain messages. With longer
chains every write carries this client's sequence number and is kept until the tail
acknowledges it; when the master publishes a new chain (a replica died, or a fresh one
joined) the client sends what is unacknowledged to the head again (replicas drop what they
already have), moves its subscriptions to the tail and asks its unanswered reads again.
Nothing of this reaches the caller: a reconfiguration is a delay, not an error.
"""
from __future__ import annotations

import itertools
import os
import time
from collections import defaultdict, deque
from typing import Any, Callable

from . import params, transport
from .context import Context
from .loop import Loop

def connect_retry(address: str, secret: bytes, deadline_s: float | None = None) -> transport.Channel:
    """Connect to a listener that may not be up yet (the cluster's processes start together);
    retry for ``deadline_s`` (None: the process's ``connect_deadline_s`` parameter)."""
    end = time.monotonic() + (params.get("connect_deadline_s") if deadline_s is None else deadline_s)
    delay = 0.002
    while True:
        try:
            return transport.connect(address, secret)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > end:
                raise
            time.sleep(delay)          # back-off while the peer starts, bounded by the deadline
            delay = min(delay * 2, 0.05)


def first_chains(ctx: Context) -> tuple[transport.Channel, dict[int, list[int]]]:
    """Connect to the chain master and wait (bounded) for the first published chains."""
    ch = connect_retry(ctx.gcs_master(), ctx.secret)
    ch.send(("watch",))
    if not ch.poll(params.of(ctx, "connect_deadline_s")):
        raise TimeoutError("the GCS chain master published no chains in time")
    kind, _version, view = ch.recv()
    assert kind == "chains", kind
    return ch, view


class GcsClient:
    def __init__(self, ctx: Context, loop: Loop):
        self.ctx = ctx
        self.loop = loop
        self.cid = f"{os.getpid()}-{id(self):x}"
        self.chained = int(ctx.config["gcs_chain_length"]) > 1
        master, view = first_chains(ctx)
        self.master = loop.add(master)
        self._conns: dict[tuple[int, int], transport.Channel] = {}
        self.view = view
        self.heads = [self._conn(k, view[k][0]) for k in range(ctx.n_shards)]
        self.tails = [self._conn(k, view[k][-1]) for k in range(ctx.n_shards)]
        self._req = itertools.count(1)
        self._callbacks: dict[int, Callable[[Any], None]] = {}
        #: unanswered reads: request id -> (shard, message), asked again after a reconfiguration
        self._asked: dict[int, tuple[int, tuple]] = {}
        self._subs: dict[tuple, list[Callable]] = defaultdict(list)
        self._pending: dict[int, list] = defaultdict(list)
        #: chains > 1: this client's write sequence, and per shard the writes not yet acked
        self._cseq: dict[int, int] = defaultdict(int)
        self.unacked: dict[int, deque] = defaultdict(deque)
        loop.on("reply", self._on_reply)
        loop.on("pub", self._on_pub)
        loop.on("chains", self._on_chains)
        loop.on("ack", self._on_ack)
        loop.on("applied", self._on_ack)

    def _conn(self, k: int, r: int) -> transport.Channel:
        ch = self._conns.get((k, r))
        if ch is None or ch.closed:
            ch = self._conns[(k, r)] = self.loop.add(connect_retry(self.ctx.gcs(k, r), self.ctx.secret))
            if self.chained:
                self.loop.send(ch, ("hello_client", self.cid))
        return ch

    def shard(self, key) -> transport.Channel:
        return self.tails[self.ctx.shard_of(key)]

    # --- writes -----------------------------------------------------------------------
    def put(self, table: str, key, value, *, later: bool = False) -> None:
        self._write(key, ("put", table, key, value), later)

    def task_update(self, task_id: bytes, fields: dict, *, later: bool = False) -> None:
        """Write task-table fields (state, node, attempt, spec): see Shard.task_update."""
        self._write(task_id, ("task_update", task_id, fields), later)

    def obj_add(self, oid: bytes, node: int, size: int, *, later: bool = False) -> None:
        self._write(oid, ("obj_add", oid, node, size), later)

    def obj_remove(self, oid: bytes, node: int) -> None:
        self._write(oid, ("obj_remove", oid, node), False)

    def extend(self, table: str, key, items: list, *, later: bool = False) -> None:
        self._write(key, ("extend", table, key, items), later)

    def _write(self, key, msg, later: bool) -> None:
        k = self.ctx.shard_of(key)
        if self.chained:
            # a replica applies a client's writes only in sequence order (it drops a number
            # it has seen), so one shard's writes leave in the order they are numbered
            self._cseq[k] += 1
            self.unacked[k].append((self._cseq[k], msg))
            msg = (self._cseq[k], msg)
        if later:
            if not self._pending[k]:
                self.loop.later(params.of(self.ctx, "gcs_write_behind_s"), lambda k=k: self.flush(k))
            self._pending[k].append(msg)
            return
        if self._pending.get(k):
            self.flush(k)
        if self.chained:
            self.loop.send(self.heads[k], ("w", self.cid, *msg))
        else:
            self.loop.send(self.heads[k], msg)

    def flush(self, k: int | None = None) -> None:
        for s in ([k] if k is not None else list(self._pending)):
            msgs = self._pending.pop(s, None)
            if msgs:
                self.loop.send(self.heads[s], ("wb", self.cid, msgs) if self.chained else ("batch", msgs))

    def _on_ack(self, ch, k, cseq) -> None:
        if ch is not self.tails[k]:
            return                      # only the tail's word means "on every replica"
        q = self.unacked[k]
        while q and q[0][0] <= cseq:
            q.popleft()

    # --- reads ------------------------------------------------------------------------
    def get(self, table: str, key, callback: Callable[[Any], None], wait: bool = False) -> None:
        self._ask(self.ctx.shard_of(key), callback, "get", table, key, wait)

    def scan_all(self, table: str, callback: Callable[[dict], None]) -> None:
        """``callback(merged)`` once every shard has answered a scan of ``table``."""
        got: dict = {}
        left = {"n": self.ctx.n_shards}

        def one(part):
            for key, value in (part or {}).items():
                if isinstance(value, list) and key in got:
                    got[key] = got[key] + value
                else:
                    got[key] = value
            left["n"] -= 1
            if left["n"] == 0:
                callback(got)
        for k in range(self.ctx.n_shards):
            self._ask(k, one, "scan", table)

    def _ask(self, k: int, callback, kind: str, *args) -> None:
        """A read of shard k (its tail): ``callback(value)`` when the answer comes."""
        req = next(self._req)
        self._callbacks[req] = callback
        msg = (kind, req, *args)
        if self.chained:                # asked again if the tail changes before it answers
            self._asked[req] = (k, msg)
        self.loop.send(self.tails[k], msg)

    def subscribe(self, table: str, key, callback: Callable[[str, Any, Any], None]) -> None:
        """``callback(table, key, value)`` on every write of ``key`` (all keys: key=None)."""
        first = not self._subs[(table, key)]
        self._subs[(table, key)].append(callback)
        if first:
            targets = self.tails if key is None else [self.shard(key)]
            for ch in targets:
                self.loop.send(ch, ("sub", table, key))

    def unsubscribe(self, table: str, key) -> None:
        """Drop every callback on ``key`` (the shard forgets this subscriber)."""
        if self._subs.pop((table, key), None) is not None:
            self.loop.send(self.shard(key), ("unsub", table, key))

    def _on_reply(self, ch, req, value) -> None:
        if self.chained:
            self._asked.pop(req, None)
        cb = self._callbacks.pop(req, None)
        if cb is not None:
            cb(value)

    def _on_pub(self, ch, table, key, value) -> None:
        for cb in list(self._subs.get((table, key), ())) + list(self._subs.get((table, None), ())):
            cb(table, key, value)

    # --- reconfiguration --------------------------------------------------------------
    def _on_chains(self, ch, version, view) -> None:
        for k, chain in view.items():
            k = int(k)
            old = self.view.get(k, [])
            if chain == old or not chain:
                continue
            self.view[k] = chain
            self.heads[k] = self._conn(k, chain[0])
            if chain[-1] != old[-1] or self.tails[k].closed:
                self.tails[k] = self._conn(k, chain[-1])
                for (table, key) in list(self._subs):
                    if key is None or self.ctx.shard_of(key) == k:
                        self.loop.send(self.tails[k], ("sub", table, key))
                for req, (s, msg) in list(self._asked.items()):
                    if s == k:
                        self.loop.send(self.tails[k], msg)
            if self.chained:
                # every write not acknowledged yet (queued ones included), in sequence order:
                # a replica drops a sequence number below one it has applied
                self._pending.pop(k, None)
                if self.unacked[k]:
                    self.loop.send(self.heads[k], ("wb", self.cid, list(self.unacked[k])))
            else:
                self.flush(k)
            for r in [r for (s, r) in self._conns if s == k and r not in chain]:
                del self._conns[(k, r)]          # dead: the loop closes its channel on EOF


class BlockingGcs:
    """A GCS client for a process without a Loop (the driver, a benchmark): one request at a
    time, each write returned from only once the tail has acknowledged it. It follows the
    chain master's reconfigurations like GcsClient: a write or read in flight when a replica
    dies is sent again to the new head or tail, so the caller sees a delay, never an error."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.master, self.view = first_chains(ctx)
        self.cid = f"blocking-{os.getpid()}-{id(self):x}"
        self._cseq = 0
        self._req = itertools.count(1)
        self._conns: dict[tuple[int, int], transport.Channel] = {}
        self.acked: dict[int, int] = defaultdict(int)
        self._replies: dict[int, Any] = {}
        self._inflight: tuple | None = None      # (shard, message) to send again after a change
        for k, chain in self.view.items():
            self._conn(int(k), chain[-1])

    def _conn(self, k: int, r: int) -> transport.Channel | None:
        """A channel to replica r of shard k; None if it is dead (the master will say so)."""
        ch = self._conns.get((k, r))
        if ch is None or ch.closed:
            try:
                ch = transport.connect(self.ctx.gcs(k, r), self.ctx.secret)
            except (FileNotFoundError, ConnectionError, OSError):
                return None
            self._conns[(k, r)] = ch
            ch.send(("hello_client", self.cid))
        return ch

    def head(self, k: int) -> transport.Channel | None:
        return self._conn(k, self.view[k][0])

    def tail(self, k: int) -> transport.Channel | None:
        return self._conn(k, self.view[k][-1])

    def _send(self, where: str, k: int, msg) -> None:
        self._inflight = (where, k, msg)
        ch = self.head(k) if where == "head" else self.tail(k)
        if ch is not None:
            try:
                ch.send(msg)
            except OSError:
                pass          # it died: sent again when the master publishes the new chain

    def write(self, table: str, key, value, timeout: float = 30.0) -> None:
        k = self.ctx.shard_of(key)
        self._cseq += 1
        cseq = self._cseq
        self._send("head", k, ("w", self.cid, cseq, ("put", table, key, value)))
        self._pump(lambda: self.acked[k] >= cseq, timeout)

    def read(self, table: str, key, timeout: float = 30.0):
        k = self.ctx.shard_of(key)
        req = next(self._req)
        self._send("tail", k, ("get", req, table, key, False))
        self._pump(lambda: req in self._replies, timeout)
        return self._replies.pop(req)

    def burst(self, op: str, table: str, key, n: int, value=None, timeout: float = 30.0) -> None:
        """``n`` reads (``op="read"``) or writes of one key sent back to back, then wait for
        every answer: the shard's service time per request, measured by ``testbed calibrate``."""
        k = self.ctx.shard_of(key)
        if op == "write":
            for _ in range(n):
                self._cseq += 1
                self._send("head", k, ("w", self.cid, self._cseq, ("put", table, key, value)))
            last = self._cseq
            self._pump(lambda: self.acked[k] >= last, timeout)
            return
        reqs = [next(self._req) for _ in range(n)]
        for req in reqs:
            self._send("tail", k, ("get", req, table, key, False))
        self._pump(lambda: all(r in self._replies for r in reqs), timeout)
        for req in reqs:
            self._replies.pop(req)

    def stats(self, k: int, r: int, timeout: float = 30.0) -> dict:
        """One replica's table sizes, flushed entries and pid."""
        req = next(self._req)
        self._conn(k, r).send(("stats", req))
        self._pump(lambda: req in self._replies, timeout)
        return self._replies.pop(req)

    def _pump(self, done: Callable[[], bool], timeout: float) -> None:
        end = time.monotonic() + timeout
        while not done():
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from the GCS")
            chans = [self.master] + [c for c in self._conns.values() if not c.closed]
            for ch in transport.wait(chans, left):
                try:
                    msg = ch.recv()
                except (EOFError, OSError):
                    ch.close()
                    continue
                self._handle(ch, msg)
        self._inflight = None

    def _handle(self, ch, msg) -> None:
        kind = msg[0]
        if kind in ("ack", "applied"):
            k, cseq = msg[1], msg[2]
            if ch is self._conns.get((k, self.view[k][-1])):
                self.acked[k] = max(self.acked[k], cseq)
        elif kind == "reply":
            self._replies[msg[1]] = msg[2]
        elif kind == "chains":
            self.view = {int(k): c for k, c in msg[2].items()}
            for k in self.view:
                self.tail(k)            # hello to a new tail: its "applied" settles our acks
            if self._inflight is not None:
                self._send(*self._inflight)

    def close(self) -> None:
        for ch in [self.master, *self._conns.values()]:
            try:
                ch.close()
            except OSError:
                pass
