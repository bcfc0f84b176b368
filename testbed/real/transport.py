"""Authenticated connections between the runtime's processes.

Every connection goes through a mutual challenge-response on a per-cluster secret
(HMAC-SHA256, compared with :func:`hmac.compare_digest`) before a single byte from the
peer is unpickled::

    connect(address, secret)                         Listener(address, secret)
                                                     (one accept thread per listener)
      | ---- connect (Unix socket, or TCP on 127.0.0.1) ---> |
      | <--- b"TB1" + Ns ---------------------- 35 bytes --- |  Ns: 32 random bytes
      | ---- HMAC(k, b"client" + Ns) + Nc ----- 64 bytes --> |  check; wrong -> close
      | <--- HMAC(k, b"server" + Nc) ---------- 32 bytes --- |  -> queue -> accept()
      check; wrong -> close, AuthenticationError
      | <=========== Channel frames (see below) ===========> |

The handshake reads fixed-length raw bytes (at most 64 from a stranger), so a peer cannot
make us allocate, and nothing it sends is parsed beyond a length check and a MAC. The
listener's accept thread runs every pending handshake at once on one selector with an
absolute deadline per connection (``handshake_timeout_s``), so a silent or slow peer
delays nobody else; failures are closed and counted in ``Listener.rejected``.

Who owns what: the accept thread owns the listening socket and the half-open
connections; authenticated :class:`Channel` objects wait in a deque (guarded by a lock and
mirrored one byte per channel in a pipe, :attr:`Listener.ready_fd`) until ``accept()``
takes them; from then on the caller owns the channel.

Channel frames use the :mod:`multiprocessing.connection` format (a 4-byte big-endian
length, or -1 and an 8-byte length beyond 2 GiB, then the payload):

- ``send(obj)``: one frame, ``pickle.dumps(obj, protocol=5)``;
- ``send_with_buffers(obj)``: one frame ``b"TBOB" + count + sizes + in-band pickle``, then
  one frame per out-of-band buffer (numpy arrays, ``PickleBuffer``), written straight from
  the object's memory and read straight into a fresh ``bytearray`` that the received
  object then uses (no copy into or out of the pickle stream);
- ``send_bytes``/``recv_bytes``: raw frames, for callers with their own format.

``recv()`` reads either kind of pickled message. Trust boundary: once authenticated, a peer
can run code in this process (pickle). After the handshake the traffic is neither encrypted
nor MAC'd, which is fine on a Unix socket in a private directory or on loopback; a
listener on another interface (``allow_remote=True``) needs a network you trust.
The secret never appears in logs, reprs or exception messages; Listeners and Channels
refuse to be pickled.
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import logging
import os
import pickle
import secrets
import select
import selectors
import socket
import struct
import threading
import time
from collections import deque
from multiprocessing import connection as mpc
from typing import Any, Iterable

log = logging.getLogger(__name__)

#: length of a cluster secret made by :func:`new_secret`, and the shortest one accepted
SECRET_BYTES = 32
#: default per-connection handshake deadline on the listener, seconds
HANDSHAKE_TIMEOUT_S = 5.0
#: default deadline of :func:`connect` (TCP/Unix connect plus handshake), seconds
CONNECT_TIMEOUT_S = 5.0
#: default listen(2) backlog
BACKLOG = 128
#: default cap on half-open connections; beyond it new ones are closed at once (and counted)
MAX_PENDING_HANDSHAKES = 256
#: how long the accept thread stops accepting after accept(2) fails (e.g. out of fds), seconds
ACCEPT_BACKOFF_S = 0.1

_MAGIC = b"TB1"  # protocol name and version
_NONCE_BYTES = 32
_MAC_BYTES = hashlib.sha256().digest_size
_GREETING_BYTES = len(_MAGIC) + _NONCE_BYTES  # server -> client
_REPLY_BYTES = _MAC_BYTES + _NONCE_BYTES  # client -> server
_CLIENT_LABEL = b"client"
_SERVER_LABEL = b"server"
_BUFFERED_TAG = b"TBOB"  # first frame of a send_with_buffers message (never starts a pickle)
_UNIX_PATH_MAX = 107  # sun_path is 108 bytes with the terminating NUL (Linux)


class AuthenticationError(Exception):
    """The peer failed the handshake: wrong secret, or not a testbed endpoint."""


class HandshakeClosed(AuthenticationError, ConnectionError):
    """The listener closed the connection after our proof, without its own: it rejected our
    secret — or it is going away (a node being killed closes every socket mid-handshake).
    Both types, because the client cannot tell which: code that treats a failed connection to
    a peer as that peer's death (``except OSError``) does so here too, and a wrong secret is
    still an AuthenticationError."""


def new_secret() -> bytes:
    """A fresh per-cluster secret (32 random bytes). Keep it out of argv and logs."""
    return secrets.token_bytes(SECRET_BYTES)


# --------------------------------------------------------------------------- helpers ---
def _check_secret(secret: object) -> bytes:
    # the messages name the type and length only, never the value
    if not isinstance(secret, bytes):
        raise TypeError(f"secret: expected bytes (make one with new_secret()), got {type(secret).__name__}")
    if len(secret) < SECRET_BYTES:
        raise ValueError(f"secret: must be at least {SECRET_BYTES} bytes long, got {len(secret)}")
    return secret


def _check_timeout(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}: expected a number of seconds > 0, got {value!r}")
    return float(value)


def _mac(secret: bytes, label: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, label + nonce, hashlib.sha256).digest()


def _parse_address(address: object) -> tuple[int, Any, ipaddress.IPv4Address | ipaddress.IPv6Address | None]:
    """``(family, sockaddr, ip)``: a path is a Unix socket, ``(host, port)`` is TCP."""
    if isinstance(address, (str, os.PathLike)):
        path = os.fsdecode(os.fspath(address))
        if not path:
            raise ValueError("address: empty path")
        if len(os.fsencode(path)) > _UNIX_PATH_MAX:
            raise ValueError(f"address: Unix socket path is longer than {_UNIX_PATH_MAX} bytes: {path!r}")
        return socket.AF_UNIX, path, None
    if isinstance(address, tuple) and len(address) == 2:
        host, port = address
        if not isinstance(host, str):
            raise TypeError(f"address: host must be a str, got {type(host).__name__}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"address: port must be an int in 0..65535, got {port!r}")
        if host == "localhost":
            host = "127.0.0.1"
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None  # a host name (or "" = every interface)
        family = socket.AF_INET6 if ip is not None and ip.version == 6 else socket.AF_INET
        return family, (host, port), ip
    raise TypeError(f"address: expected a Unix socket path or a (host, port) tuple, got {address!r}")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _wait_readable(fd: int, timeout: float | None) -> bool:
    p = select.poll()  # not select.select: it fails on fd numbers >= 1024
    p.register(fd, select.POLLIN)
    return bool(p.poll(None if timeout is None else max(0, int(timeout * 1000 + 0.999))))


def _read_exact_fd(fd: int, view: memoryview) -> int:
    """Fill ``view`` from a blocking fd; returns bytes read (< len(view) only at EOF)."""
    got, n = 0, len(view)
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            break
        got += k
    return got


# --------------------------------------------------------------------------- Channel ---
class Channel:
    """An authenticated, thread-safe message channel over one socket.

    Made by :meth:`Listener.accept` and :func:`connect`. ``fileno()`` makes it usable with
    :func:`wait` and :func:`multiprocessing.connection.wait`. Sends from several threads are
    serialised (a message's frames are never interleaved), and so are receives.
    """

    def __init__(self, conn: mpc.Connection, *, peer: str = "", peer_pid: int | None = None):
        self._conn = conn
        #: free-form name of the other end, for logs (the owner may overwrite it)
        self.peer = peer
        #: the peer's process id when the kernel tells us (Unix sockets, listener side), else None
        self.peer_pid = peer_pid
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._owner_pid = os.getpid()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._conn.fileno()}"
        return f"<Channel peer={self.peer!r} {state}>"

    def __reduce__(self):
        raise TypeError("Channel objects cannot be pickled; connect() from the other process instead")

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._conn.closed

    def fileno(self) -> int:
        return self._conn.fileno()

    # --- sending ------------------------------------------------------------------------
    def send(self, obj: Any) -> None:
        """Send ``obj`` pickled (protocol 5, in-band) as one frame."""
        self.send_bytes(pickle.dumps(obj, protocol=5))

    def send_bytes(self, buf) -> None:
        """Send one raw frame (any bytes-like object)."""
        with self._send_lock:
            self._conn.send_bytes(buf)

    def send_with_buffers(self, obj: Any) -> int:
        """Send ``obj`` with its large buffers out of band (pickle protocol 5).

        Contiguous numpy arrays and ``PickleBuffer`` objects are written from their own
        memory as separate frames instead of being copied into the pickle. Returns the size
        of the first (in-band) frame in bytes.
        """
        buffers: list[pickle.PickleBuffer] = []
        inband = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        try:
            raws = [b.raw() for b in buffers]
            first = b"".join((_BUFFERED_TAG, struct.pack(f"!I{len(raws)}Q", len(raws), *(r.nbytes for r in raws)), inband))
            with self._send_lock:
                self._conn.send_bytes(first)
                for r in raws:
                    self._conn.send_bytes(r)
            return len(first)
        finally:
            for b in buffers:
                b.release()

    # --- receiving ----------------------------------------------------------------------
    def recv_bytes(self) -> bytes:
        """Receive one raw frame."""
        with self._recv_lock:
            return self._conn.recv_bytes()

    def recv(self) -> Any:
        """Receive one message sent with :meth:`send` or :meth:`send_with_buffers`.

        Blocks until the whole message is there. Raises ``EOFError`` when the peer closed
        the channel between messages, ``OSError`` on a broken one, and whatever unpickling
        raises for a message it cannot rebuild (the channel stays in step).
        """
        with self._recv_lock:
            first = self._read_frame()
            buffers: list[bytearray] = []
            if first[:len(_BUFFERED_TAG)] == _BUFFERED_TAG:
                first, buffers = self._read_buffers(first)
        return pickle.loads(first, buffers=buffers)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """True if a frame (or EOF) is waiting to be read."""
        return self._conn.poll(timeout)

    def _read_frame(self, expect: int | None = None) -> bytearray:
        """One frame, read straight into a new bytearray (half the copies of Connection)."""
        fd = self._conn.fileno()
        head = bytearray(4)
        got = _read_exact_fd(fd, memoryview(head))
        if got == 0:
            raise EOFError
        if got < 4:
            raise ConnectionError("peer closed the channel in the middle of a message")
        (size,) = struct.unpack("!i", head)
        if size == -1:
            head = bytearray(8)
            if _read_exact_fd(fd, memoryview(head)) < 8:
                raise ConnectionError("peer closed the channel in the middle of a message")
            (size,) = struct.unpack("!Q", head)
        elif size < 0:
            raise ConnectionError(f"bad frame length {size}")
        if expect is not None and size != expect:
            raise ConnectionError(f"buffer frame of {size} bytes where {expect} were announced")
        buf = bytearray(size)
        if _read_exact_fd(fd, memoryview(buf)) < size:
            raise ConnectionError("peer closed the channel in the middle of a message")
        return buf

    def _read_buffers(self, first: bytearray) -> tuple[memoryview, list[bytearray]]:
        at = len(_BUFFERED_TAG)
        (count,) = struct.unpack_from("!I", first, at)
        sizes = struct.unpack_from(f"!{count}Q", first, at + 4)
        inband = memoryview(first)[at + 4 + 8 * count:]
        return inband, [self._read_frame(expect=n) for n in sizes]

    # --- closing ------------------------------------------------------------------------
    def close(self) -> None:
        """Close the channel (idempotent). A thread blocked in ``recv`` gets EOF/OSError."""
        with self._close_lock:
            if self._conn.closed:
                return
            # shutdown first: it wakes a thread blocked reading this socket, which close()
            # alone would not, and the peer sees EOF at once. Not in a forked child: the
            # socket is shared with the parent, which keeps using it.
            if os.getpid() == self._owner_pid:
                self._shutdown()
            self._conn.close()

    def _shutdown(self) -> None:
        try:
            s = socket.socket(fileno=self._conn.fileno())
        except OSError:
            return
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            s.detach()


def _channel_from_socket(sock: socket.socket, peer: str, peer_pid: int | None = None) -> Channel:
    sock.setblocking(True)  # Connection needs a blocking fd (a socket timeout makes it O_NONBLOCK)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Channel(mpc.Connection(sock.detach()), peer=peer, peer_pid=peer_pid)


# -------------------------------------------------------------------------- Listener ---
class _Handshake:
    """A connection between accept(2) and its verdict (owned by the accept thread)."""

    __slots__ = ("sock", "peer", "peer_pid", "nonce", "deadline", "reply")

    def __init__(self, sock: socket.socket, peer: str, peer_pid: int | None, nonce: bytes, deadline: float):
        self.sock = sock
        self.peer = peer  #: for logs
        self.peer_pid = peer_pid  #: from SO_PEERCRED (Unix sockets), else None
        self.nonce = nonce  #: Ns, the challenge we sent
        self.deadline = deadline  #: time.monotonic() by which the reply must be complete
        self.reply = bytearray()  #: the client's reply so far (at most _REPLY_BYTES)


_LISTENING = object()
_WAKEUP = object()


class Listener:
    """Accepts authenticated connections on a Unix socket path or a loopback TCP port.

    ``address`` is a path (Unix socket, created 0600; its directory should be private,
    0700) or ``(host, port)`` (TCP; port 0 picks a free one, see :attr:`address`). A
    non-loopback host raises ``ValueError`` unless ``allow_remote=True``.
    """

    def __init__(self, address, secret: bytes, *, allow_remote: bool = False,
                 handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S, backlog: int = BACKLOG,
                 max_pending_handshakes: int = MAX_PENDING_HANDSHAKES):
        self._secret = _check_secret(secret)
        self._handshake_timeout_s = _check_timeout("handshake_timeout_s", handshake_timeout_s)
        if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1:
            raise ValueError(f"backlog: expected an int >= 1, got {backlog!r}")
        if isinstance(max_pending_handshakes, bool) or not isinstance(max_pending_handshakes, int) \
                or max_pending_handshakes < 1:
            raise ValueError(f"max_pending_handshakes: expected an int >= 1, got {max_pending_handshakes!r}")
        self._max_pending = max_pending_handshakes
        family, sockaddr, ip = _parse_address(address)
        if family != socket.AF_UNIX and not allow_remote and (ip is None or not ip.is_loopback):
            raise ValueError(f"address: refusing to listen on {sockaddr[0]!r}, which is not a loopback address; "
                             "pass allow_remote=True to accept other machines (connections are authenticated "
                             "but not encrypted)")
        #: handshakes that failed (wrong secret, garbage, silence, overload), since start
        self.rejected = 0
        self._owner_pid = os.getpid()
        self._path: str | None = None
        self._path_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we made
        self._family = family
        self._ready: deque[Channel] = deque()  # authenticated, not yet accepted
        self._ready_lock = threading.Lock()  # keeps _ready and the pipe's byte count equal
        self._closed = False
        self._failed = False  # the accept thread died (logged); accept() raises
        self._waiters = 0  # threads inside accept(); the last one out closes the pipe after close()
        self._ready_r, self._ready_w = os.pipe()
        self._sock = None
        self._wake_r = self._wake_w = None
        try:
            os.set_blocking(self._ready_r, False)
            os.set_blocking(self._ready_w, False)
            self._wake_r, self._wake_w = socket.socketpair()
            self._sock = socket.socket(family, socket.SOCK_STREAM)
            if family == socket.AF_UNIX:
                self._bind_unix(sockaddr, backlog)
                #: where clients connect: the path, or the bound (host, port)
                self.address: str | tuple[str, int] = sockaddr
            else:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self._sock.bind(sockaddr)
                self._sock.listen(backlog)
                self.address = tuple(self._sock.getsockname()[:2])
            self._sock.setblocking(False)
        except BaseException:
            for s in (self._sock, self._wake_r, self._wake_w):
                if s is not None:
                    s.close()
            self._close_pipe()
            self._unlink_path()
            raise
        self._thread = threading.Thread(target=self._serve, name=f"tb-listener {self.address}", daemon=True)
        self._thread.start()

    def _bind_unix(self, path: str, backlog: int) -> None:
        # bind a temporary name, restrict it, start listening, then link it into place:
        # the final path never exists with looser permissions, appears only once it
        # accepts, and link(2) refuses to replace an existing file
        directory = os.path.dirname(path) or "."
        tmp = os.path.join(directory, f".tb-{secrets.token_hex(4)}")
        self._sock.bind(tmp)
        try:
            os.chmod(tmp, 0o600)
            self._sock.listen(backlog)
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise FileExistsError(errno.EEXIST, "address: a file is already there (another listener, or "
                                      "a stale socket to remove)", path) from None
        finally:
            os.unlink(tmp)
        st = os.stat(path)
        self._path, self._path_id = path, (st.st_dev, st.st_ino)

    def __repr__(self) -> str:
        return f"<Listener address={self.address!r}{' closed' if self._closed else ''}>"

    def __reduce__(self):
        raise TypeError("Listener objects cannot be pickled")

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def ready_fd(self) -> int:
        """A file descriptor that is readable while ``accept()`` has a channel to give
        (and, for good, once the listener is closed). :func:`wait` accepts Listeners too."""
        return self._ready_r

    # --- the caller's side --------------------------------------------------------------
    def accept(self, timeout: float | None = None) -> Channel | None:
        """The next authenticated channel, or None after ``timeout`` seconds.

        Raises ``OSError`` once the listener is closed (also in a thread blocked here).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready_lock:
            if self._closed:
                raise OSError(errno.EBADF, "Listener is closed")
            self._waiters += 1
        try:
            while True:
                with self._ready_lock:
                    if self._closed:
                        raise OSError(errno.EBADF, "Listener is closed")
                    if self._ready:
                        os.read(self._ready_r, 1)  # present: one byte per queued channel
                        return self._ready.popleft()
                    if self._failed:
                        raise OSError("the Listener's accept thread failed (see the log)")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                _wait_readable(self._ready_r, remaining)
        finally:
            with self._ready_lock:
                self._waiters -= 1
                last_out = self._closed and self._waiters == 0
            if last_out:
                self._close_pipe()

    def close(self) -> None:
        """Stop accepting, close queued channels and the socket, remove the socket file.

        In a forked child this only closes the inherited descriptors.
        """
        if os.getpid() != self._owner_pid:  # inherited through fork: no thread, not our file
            self._closed = True
            for s in (self._sock, self._wake_r, self._wake_w):
                s.close()
            self._close_pipe()
            return
        with self._ready_lock:
            if self._closed:
                return
            self._closed = True
            leftovers = list(self._ready)
            self._ready.clear()
            try:
                os.write(self._ready_w, b"\0")  # wake threads blocked in accept()
            except OSError:
                pass  # pipe full: readable anyway
            idle = self._waiters == 0
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)
            if self._thread.is_alive():
                log.warning("listener %s: accept thread did not stop", self.address)
        for ch in leftovers:
            ch.close()
        self._sock.close()
        self._wake_r.close()
        self._wake_w.close()
        self._unlink_path()
        if idle:
            self._close_pipe()

    def _unlink_path(self) -> None:
        if self._path is not None:
            try:  # only the file we made: a new listener may have taken the path since
                st = os.stat(self._path)
                if (st.st_dev, st.st_ino) == self._path_id:
                    os.unlink(self._path)
            except OSError:
                pass

    def _close_pipe(self) -> None:
        for name in ("_ready_r", "_ready_w"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                try:
                    os.close(fd)
                except OSError:
                    pass

    # --- the accept thread --------------------------------------------------------------
    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ, _LISTENING)
        sel.register(self._wake_r, selectors.EVENT_READ, _WAKEUP)
        pending: dict[socket.socket, _Handshake] = {}  # insertion order = accept order
        paused_until: float | None = None  # accept(2) failing: retry at this time
        try:
            while True:
                wake_at = [h.deadline for h in pending.values()]
                if paused_until is not None:
                    wake_at.append(paused_until)
                timeout = None if not wake_at else max(0.0, min(wake_at) - time.monotonic())
                for key, _ in sel.select(timeout):
                    if key.data is _WAKEUP:
                        return
                    if key.data is _LISTENING:
                        if not self._accept_new(sel, pending):
                            sel.unregister(self._sock)
                            paused_until = time.monotonic() + ACCEPT_BACKOFF_S
                    elif key.fileobj in pending:
                        self._advance(sel, pending, key.data)
                now = time.monotonic()
                for h in [h for h in pending.values() if h.deadline <= now]:
                    self._reject(sel, pending, h, "handshake timed out")
                if paused_until is not None and paused_until <= now:
                    sel.register(self._sock, selectors.EVENT_READ, _LISTENING)
                    paused_until = None
        except Exception:  # noqa: BLE001 - log it, fail accept(); close() still cleans up
            log.exception("listener %s: accept thread failed", self.address)
            with self._ready_lock:
                self._failed = True
                try:
                    os.write(self._ready_w, b"\0")
                except OSError:
                    pass
        finally:
            for h in pending.values():
                h.sock.close()
            sel.close()

    def _accept_new(self, sel: selectors.BaseSelector, pending: dict) -> bool:
        """Start a handshake with every waiting connection; False if accept(2) fails."""
        while True:
            try:
                sock, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except ConnectionAbortedError:
                continue
            except OSError as e:  # EMFILE, ENFILE, ENOBUFS...: back off instead of spinning
                log.warning("listener %s: accept failed (%s); pausing %.1f s", self.address, e.strerror,
                            ACCEPT_BACKOFF_S)
                return False
            peer, pid = self._describe_peer(sock, addr)
            if len(pending) >= self._max_pending:
                self.rejected += 1
                sock.close()
                log.warning("listener %s: dropped %s: %d handshakes already pending", self.address, peer,
                            len(pending))
                continue
            sock.setblocking(False)
            nonce = secrets.token_bytes(_NONCE_BYTES)
            h = _Handshake(sock, peer, pid, nonce, time.monotonic() + self._handshake_timeout_s)
            try:
                # 35 bytes into a fresh socket's empty send buffer: all or something is wrong
                sent = sock.send(_MAGIC + nonce)
            except OSError:
                sent = -1
            if sent != _GREETING_BYTES:
                self.rejected += 1
                sock.close()
                continue
            pending[sock] = h
            sel.register(sock, selectors.EVENT_READ, h)

    def _describe_peer(self, sock: socket.socket, addr) -> tuple[str, int | None]:
        if self._family != socket.AF_UNIX:
            return _host_port(addr[0], addr[1]), None
        try:  # Linux: the connecting process, as the kernel saw it
            pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                              struct.calcsize("3i")))
            return f"pid {pid} uid {uid}", pid
        except (AttributeError, OSError):
            return "unix peer", None

    def _advance(self, sel: selectors.BaseSelector, pending: dict, h: _Handshake) -> None:
        """Read what the peer sent; decide once its whole reply is in."""
        try:
            chunk = h.sock.recv(_REPLY_BYTES - len(h.reply))  # never more than the reply's size
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._reject(sel, pending, h, f"recv failed: {e.strerror}")
            return
        if not chunk:
            self._reject(sel, pending, h, "peer closed the connection during the handshake")
            return
        h.reply += chunk
        if len(h.reply) < _REPLY_BYTES:
            return
        proof, client_nonce = bytes(h.reply[:_MAC_BYTES]), bytes(h.reply[_MAC_BYTES:])
        if not hmac.compare_digest(proof, _mac(self._secret, _CLIENT_LABEL, h.nonce)):
            self._reject(sel, pending, h, "wrong proof: the peer does not know the cluster secret")
            return
        try:
            sent = h.sock.send(_mac(self._secret, _SERVER_LABEL, client_nonce))
        except OSError:
            sent = -1
        if sent != _MAC_BYTES:
            self._reject(sel, pending, h, "could not send our proof")
            return
        sel.unregister(h.sock)
        del pending[h.sock]
        self._push(_channel_from_socket(h.sock, h.peer, h.peer_pid))

    def _reject(self, sel: selectors.BaseSelector, pending: dict, h: _Handshake, why: str) -> None:
        # count before closing: a client that sees the close can rely on the count
        self.rejected += 1
        sel.unregister(h.sock)
        del pending[h.sock]
        h.sock.close()
        log.info("listener %s: rejected %s: %s", self.address, h.peer, why)

    def _push(self, ch: Channel) -> None:
        with self._ready_lock:
            if not self._closed:
                try:
                    os.write(self._ready_w, b"\0")
                    self._ready.append(ch)
                    return
                except BlockingIOError:  # ~64k channels nobody accepted: drop this one
                    log.warning("listener %s: too many unaccepted channels; dropped %s", self.address, ch.peer)
                    self.rejected += 1
        ch.close()


