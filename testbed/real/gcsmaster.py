"""The chain master: which replicas make up each GCS shard's chain, and what to do when one dies.

    replica ──("replica_hello", shard, replica, pid, joining)──> master
    master ──("role", successor address, is head, is tail)──> replica ──("ready", ...)──> master
    master ──("add_successor", address)──> tail          (a fresh replica joins behind it)
    fresh replica ──("joined", shard, replica)──> master  (it has the tail's state)
    clients (GcsClient) ──("watch",)──> master ──("chains", version, {shard: [replica, ...]})──> clients
    driver ──("kill_replica"|"chains"|"reconfigurations", req, ...)──> master ──("reply", req, ...)
    master ──pipe ("spawn_replica shard replica")──> supervisor

A replica's death closes its connection here at once (the kernel closes a dead process's
sockets), so detection costs no timeout. The master then drops it from its chain, tells the
survivors their new places, waits for each to confirm, and only then tells the clients, which
send their unacknowledged writes again to the (new) head and move their reads and
subscriptions to the (new) tail. With ``gcs_replace_replicas`` it asks the supervisor for a
fresh replica, which copies the tail's state and joins as the new tail, bringing the chain
back to its configured length. The master itself is not replicated (credis keeps its master
in etcd); it is a single point of failure here, like the global scheduler.
"""
from __future__ import annotations

import os
import signal
import time

from .context import Context
from .loop import Loop


