"""A GCS shard: tables of the cluster's control state, with publish/subscribe.

    node managers, global scheduler, drivers ──("put"|"get"|"sub"|"obj_add"|"batch", ...)──> shard
    shard ──("reply", request id, value)──> the asker
    shard ──("pub", table, key, value)──> subscribers of (table, key) or of the whole table

Tables (keys sharded over the shards by id): ``fn`` function id -> pickled function
(shipped once, by content hash); ``obj`` object id -> {"size", "locations"}; ``task``
task id -> spec summary and status (the lineage); ``node`` node id -> resources, load
(heartbeats; the global scheduler subscribes to the whole table); ``actor``.

A ``get`` with ``wait`` on a key that does not exist yet is answered when it is written —
a get of an object not created yet waits for its object-table entry (Fig. 7b), no polling.
"""
from __future__ import annotations

from collections import defaultdict

from .context import Context
from .loop import Loop


class Shard:
    def __init__(self, ctx: Context, index: int):
        self.ctx = ctx
        self.index = index
        self.tables: dict[str, dict] = defaultdict(dict)
        #: (table, key) -> channels subscribed to that key; (table, None) -> to the whole table
        self.subs: dict[tuple, list] = defaultdict(list)
        #: (table, key) -> [(channel, request id)] waiting for the key to exist
        self.waiting: dict[tuple, list] = defaultdict(list)
        self.loop = Loop(f"gcs-{index}")
        for kind in ("put", "task_update", "extend", "get", "sub", "obj_add", "obj_remove", "scan", "batch"):
            self.loop.on(kind, getattr(self, kind))
        self.loop.on_close = self.closed

    def _publish(self, table: str, key, value) -> None:
        for ch in list(self.subs.get((table, key), ())) + list(self.subs.get((table, None), ())):
            self._send(ch, ("pub", table, key, value))
        for ch, req in self.waiting.pop((table, key), ()):
            self._send(ch, ("reply", req, value))

    def _send(self, ch, msg) -> None:
        self.loop.send(ch, msg)

    # --- operations ------------------------------------------------------------------
    def put(self, ch, table, key, value) -> None:
        self.tables[table][key] = value
        self._publish(table, key, value)

    #: how far along an attempt is; a write never moves an attempt backwards
    STATE_RANK = {"submitted": 0, "reconstructing": 0, "assigned": 1, "queued": 2, "running": 3,
                  "finished": 4, "failed": 4}

    def task_update(self, ch, key, fields) -> None:
        """A task-table write from any process. Writes about one attempt race each other (the
        submitter's, the global scheduler's, the node's), so an entry only moves forward:
        a later attempt replaces an earlier one, and within an attempt the state only advances."""
        old = self.tables["task"].get(key) or {}
        new = dict(old)
        a_old, a_new = old.get("attempt", 0), fields.get("attempt", old.get("attempt", 1))
        rank = self.STATE_RANK
        if "state" in fields and old and a_new == a_old and \
                rank.get(fields["state"], 0) < rank.get(old.get("state"), 0):
            fields = {k: v for k, v in fields.items() if k not in ("state", "node")}
        elif a_new < a_old:
            fields = {k: v for k, v in fields.items() if k not in ("state", "node", "attempt")}
        new.update(fields)
        self.tables["task"][key] = new
        self._publish("task", key, new)

    def extend(self, ch, table, key, items) -> None:
        """Append to a list (nodes' task rows: they outlive the node that recorded them)."""
        self.tables[table].setdefault(key, []).extend(items)

    def get(self, ch, req, table, key, wait=False) -> None:
        value = self.tables[table].get(key)
        if value is None and wait:
            self.waiting[(table, key)].append((ch, req))
            return
        self._send(ch, ("reply", req, value))

    def scan(self, ch, req, table) -> None:
        self._send(ch, ("reply", req, dict(self.tables[table])))

    def sub(self, ch, table, key=None) -> None:
        if ch not in self.subs[(table, key)]:
            self.subs[(table, key)].append(ch)
        if key is not None and key in self.tables[table]:
            self._send(ch, ("pub", table, key, self.tables[table][key]))
        elif key is None:              # a whole-table subscriber starts from what is there now
            for k, v in list(self.tables[table].items()):
                self._send(ch, ("pub", table, k, v))

    def obj_add(self, ch, oid, node, size) -> None:
        entry = self.tables["obj"].get(oid)
        if entry is None:
            entry = {"size": size, "locations": []}
        else:
            entry = {"size": size, "locations": list(entry["locations"])}
        if node not in entry["locations"]:
            entry["locations"].append(node)
        self.tables["obj"][oid] = entry
        self._publish("obj", oid, entry)

    def obj_remove(self, ch, oid, node) -> None:
        entry = self.tables["obj"].get(oid)
        if entry and node in entry["locations"]:
            entry = {"size": entry["size"], "locations": [n for n in entry["locations"] if n != node]}
            self.tables["obj"][oid] = entry
            self._publish("obj", oid, entry)

    def batch(self, ch, msgs) -> None:
        """Write-behind: a client's queued writes in one message."""
        for m in msgs:
            fn = getattr(self, m[0])
            fn(ch, *m[1:])

    def closed(self, ch) -> None:
        for key in [k for k, v in self.subs.items() if ch in v]:
            self.subs[key].remove(ch)
            if not self.subs[key]:
                del self.subs[key]
        for key in list(self.waiting):
            self.waiting[key] = [(c, r) for c, r in self.waiting[key] if c is not ch]
            if not self.waiting[key]:
                del self.waiting[key]


def main(ctx: Context, index: int) -> None:
    import signal
    shard = Shard(ctx, index)
    shard.loop.listen(ctx.gcs(index), ctx.secret)
    signal.signal(signal.SIGTERM, lambda *_: shard.loop.stop())
    try:
        shard.loop.run()
    finally:
        shard.loop.close()