# -------------------------------------------------------------------------- connect ---
def _recv_exact(sock: socket.socket, n: int, deadline: float, what: str) -> bytes:
    """Exactly ``n`` bytes before ``deadline``; fewer only if the peer closed."""
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"handshake timed out waiting for {what}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(n - len(buf))
        except socket.timeout:
            raise TimeoutError(f"handshake timed out waiting for {what}") from None
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def connect(address, secret: bytes, *, timeout: float = CONNECT_TIMEOUT_S) -> Channel:
    """Connect to a :class:`Listener` and run the handshake; returns the Channel.

    Raises ``AuthenticationError`` if the listener rejects us or cannot prove it knows the
    secret (:class:`HandshakeClosed`, also a ConnectionError, when it just closes: a rejection
    or a listener going away), ``TimeoutError`` if the whole thing takes longer than ``timeout`` seconds, and
    lets ``FileNotFoundError`` / ``ConnectionRefusedError`` (no listener) and any
    other ``ConnectionError`` (listener closing or overloaded before the handshake) through.
    """
    _check_secret(secret)
    timeout = _check_timeout("timeout", timeout)
    family, sockaddr, _ = _parse_address(address)
    deadline = time.monotonic() + timeout
    if family == socket.AF_UNIX:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
        except BaseException:
            sock.close()
            raise
        peer = sockaddr
    else:
        sock = socket.create_connection(sockaddr, timeout=timeout)
        peer = _host_port(*sockaddr)
    try:
        greeting = _recv_exact(sock, _GREETING_BYTES, deadline, "the listener's challenge")
        if len(greeting) < _GREETING_BYTES:
            raise ConnectionError(f"{peer}: the listener closed the connection before the handshake "
                                  "(closing, or too many pending handshakes)")
        if not greeting.startswith(_MAGIC):
            raise AuthenticationError(f"{peer}: not a testbed listener (unexpected greeting)")
        client_nonce = secrets.token_bytes(_NONCE_BYTES)
        sock.sendall(_mac(secret, _CLIENT_LABEL, greeting[len(_MAGIC):]) + client_nonce)
        try:
            proof = _recv_exact(sock, _MAC_BYTES, deadline, "the listener's proof")
        except ConnectionResetError:
            proof = b""
        if len(proof) < _MAC_BYTES:
            raise HandshakeClosed(f"{peer}: the listener closed the connection during the handshake "
                                  f"(it rejected our secret, or it is closing)")
        if not hmac.compare_digest(proof, _mac(secret, _SERVER_LABEL, client_nonce)):
            raise AuthenticationError(f"{peer}: the listener failed to prove it knows the cluster secret")
        return _channel_from_socket(sock, peer)
    except BaseException:
        sock.close()
        raise


# ----------------------------------------------------------------------------- wait ---
def wait(objects: Iterable[Channel | Listener], timeout: float | None = None) -> list:
    """The given Channels (and Listeners) that are ready, in the order given.

    A Channel is ready when a frame or EOF can be read; a Listener when ``accept()`` has a
    channel to give (or it was closed). A thin wrapper over
    :func:`multiprocessing.connection.wait`; ``timeout`` in seconds, None waits forever.
    """
    objects = list(objects)
    handles = [o.ready_fd if isinstance(o, Listener) else o for o in objects]
    ready = mpc.wait(handles, timeout)
    ready_ids = {id(h) for h in ready if not isinstance(h, int)}
    ready_fds = {h for h in ready if isinstance(h, int)}
    return [o for o, h in zip(objects, handles)
            if (h in ready_fds if isinstance(h, int) else id(h) in ready_ids)]