class ChainMaster:
    def __init__(self, ctx: Context, request_fd: int | None):
        self.ctx = ctx
        self.request_fd = request_fd
        self.length = int(ctx.config["gcs_chain_length"])
        self.replace = bool(ctx.config["gcs_replace_replicas"])
        n = ctx.n_shards
        #: shard -> replica ids in chain order (head first); the published view
        self.chains: dict[int, list[int]] = {k: list(range(self.length)) for k in range(n)}
        self.next_id = {k: self.length for k in range(n)}
        #: (shard, replica) -> {"ch", "pid"}
        self.replicas: dict[tuple[int, int], dict] = {}
        #: shard -> replicas whose "ready" we wait for before publishing
        self.pending: dict[int, set[int]] = {}
        #: shard -> a fresh replica joining it (at most one at a time)
        self.joining: dict[int, int] = {}
        self.started = False
        self.watchers: list = []
        self.version = 0
        #: (when a replica died, seconds until the survivors were reconfigured and published)
        self.reconfigs: list[tuple[float, float]] = []
        self._died_at: dict[int, float] = {}
        self.loop = Loop("gcsmaster")
        for kind in ("replica_hello", "ready", "joined", "watch", "kill_replica", "reconfigurations"):
            self.loop.on(kind, getattr(self, kind))
        self.loop.on("chains", self.get_chains)
        self.loop.on_close = self.closed

    def addr(self, k: int, r: int) -> str:
        return self.ctx.gcs(k, r)

    # --- replicas ---------------------------------------------------------------------
    def replica_hello(self, ch, k, r, pid, joining) -> None:
        self.replicas[(k, r)] = {"ch": ch, "pid": pid}
        ch._tb_replica = (k, r)
        if joining:
            chain = self.chains[k]
            if not chain:
                return
            self.joining[k] = r
            self.loop.send(self.replicas[(k, chain[-1])]["ch"], ("add_successor", self.addr(k, r)))
            return
        if not self.started and all((s, x) in self.replicas for s, c in self.chains.items() for x in c):
            self.started = True
            for s in self.chains:
                self.assign_roles(s)

    def assign_roles(self, k: int) -> None:
        chain = self.chains[k]
        self.pending[k] = set(chain)
        for i, r in enumerate(chain):
            succ = self.addr(k, chain[i + 1]) if i + 1 < len(chain) else None
            self.loop.send(self.replicas[(k, r)]["ch"], ("role", succ, i == 0, i == len(chain) - 1))

    def ready(self, ch, k, r) -> None:
        waiting = self.pending.get(k)
        if waiting is None:
            return
        waiting.discard(r)
        if not waiting:
            del self.pending[k]
            if k in self._died_at:
                t = self._died_at.pop(k)
                self.reconfigs.append((t, time.time() - t))
            self.publish()

    def joined(self, ch, k, r) -> None:
        if self.joining.get(k) != r:
            return
        del self.joining[k]
        self.chains[k].append(r)
        self.assign_roles(k)

    def closed(self, ch) -> None:
        if ch in self.watchers:
            self.watchers.remove(ch)
        kr = getattr(ch, "_tb_replica", None)
        if kr is None:
            return
        k, r = kr
        self.replicas.pop(kr, None)
        if self.joining.get(k) == r:            # a fresh replica died before it joined
            del self.joining[k]
            self.spawn(k)
            return
        if r not in self.chains[k]:
            return
        self._died_at[k] = time.time()
        was_tail = self.chains[k][-1] == r
        self.chains[k].remove(r)
        j = self.joining.get(k)
        if was_tail and j is not None and (k, j) in self.replicas:
            try:                                 # it was copying from the dead tail: start over
                os.kill(self.replicas[(k, j)]["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not self.chains[k]:
            return      # the shard's state is gone (tb.kill_gcs_replica refuses to do this)
        self.assign_roles(k)
        self.spawn(k)

    def spawn(self, k: int) -> None:
        if not self.replace or self.request_fd is None or k in self.joining:
            return
        r = self.next_id[k]
        self.next_id[k] += 1
        self.joining[k] = r                      # reserved until its hello
        try:
            os.write(self.request_fd, f"spawn_replica {k} {r}\n".encode())
        except OSError:
            del self.joining[k]

    # --- clients ----------------------------------------------------------------------
    def publish(self) -> None:
        if self.pending:
            return                               # some shard is mid-reconfiguration
        self.version += 1
        for ch in self.watchers:
            self.loop.send(ch, ("chains", self.version, self._view()))

    def _view(self) -> dict[int, list[int]]:
        return {k: list(c) for k, c in self.chains.items()}

    def watch(self, ch) -> None:
        self.watchers.append(ch)
        if self.started and not self.pending:
            self.loop.send(ch, ("chains", self.version, self._view()))

    def get_chains(self, ch, req) -> None:
        self.loop.send(ch, ("reply", req, {"chains": self._view(), "joining": dict(self.joining),
                                           "version": self.version}))

    def reconfigurations(self, ch, req) -> None:
        self.loop.send(ch, ("reply", req, list(self.reconfigs)))

    def kill_replica(self, ch, req, k, pos) -> None:
        """Kill the replica at position ``pos`` (0 = head, -1 = tail) of shard ``k``'s chain."""
        chain = self.chains.get(k)
        if chain is None:
            self.loop.send(ch, ("reply", req, ("error", f"no GCS shard {k} (shards: 0..{len(self.chains) - 1})")))
            return
        if len(chain) < 2:
            self.loop.send(ch, ("reply", req, ("error", f"shard {k}'s chain has {len(chain)} replica(s): killing "
                                                       "it would lose the shard's state (set gcs_chain_length >= 2)")))
            return
        if not -len(chain) <= pos < len(chain):
            self.loop.send(ch, ("reply", req, ("error", f"shard {k}'s chain has {len(chain)} replicas; "
                                                       f"no position {pos}")))
            return
        r = chain[pos]
        try:
            os.kill(self.replicas[(k, r)]["pid"], signal.SIGKILL)
        except (KeyError, ProcessLookupError):
            pass
        self.loop.send(ch, ("reply", req, ("ok", r)))


def main(ctx: Context, request_fd: int | None) -> None:
    master = ChainMaster(ctx, request_fd)
    master.loop.listen(ctx.gcs_master(), ctx.secret)
    signal.signal(signal.SIGTERM, lambda *_: master.loop.stop())
    try:
        master.loop.run()
    finally:
        master.loop.close()
