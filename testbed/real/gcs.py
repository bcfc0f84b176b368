"""A GCS shard replica: tables of the cluster's control state, with publish/subscribe,
chain replication and flushing of finished lineage to disk.

    clients ──writes ("put"|"task_update"|"extend"|"obj_add"|"obj_remove"|"batch";
              wrapped as ("w"|"wb", client id, seq, ...) when the chain has > 1 replica)──> head
    head ──("cw", chain seq, client id, client seq, write)──> ... ──> tail   (each applies it)
    tail ──("ack", client seq)──> the client;  tail ──("cack", chain seq)──> ... ──> head
    clients ──reads ("get"|"scan"|"sub")──> tail ──("reply"|"pub", ...)──> the asker
    chain master (gcsmaster.py) ──("role", ...)|("add_successor", ...)──> replicas

Tables (keys sharded over the shards by id): ``fn`` function id -> pickled function
(shipped once, by content hash); ``obj`` object id -> {"size", "locations"}; ``task``
task id -> spec summary and status (the lineage); ``node`` node id -> resources, load
(heartbeats; the global scheduler subscribes to the whole table); ``actor``; ``records``.

A ``get`` with ``wait`` on a key that does not exist yet is answered when it is written —
a get of an object not created yet waits for its object-table entry (Fig. 7b), no polling.

**Chain replication** (the paper's §4.2.1, as in credis): every replica applies every write
in the head's order. A write is acknowledged to its client by the tail only, so an
acknowledged write is on every replica; clients keep unacknowledged writes and send them
again to the new head after a reconfiguration. Replicas drop a write they already applied
(the chain sequence number for writes passed down the chain, the client's sequence number
for writes a client sent again), so a write sent twice is applied once. Each replica keeps
the writes it passed down until the tail's ``cack`` comes back up, and sends them again to
a new successor. A fresh replica joins as the new tail: the old tail sends it a snapshot of
its state (and of its flushed lineage), then every later write.

**Flushing** (§5.1, Fig. 10b): with ``gcs_flush_interval_s`` > 0, task-table entries of
finished tasks, object-table entries of objects no node holds any more (freed or lost) and
the pushed task rows are moved to an SQLite file every interval and dropped from memory; a
read of a flushed key, and a later write to it, read it back.
"""
from __future__ import annotations

import os
import pickle
import sqlite3
from collections import defaultdict, deque

from ..core.task import TaskState as S
from ..core.task import NEW_ATTEMPT_STATES, RECORD_MOVES
from . import params
from .context import Context
from .loop import Loop

#: the ops that change state (everything else is a read)
WRITES = ("put", "task_update", "extend", "obj_add", "obj_remove")


