"""The client side of the runtime, shared by the driver and the workers.

    driver / worker ──("submit", spec)───────────────────────────> its node manager
                    ──("get"|"wait"|"create", request id, ...)───> node manager ──("reply", id, ...)──>
                    ──("put_inline"|"seal"|"unpin", ...)─────────> node manager

Requests carry an id and may be outstanding from several threads at once (a driver's thread
blocked in ``get`` does not hold up another's submit or get, as in Ray): sends go out one at a
time under a lock, and one waiting thread at a time reads the connection, keeping the replies
of the others for them (``_reply``). A worker blocked in ``get`` is what the node manager sees
and schedules around. Values travel as
bytes when small (<= INLINE_MAX) and through the node's shared-memory store otherwise;
shared-memory reads are zero-copy and pinned until the last Python reference is gone
(a finaliser queues an "unpin", sent with the next message — never from inside a send).
"""
from __future__ import annotations

import hashlib
import itertools
import os
import threading
import weakref
from collections import deque
from typing import Any

import cloudpickle

from . import objstore
from .errors import GetTimeoutError, ObjectStoreFullError, TaskError, is_failure

#: values up to this size are passed inline, not through shared memory (the store's default)
INLINE_MAX = objstore.DEFAULT_INLINE_MAX_BYTES


def new_task_id() -> bytes:
    return os.urandom(16)


def object_id(task_id: bytes, index: int) -> bytes:
    return task_id + index.to_bytes(4, "little")


#: Reference counting, per process: live ObjectRef instances per object id, and the ids
#: that left this process (pickled into a task, an actor, another object) or came from
#: elsewhere — those are never freed from here. When the last local ref of an object this
#: process made (put, or a task it submitted) dies, its id is queued and the node manager
#: frees it with the next message. A finaliser may only enqueue (it runs anywhere).
_live: dict[bytes, int] = {}
_escaped: set[bytes] = set()
_to_free: deque[bytes] = deque()


class ObjectRef:
    """A future: the id of an object that exists, or will once its task has run."""
    __slots__ = ("id",)

    def __init__(self, oid: bytes):
        self.id = oid
        _live[oid] = _live.get(oid, 0) + 1

    def __del__(self):
        try:
            n = _live.get(self.id, 0) - 1
            if n > 0:
                _live[self.id] = n
                return
            _live.pop(self.id, None)
            if self.id in _escaped:
                _escaped.discard(self.id)
            else:
                _to_free.append(self.id)
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __reduce__(self):
        _escaped.add(self.id)
        return (_borrowed, (self.id,))

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"ObjectRef({self.id.hex()})"

    def hex(self) -> str:
        return self.id.hex()


def _borrowed(oid: bytes) -> ObjectRef:
    """A ref that arrived from another process: this process never frees its object."""
    _escaped.add(oid)
    return ObjectRef(oid)


def escape(oid: bytes) -> None:
    """The object is now needed beyond this process's refs (a task's argument, say)."""
    _escaped.add(oid)


class _Pin:
    """Kept alive by every zero-copy view of a shared-memory object; its death unpins it."""
    __slots__ = ("__weakref__",)


def to_bytes(value: Any) -> tuple[bytes | None, "objstore.Serialized"]:
    """Serialise; return (inline bytes or None if too big for inline, the serialisation)."""
    ser = objstore.serialize(value)
    if ser.size <= INLINE_MAX:
        return objstore.to_bytes(ser), ser
    return None, ser


