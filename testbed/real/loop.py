"""One event loop per runtime process: authenticated channels, timers, handlers.

    peers ──Channel──┐
    listener ─accept thread─> inbox + wake pipe ─┤
    timers (heap) ───────────────────────────────┴─> Loop.run(): select(), dispatch by message kind

Every message is a tuple whose first item is its kind (a short string); ``on(kind, fn)``
registers ``fn(channel, *rest)``. Handlers run on the loop's thread one at a time, so a
process's state needs no locks unless another thread touches it (say so where it does).

Sends never block (``Loop.send``): two loops that send to each other while neither reads
would otherwise deadlock as soon as both socket buffers fill (a node manager forwarding
to the global scheduler while it assigns back to that node, say). A message that does not
fit goes into the channel's out-buffer, flushed when select() says the socket is writable.
Receives never block either: bytes are read as they come and a message is handled once
all of it is there (a half-sent message's sender may be waiting for us to read). Frames
are multiprocessing's (4-byte big-endian length, then the pickle), so a peer that is not a
loop (a worker, the driver) uses ordinary Channel.send/recv.
"""
from __future__ import annotations

import heapq
import itertools
import os
import pickle
import select
import socket
import struct
import threading
import time
import traceback
from typing import Callable

from . import params, transport

Handler = Callable[..., None]


class Loop:
    def __init__(self, name: str):
        self.name = name
        self.handlers: dict[str, Handler] = {}
        self.channels: list[transport.Channel] = []
        self.on_close: Callable[[transport.Channel], None] | None = None
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._inbox: list[transport.Channel] = []
        self._inbox_lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._listener: transport.Listener | None = None
        self._stopping = False
        #: channel -> bytes not yet written (kept in order); and a send-side socket per channel
        self._out: dict[transport.Channel, bytearray] = {}
        #: channel -> bytes received that do not make a whole message yet
        self._in: dict[transport.Channel, bytearray] = {}
        self._sock: dict[transport.Channel, socket.socket] = {}

    # --- set-up -----------------------------------------------------------------------
    def on(self, kind: str, fn: Handler) -> None:
        self.handlers[kind] = fn

    def listen(self, address, secret: bytes) -> transport.Listener:
        self._listener = transport.Listener(address, secret, handshake_timeout_s=params.get("handshake_timeout_s"))
        threading.Thread(target=self._accept, name=f"{self.name}-accept", daemon=True).start()
        return self._listener

    def add(self, ch: transport.Channel) -> transport.Channel:
        self.channels.append(ch)
        return ch

    def send(self, ch: transport.Channel, msg) -> None:
        """Queue ``msg`` on ``ch`` and write as much as the socket takes now (never blocks).
        Only the loop's thread may call this."""
        if ch.closed:
            return
        data = pickle.dumps(msg, protocol=5)
        n = len(data)
        head = struct.pack("!i", n) if n < 0x7FFFFFFF else struct.pack("!iQ", -1, n)
        buf = self._out.get(ch)
        if buf is not None:
            buf += head
            buf += data
            return
        sock = self._socket(ch)
        frame = head + data
        try:
            sent = sock.send(frame, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:
            return          # the peer is gone; the read side will notice and close
        if sent < len(frame):
            self._out[ch] = bytearray(memoryview(frame)[sent:])

    def _socket(self, ch: transport.Channel) -> socket.socket:
        sock = self._sock.get(ch)
        if sock is None:
            sock = self._sock[ch] = socket.socket(fileno=os.dup(ch.fileno()))
        return sock

    def _flush(self, ch: transport.Channel) -> None:
        buf = self._out.get(ch)
        if buf is None:
            return
        try:
            sent = self._sock[ch].send(buf, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            self._out.pop(ch, None)
            return
        del buf[:sent]
        if not buf:
            del self._out[ch]

    def later(self, delay_s: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay_s, next(self._seq), fn))

    def every(self, interval_s: float, fn: Callable[[], None]) -> None:
        def tick():
            self.later(interval_s, tick)      # first: an error in fn must not stop the ticks
            fn()
        self.later(interval_s, tick)

    def stop(self) -> None:
        self._stopping = True
        self._wake()

    # --- running ----------------------------------------------------------------------
    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _accept(self) -> None:
        lst = self._listener
        while not self._stopping and lst is not None:
            try:
                ch = lst.accept(timeout=0.5)
            except OSError:
                return
            if ch is None:
                continue
            with self._inbox_lock:
                self._inbox.append(ch)
            self._wake()

    def run(self) -> None:
        while not self._stopping:
            timeout = None
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, fn = heapq.heappop(self._timers)
                self._guard(fn)
                now = time.monotonic()
            if self._stopping:
                break
            if self._timers:
                timeout = max(0.0, self._timers[0][0] - now)
            writers = [ch for ch in self._out if not ch.closed]
            try:
                ready, writable, _ = select.select(self.channels + [self._wake_r], writers, [], timeout)
            except (OSError, ValueError):      # a channel closed under us: drop closed ones
                self.channels = [c for c in self.channels if not c.closed]
                continue
            for ch in writable:
                self._flush(ch)
            for r in ready:
                if isinstance(r, int):
                    self._drain_wake()
                    continue
                self._read(r)

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        with self._inbox_lock:
            new, self._inbox = self._inbox, []
        self.channels.extend(new)

    def _read(self, ch: transport.Channel) -> None:
        """Read what the socket has and dispatch every complete frame; never block on a
        half-arrived message (its sender may itself be waiting to finish sending to us)."""
        sock = self._socket(ch)
        buf = self._in.setdefault(ch, bytearray())
        for _ in range(16):
            try:
                data = sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self._closed(ch)
                return
            buf += data
            if len(data) < (1 << 20):
                break
        while True:
            if len(buf) < 4:
                return
            (n,) = struct.unpack_from("!i", buf)
            start = 4
            if n == -1:
                if len(buf) < 12:
                    return
                (n,) = struct.unpack_from("!Q", buf, 4)
                start = 12
            if len(buf) < start + n:
                return
            frame = bytes(memoryview(buf)[start:start + n])
            del buf[:start + n]
            try:
                msg = pickle.loads(frame)
            except Exception:  # noqa: BLE001 - a message that cannot be unpickled; the stream stays in step
                print(f"[{self.name}] dropped a message that could not be read:\n{traceback.format_exc()}", flush=True)
                continue
            self._dispatch(ch, msg)
            if ch.closed:
                return

    def _closed(self, ch: transport.Channel) -> None:
        if ch in self.channels:
            self.channels.remove(ch)
        self._out.pop(ch, None)
        self._in.pop(ch, None)
        sock = self._sock.pop(ch, None)
        if sock is not None:
            sock.close()
        try:
            ch.close()
        except OSError:
            pass
        if self.on_close is not None:
            self._guard(lambda: self.on_close(ch))

    def _dispatch(self, ch, msg) -> None:
        fn = self.handlers.get(msg[0])
        if fn is None:
            print(f"[{self.name}] unknown message kind {msg[0]!r}", flush=True)
            return
        self._guard(lambda: fn(ch, *msg[1:]))

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception:   # noqa: BLE001 - one bad message must not take the process down
            print(f"[{self.name}] error in handler:\n{traceback.format_exc()}", flush=True)

    def close(self) -> None:
        self._stopping = True
        if self._listener is not None:
            self._listener.close()
        for ch in self.channels:
            try:
                ch.close()
            except OSError:
                pass
        for sock in self._sock.values():
            sock.close()
        self._sock.clear()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