class Shard:
    def __init__(self, ctx: Context, index: int, replica: int = 0):
        self.ctx = ctx
        self.index = index
        self.replica = replica
        self.tables: dict[str, dict] = defaultdict(dict)
        #: (table, key) -> channels subscribed to that key; (table, None) -> to the whole table
        self.subs: dict[tuple, list] = defaultdict(list)
        #: (table, key) -> [(channel, request id)] waiting for the key to exist
        self.waiting: dict[tuple, list] = defaultdict(list)
        self.loop = Loop(f"gcs-{index}-{replica}")
        for kind in WRITES + ("get", "sub", "unsub", "scan", "batch", "stats"):
            self.loop.on(kind, getattr(self, kind))
        for kind in ("w", "wb", "cw", "cack", "hello_client", "role", "add_successor", "snapshot",
                     "pred_hello"):
            self.loop.on(kind, getattr(self, "on_" + kind))
        self.loop.on_close = self.closed
        # --- chain state ---
        self.is_head = self.is_tail = False      # until the chain master says (see on_role)
        self.succ = None                     # channel to the next replica
        self.pred = None                     # channel from the previous one
        self.master = None
        self.seq = 0                         # last chain sequence number applied
        #: writes passed down and not yet acknowledged by the tail: (chain seq, cid, cseq, op)
        self.sent: deque = deque()
        #: client id -> highest client sequence number applied; and its channel (to ack)
        self.applied: dict[str, int] = {}
        self.clients: dict[str, object] = {}
        self._ack_due: dict[str, int] = {}
        self._cack_due = 0
        self.joining = False                 # a fresh replica waiting for its snapshot
        #: task-table moves against the shared transitions (_check_move; a runtime bug if > 0)
        self.illegal_moves = 0
        # --- flushing ---
        self.db: sqlite3.Connection | None = None
        self.flushed = 0
        interval = float(ctx.config["gcs_flush_interval_s"])
        if interval > 0:
            self._open_db()
            self.loop.every(interval, self.flush)

    # --- publishing ------------------------------------------------------------------
    def _publish(self, table: str, key, value) -> None:
        for ch in list(self.subs.get((table, key), ())) + list(self.subs.get((table, None), ())):
            self._send(ch, ("pub", table, key, value))
        for ch, req in self.waiting.pop((table, key), ()):
            self._send(ch, ("reply", req, value))

    def _send(self, ch, msg) -> None:
        if ch is not None:
            self.loop.send(ch, msg)

    def _lookup(self, table: str, key):
        """A key's value, from memory or (flushed) from disk."""
        value = self.tables[table].get(key)
        if value is None and self.db is not None and table in ("task", "obj"):
            row = self.db.execute(f"SELECT v FROM {table} WHERE k = ?", (key,)).fetchone()
            if row is not None:
                value = pickle.loads(row[0])
        return value

    # --- writes ----------------------------------------------------------------------
    def put(self, ch, table, key, value) -> None:
        self.tables[table][key] = value
        self._publish(table, key, value)

    #: how far along an attempt is; a write never moves an attempt backwards
    STATE_RANK = {S.SUBMITTED.value: 0, S.RECONSTRUCTING.value: 0, S.ASSIGNED.value: 1, S.QUEUED.value: 2,
                  S.RUNNING.value: 3, S.FINISHED.value: 4, S.FAILED.value: 4}

    def task_update(self, ch, key, fields) -> None:
        """A task-table write from any process. Writes about one attempt race each other (the
        submitter's, the global scheduler's, the node's), so an entry only moves forward, by
        (attempt, hop, state rank): a later attempt replaces an earlier one; within an attempt
        a later placement (``hop``: a node sent the task back to the global scheduler,
        SpilloverPolicy.spillback) replaces an earlier one, so its "assigned" is kept over the
        node's "queued" — else a task sent back and then lost with the node it went to would
        read as queued on the node that let it go, and nobody would rebuild it; within a
        placement the state only advances. A write that is behind keeps only its other fields."""
        old = self._lookup("task", key) or {}
        new = dict(old)
        if old:
            a_old, a_new = old.get("attempt", 0), fields.get("attempt", old.get("attempt", 1))
            h_old, h_new = old.get("hop", 0), fields.get("hop", 0)
            rank = self.STATE_RANK
            if a_new < a_old:
                fields = {k: v for k, v in fields.items() if k not in ("state", "node", "attempt", "hop")}
            elif a_new == a_old and h_new < h_old:
                fields = {k: v for k, v in fields.items() if k not in ("state", "node", "hop")}
            elif a_new == a_old and h_new == h_old and "state" in fields and \
                    rank.get(fields["state"], 0) < rank.get(old.get("state"), 0):
                fields = {k: v for k, v in fields.items() if k not in ("state", "node")}
            elif a_new > a_old and "hop" not in fields:
                new.pop("hop", None)          # a new attempt starts at its first placement
            if "state" in fields and "state" in old:
                self._check_move(key, old["state"], fields["state"], a_new > a_old, fields)
        new.update(fields)
        self.tables["task"][key] = new
        self._publish("task", key, new)

    #: illegal moves reported on stderr (each is counted in ``stats``)
    REPORT_ILLEGAL = 5

    def _check_move(self, key, old: str, new: str, new_attempt: bool, fields: dict) -> None:
        """Every state the runtime records is a shared TaskState, and every move it makes
        follows the shared transitions (core.task.legal_record: the table sees only some of an
        attempt's states, so within an attempt ``new`` must be reachable from ``old``; a new
        attempt starts over; a new placement, hop, is queued -> assigned). An illegal move is
        counted (``stats``) and reported,
        not refused: the write races that the ordering rule above settles are legal, so a count
        above zero is a runtime bug, which tests assert against."""
        # legal_record, precomputed as sets of values (a value that is no TaskState is in neither)
        if (new in NEW_ATTEMPT_STATES) if new_attempt else ((old, new) in RECORD_MOVES):
            return
        self.illegal_moves += 1
        if self.illegal_moves <= self.REPORT_ILLEGAL:
            print(f"[gcs-{self.index}-{self.replica}] task {key.hex() if isinstance(key, bytes) else key}: "
                  f"illegal state move {old} -> {new} ({fields})", flush=True)

    def extend(self, ch, table, key, items) -> None:
        """Append to a list (nodes' task rows: they outlive the node that recorded them)."""
        self.tables[table].setdefault(key, []).extend(items)

    def obj_add(self, ch, oid, node, size) -> None:
        entry = self._lookup("obj", oid)
        if entry is None:
            entry = {"size": size, "locations": []}
        else:
            entry = {"size": size, "locations": list(entry["locations"])}
        if node not in entry["locations"]:
            entry["locations"].append(node)
        self.tables["obj"][oid] = entry
        self._publish("obj", oid, entry)

    def obj_remove(self, ch, oid, node) -> None:
        entry = self._lookup("obj", oid)
        if entry and node in entry["locations"]:
            entry = {"size": entry["size"], "locations": [n for n in entry["locations"] if n != node]}
            self.tables["obj"][oid] = entry
            self._publish("obj", oid, entry)

    def batch(self, ch, msgs) -> None:
        """Write-behind: a client's queued writes in one message."""
        for m in msgs:
            getattr(self, m[0])(ch, *m[1:])

    # --- reads -----------------------------------------------------------------------
    def get(self, ch, req, table, key, wait=False) -> None:
        value = self._lookup(table, key)
        if value is None and wait:
            self.waiting[(table, key)].append((ch, req))
            return
        self._send(ch, ("reply", req, value))

    def scan(self, ch, req, table) -> None:
        out = dict(self.tables[table])
        if self.db is not None and table == "records":
            for k, v in self.db.execute("SELECT k, v FROM records ORDER BY rowid"):
                out[k] = pickle.loads(v) + out.get(k, [])
        self._send(ch, ("reply", req, out))

    def sub(self, ch, table, key=None) -> None:
        if ch not in self.subs[(table, key)]:
            self.subs[(table, key)].append(ch)
        if key is not None and key in self.tables[table]:
            self._send(ch, ("pub", table, key, self.tables[table][key]))
        elif key is None:              # a whole-table subscriber starts from what is there now
            for k, v in list(self.tables[table].items()):
                self._send(ch, ("pub", table, k, v))

    def unsub(self, ch, table, key=None) -> None:
        subs = self.subs.get((table, key))
        if subs is not None and ch in subs:
            subs.remove(ch)
            if not subs:
                del self.subs[(table, key)]

    def stats(self, ch, req) -> None:
        self._send(ch, ("reply", req, {"entries": {t: len(v) for t, v in self.tables.items()},
                                       "flushed": self.flushed, "seq": self.seq, "pid": os.getpid(),
                                       "head": self.is_head, "tail": self.is_tail, "waiting": len(self.waiting),
                                       "subs": len(self.subs), "clients": len(self.clients),
                                       "unacked_down": len(self.sent),
                                       "illegal_moves": self.illegal_moves}))

    # --- the chain -------------------------------------------------------------------
    def on_hello_client(self, ch, cid) -> None:
        """A client that sends writes (to the head) and reads acks from us (when we are the
        tail): answer with how far its writes got here, so it can drop those it keeps."""
        self.clients[cid] = ch
        self._send(ch, ("applied", self.index, self.applied.get(cid, 0)))

    def on_w(self, ch, cid, cseq, op) -> None:
        self._from_client(cid, cseq, op)

    def on_wb(self, ch, cid, items) -> None:
        for cseq, op in items:
            self._from_client(cid, cseq, op)

    def _from_client(self, cid, cseq, op) -> None:
        if not self.is_head or self.joining:
            return        # stale config at the client: it sends again to the real head
        self.seq += 1
        self._apply(self.seq, cid, cseq, op)

    def on_cw(self, ch, seq, cid, cseq, op) -> None:
        if seq <= self.seq:            # sent again after a reconfiguration: have it already
            if self.succ is None:
                self._ack(cid, cseq, seq)
            return
        self.seq = seq
        self._apply(seq, cid, cseq, op)

    def _apply(self, seq, cid, cseq, op) -> None:
        if cseq > self.applied.get(cid, 0):
            self.applied[cid] = cseq
            getattr(self, op[0])(None, *op[1:])
        if self.succ is not None:
            self.sent.append((seq, cid, cseq, op))
            self.loop.send(self.succ, ("cw", seq, cid, cseq, op))
        else:
            self._ack(cid, cseq, seq)
        if self.is_tail and self.succ is not None:
            self._ack_client(cid, cseq)     # still the tail while a fresh successor joins

    def _ack(self, cid, cseq, seq) -> None:
        """We are the end of the chain: the write is on every replica."""
        if self.is_tail:
            self._ack_client(cid, cseq)
        if self.pred is not None:
            if not self._cack_due:
                self.loop.later(params.of(self.ctx, "gcs_chain_ack_coalesce_s"), self._send_cack)
            self._cack_due = max(self._cack_due, seq)

    def _ack_client(self, cid, cseq) -> None:
        if not self._ack_due:                        # one ack per client per window
            self.loop.later(params.of(self.ctx, "gcs_ack_coalesce_s"), self._send_acks)
        self._ack_due[cid] = max(cseq, self._ack_due.get(cid, 0))

    def _send_acks(self) -> None:
        due, self._ack_due = self._ack_due, {}
        for cid, cseq in due.items():
            ch = self.clients.get(cid)
            if ch is not None:
                self.loop.send(ch, ("ack", self.index, cseq))

    def _send_cack(self) -> None:
        seq, self._cack_due = self._cack_due, 0
        if seq and self.pred is not None:
            self.loop.send(self.pred, ("cack", seq))

    def on_cack(self, ch, seq) -> None:
        while self.sent and self.sent[0][0] <= seq:
            self.sent.popleft()
        if self.pred is not None:
            self.loop.send(self.pred, ("cack", seq))

    def on_pred_hello(self, ch) -> None:
        self.pred = ch

    def on_role(self, ch, succ_addr, is_head, is_tail) -> None:
        """The chain master's word on our place in the chain after a reconfiguration."""
        was_tail = self.is_tail
        self.is_head, self.is_tail = is_head, is_tail
        if is_head:
            self.pred = None
        if succ_addr is None:
            self.succ = None
            # the writes we passed down are now on every replica there is: acknowledge them
            for seq, cid, cseq, _ in self.sent:
                self._ack(cid, cseq, seq)
            self.sent.clear()
        elif succ_addr != getattr(self.succ, "_tb_addr", None):
            self._connect_succ(succ_addr)
            for seq, cid, cseq, op in self.sent:     # the new successor may miss some of them
                self.loop.send(self.succ, ("cw", seq, cid, cseq, op))
        if is_tail and not was_tail:
            for cid, ch2 in self.clients.items():    # acks for what reached us before we knew
                self.loop.send(ch2, ("applied", self.index, self.applied.get(cid, 0)))
        if not is_tail and was_tail:                 # reads and subscriptions move to the new tail
            self.subs.clear()
            self.waiting.clear()
        self.loop.send(self.master, ("ready", self.index, self.replica))

    def _connect_succ(self, addr) -> None:
        from .gcsclient import connect_retry
        ch = self.loop.add(connect_retry(addr, self.ctx.secret))
        ch._tb_addr = addr
        self.succ = ch
        self.loop.send(ch, ("pred_hello",))

    def on_add_successor(self, ch, addr) -> None:
        """A fresh replica joins after us: send it everything, then every later write."""
        self._connect_succ(addr)
        if self.db is not None:
            self.db.commit()
        self.loop.send(self.succ, ("snapshot", self.seq, dict(self.tables), dict(self.applied),
                                   self._dump_db()))

    def on_snapshot(self, ch, seq, tables, applied, flushed) -> None:
        self.tables = defaultdict(dict, tables)
        self.applied = dict(applied)
        self.seq = seq
        self.pred = ch
        if flushed:
            self._open_db()
            self.db.executemany("INSERT OR REPLACE INTO task VALUES (?, ?)", flushed["task"])
            self.db.executemany("INSERT OR REPLACE INTO obj VALUES (?, ?)", flushed["obj"])
            self.db.executemany("INSERT INTO records VALUES (?, ?)", flushed["records"])
            self.db.commit()
        self.joining = False
        self.loop.send(self.master, ("joined", self.index, self.replica))

    # --- flushing --------------------------------------------------------------------
    def _open_db(self) -> None:
        if self.db is not None:
            return
        path = os.path.join(self.ctx.dir, f"gcs-{self.index}-{self.replica}.db")
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE IF NOT EXISTS task (k BLOB PRIMARY KEY, v BLOB)")
        self.db.execute("CREATE TABLE IF NOT EXISTS obj (k BLOB PRIMARY KEY, v BLOB)")
        self.db.execute("CREATE TABLE IF NOT EXISTS records (k TEXT, v BLOB)")

    def flush(self) -> None:
        """Move finished tasks' lineage, entries of objects no node holds any more (freed or
        lost: kept for reconstruction) and the task rows to disk (bounded memory)."""
        tasks = self.tables.get("task", {})
        done = [(k, pickle.dumps(v, protocol=5)) for k, v in tasks.items()
                if v.get("state") in (S.FINISHED.value, S.FAILED.value)]
        objs = self.tables.get("obj", {})
        gone = [(k, pickle.dumps(v, protocol=5)) for k, v in objs.items()
                if not v["locations"] and ("obj", k) not in self.subs]
        recs = [(k, pickle.dumps(v, protocol=5)) for k, v in self.tables.get("records", {}).items() if v]
        if not done and not recs and not gone:
            return
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO task VALUES (?, ?)", done)
        self.db.executemany("INSERT OR REPLACE INTO obj VALUES (?, ?)", gone)
        self.db.executemany("INSERT INTO records VALUES (?, ?)", recs)
        self.db.execute("COMMIT")
        for k, _ in done:
            del tasks[k]
        for k, _ in gone:
            del objs[k]
        if recs:
            self.tables["records"] = {}
        self.flushed += len(done)

    def _dump_db(self):
        if self.db is None:
            return None
        return {"task": self.db.execute("SELECT k, v FROM task").fetchall(),
                "obj": self.db.execute("SELECT k, v FROM obj").fetchall(),
                "records": self.db.execute("SELECT k, v FROM records ORDER BY rowid").fetchall()}

    def closed(self, ch) -> None:
        for key in [k for k, v in self.subs.items() if ch in v]:
            self.subs[key].remove(ch)
            if not self.subs[key]:
                del self.subs[key]
        for key in list(self.waiting):
            self.waiting[key] = [(c, r) for c, r in self.waiting[key] if c is not ch]
            if not self.waiting[key]:
                del self.waiting[key]
        for cid in [c for c, x in self.clients.items() if x is ch]:
            del self.clients[cid]
        if ch is self.pred:
            self.pred = None
        if ch is self.succ:
            self.succ = None      # the master tells us who comes next


def main(ctx: Context, index: int, replica: int = 0, joining: bool = False) -> None:
    import gc
    import signal
    from .gcsclient import connect_retry
    # The tables are acyclic dicts of plain values: reference counting frees them, and the
    # cyclic collector's full passes over millions of entries stalled the shard for seconds
    # (heartbeats late, a live node declared dead) in a 1M-task run without flushing.
    gc.disable()
    shard = Shard(ctx, index, replica)
    shard.joining = joining
    shard.loop.listen(ctx.gcs(index, replica), ctx.secret)
    shard.master = shard.loop.add(connect_retry(ctx.gcs_master(), ctx.secret))
    shard.loop.send(shard.master, ("replica_hello", index, replica, os.getpid(), joining))
    signal.signal(signal.SIGTERM, lambda *_: shard.loop.stop())
    try:
        shard.loop.run()
    finally:
        shard.loop.close()