class Core:
    def __init__(self, channel, node_index: int, role: str):
        self.ch = channel
        self.node = node_index
        self.role = role
        self.lock = threading.RLock()
        self._req = itertools.count(1)
        #: replies read by one thread for another (request id -> value); whether a thread is
        #: reading the connection now; the condition both are guarded by
        self._replies: dict[int, Any] = {}
        self._receiving = False
        self._cv = threading.Condition(threading.Lock())
        self.store = objstore.StoreClient()
        self._unpins: deque[bytes] = deque()
        self._shipped: set[str] = set()
        self._fn_cache: dict[int, tuple] = {}

    # --- plumbing -----------------------------------------------------------------------
    def _flush_queued(self) -> None:
        """Send what finalisers queued (unpins, frees): they may not send themselves."""
        if self._unpins:
            oids = []
            while self._unpins:
                oids.append(self._unpins.popleft())
            self.ch.send(("unpin", oids))
        if _to_free:
            oids = []
            while _to_free:
                oids.append(_to_free.popleft())
            self.ch.send(("free", oids))

    def send(self, msg) -> None:
        with self.lock:
            self._flush_queued()
            if msg[0] == "submit":
                self._ship_once(msg[1])
            self.ch.send(msg)

    def _ship_once(self, spec: dict) -> None:
        """A submit carries its function's code the first time this process sends one that
        names it. Decided here, under the lock, as it is sent: from any thread the code goes
        before (or with) every submit that uses it, and a call that failed before it was sent
        (an argument that cannot be pickled) has not used the code up."""
        if spec.get("fn") is None:
            return
        fid = spec["fn_id"]
        if fid in self._shipped:
            spec["fn"] = None
        else:
            self._shipped.add(fid)

    def request(self, kind: str, *args):
        with self.lock:
            self._flush_queued()
            req = next(self._req)
            self.ch.send((kind, req) + args)
        return self._reply(req)

    def _reply(self, req: int):
        """Wait for the reply to ``req``: read the connection if no other thread does, keeping
        other threads' replies for them; else wait until the reader hands this one over (or
        stops reading, and this thread takes its place)."""
        cv = self._cv
        with cv:
            while True:
                if req in self._replies:
                    return self._replies.pop(req)
                if not self._receiving:
                    self._receiving = True
                    break
                cv.wait()
        try:
            while True:
                msg = self.ch.recv()
                if msg[0] != "reply":
                    self.unexpected(msg)
                elif msg[1] == req:
                    return msg[2]
                else:
                    with cv:
                        self._replies[msg[1]] = msg[2]
                        cv.notify_all()
        finally:
            with cv:
                self._receiving = False
                cv.notify_all()

    def unexpected(self, msg) -> None:
        raise RuntimeError(f"unexpected message {msg[0]!r} while waiting for a reply")

    # --- functions ----------------------------------------------------------------------
    def function_id(self, fn) -> tuple[str, bytes]:
        """(content hash, the pickled function): a submit names the first and carries the second,
        which ``send`` drops if this process has sent it already (_ship_once)."""
        cached = self._fn_cache.get(id(fn))
        if cached is None or cached[2] is not fn:
            data = cloudpickle.dumps(fn)
            fid = hashlib.sha1(data).hexdigest()
            cached = self._fn_cache[id(fn)] = (fid, data, fn)
        return cached[0], cached[1]

    # --- objects ------------------------------------------------------------------------
    def put_parts(self, inline: bytes | None, ser) -> ObjectRef:
        """Store a serialised value (see ``to_bytes``) as a new object."""
        oid = object_id(new_task_id(), 0)
        if inline is not None:
            self.send(("put_inline", oid, inline))
        else:
            self.put_serialized(oid, ser)
        return ObjectRef(oid)

    def put_serialized(self, oid: bytes, ser) -> tuple:
        seg, off = self.request("create", oid, ser.size)
        if seg is None:
            raise ObjectStoreFullError(f"object store of node {self.node} is full ({ser.size} bytes asked): {off}")
        self.store.write(seg, off, ser)
        self.send(("seal", oid, ser.size))
        return ("shm", ser.size)

    def decode(self, oid: bytes, desc) -> Any:
        if desc[0] == "inline":
            return objstore.deserialize_bytes(desc[1])
        _, seg, off, size = desc
        pin = _Pin()
        weakref.finalize(pin, self._unpins.append, oid)
        return self.store.read(seg, off, size, pin)

    def get(self, refs: list[ObjectRef], timeout: float | None = None) -> list[Any]:
        reply = self.request("get", [r.id for r in refs], timeout)
        if reply == "timeout":
            raise GetTimeoutError(f"get timed out after {timeout} s")
        if isinstance(reply, tuple) and reply[0] == "store_full":
            raise ObjectStoreFullError(reply[1])
        values = []
        for r, desc in zip(refs, reply):
            v = self.decode(r.id, desc)
            if is_failure(v):
                raise v.as_instanceof_cause() if isinstance(v, TaskError) else v
            values.append(v)
        return values

    def wait(self, refs: list[ObjectRef], num_returns: int, timeout: float | None) -> set[bytes]:
        return set(self.request("wait", [r.id for r in refs], num_returns, timeout))

    def close(self) -> None:
        try:
            self.ch.close()
        except OSError:
            pass
        self.store.close()
