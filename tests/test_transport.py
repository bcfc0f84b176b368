"""The authenticated transport: every connection proves the cluster secret both ways
before anything it sends is unpickled, and a bad peer never stalls the listener.

No test starts a process; every thread a test starts is joined, every socket closed.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
import queue
import secrets
import socket
import stat
import struct
import threading

import numpy as np
import pytest

from testbed.real import transport as tp
from testbed.real.transport import AuthenticationError, Channel, Listener, connect, new_secret, wait

TIMEOUT = pytest.mark.timeout(30)
#: generous bound for anything that should take milliseconds (a guard, not a measurement)
SLOW_S = 10.0


@pytest.fixture
def secret() -> bytes:
    return new_secret()


@pytest.fixture
def sock_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def closing():
    """Register Listeners, Channels and sockets; they are closed at teardown, last first."""
    things: list = []
    yield things.append
    for t in reversed(things):
        t.close()


def _pair(listener: Listener, secret: bytes, closing) -> tuple[Channel, Channel]:
    client = connect(listener.address, secret, timeout=SLOW_S)
    closing(client)
    server = listener.accept(timeout=SLOW_S)
    assert server is not None
    closing(server)
    return client, server


def _read_to_eof(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (a reset counts as closing)."""
    sock.settimeout(SLOW_S)
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _raw_connect(address) -> socket.socket:
    if isinstance(address, tuple):
        return socket.create_connection(address, timeout=SLOW_S)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(SLOW_S)
    s.connect(address)
    return s


def _still_works(listener: Listener, secret: bytes, closing) -> None:
    client, server = _pair(listener, secret, closing)
    client.send(("ping", 1))
    assert server.recv() == ("ping", 1)


ADDRESSES = {
    "unix": lambda d: str(d / "l.sock"),
    "tcp": lambda d: ("127.0.0.1", 0),
}


@TIMEOUT
@pytest.mark.parametrize("kind", sorted(ADDRESSES))
def test_objects_round_trip(kind, secret, sock_dir, closing):
    """Whatever one side sends, the other receives equal, both ways, in order."""
    listener = Listener(ADDRESSES[kind](sock_dir), secret)
    closing(listener)
    client, server = _pair(listener, secret, closing)
    msgs = [("put", b"k", {"v": [1, 2.5, None]}), 42, "x" * 100_000, np.arange(5)]
    for m in msgs:
        client.send(m)
    for m in msgs:
        got = server.recv()
        assert type(got) is type(m)
        assert np.array_equal(got, m) if isinstance(m, np.ndarray) else got == m
    server.send_bytes(b"raw")
    assert client.recv_bytes() == b"raw"
    if kind == "unix":
        assert server.peer_pid == os.getpid()  # the kernel names the connecting process


@TIMEOUT
def test_wrong_secret_is_refused_by_the_listener(secret, sock_dir, closing, caplog):
    """A client with another secret gets AuthenticationError, the listener counts it and
    never hands it out, and the next correct client is accepted. The secret is never
    logged nor put in the error."""
    caplog.set_level(logging.DEBUG, logger=tp.__name__)
    listener = Listener(str(sock_dir / "l.sock"), secret)
    closing(listener)
    with pytest.raises(AuthenticationError) as err:
        connect(listener.address, new_secret(), timeout=SLOW_S)
    assert listener.rejected == 1  # counted before the socket was closed
    assert listener.accept(timeout=0) is None
    _still_works(listener, secret, closing)
    for text in (str(err.value), caplog.text, repr(listener)):
        assert secret.hex() not in text and repr(secret) not in text


def _fake_listener(path: str, serve):
    """A raw socket server running ``serve(conn)`` for one connection, in a thread."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(SLOW_S)
    result = queue.Queue()

    def run():
        try:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(SLOW_S)
                result.put(serve(conn))
        except Exception as e:  # noqa: BLE001 - reported to the test
            result.put(e)

    th = threading.Thread(target=run)
    th.start()
    return srv, th, result


def _recv_n(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk, "peer closed early"
        data += chunk
    return data


@TIMEOUT
def test_a_listener_without_the_secret_is_refused_by_the_client(secret, sock_dir):
    """A listener that answers the challenge with another key: the client checks the
    listener's proof, raises AuthenticationError and closes the socket."""
    other = new_secret()

    def impostor(conn):
        conn.sendall(b"TB1" + secrets.token_bytes(32))
        reply = _recv_n(conn, 64)
        conn.sendall(hmac.new(other, b"server" + reply[32:], hashlib.sha256).digest())
        return _read_to_eof(conn)  # the client must hang up, sending nothing more

    _refused_by(impostor, "failed to prove", secret, sock_dir)


@TIMEOUT
def test_a_listener_that_closes_mid_handshake_is_also_a_connection_error(secret, sock_dir):
    """A listener that hangs up after the client's proof (a node being killed; or a wrong
    secret: the client cannot tell which) is an AuthenticationError and a ConnectionError,
    so the runtime's ``except OSError`` treats that peer as gone. The global scheduler got a
    plain AuthenticationError from a dying node, its handler stopped, and the task it was
    placing was dropped: a run under kills and restores hung (4 of 12 runs at load 6-8)."""
    srv, th, result = _fake_listener(str(sock_dir / "dying.sock"), lambda conn: (
        conn.sendall(b"TB1" + secrets.token_bytes(32)), _recv_n(conn, 64))[1])
    try:
        with pytest.raises(tp.HandshakeClosed, match="closed the connection during the handshake") as err:
            connect(str(sock_dir / "dying.sock"), secret, timeout=SLOW_S)
        assert isinstance(err.value, AuthenticationError) and isinstance(err.value, ConnectionError)
        th.join(SLOW_S)
    finally:
        srv.close()


@TIMEOUT
def test_a_peer_that_is_not_a_testbed_listener_is_refused(secret, sock_dir):
    """A server speaking another protocol (here: a length-prefixed frame) is refused
    before the client sends anything derived from the secret."""

    def stranger(conn):
        conn.sendall(struct.pack("!i", 31) + b"#CHALLENGE#" + bytes(20))
        return _read_to_eof(conn)

    _refused_by(stranger, "not a testbed listener", secret, sock_dir)


def _refused_by(serve, match, secret, sock_dir):
    """connect() to a fake listener running ``serve`` fails with ``match``, and the client
    hangs up without sending anything more."""
    srv, th, result = _fake_listener(str(sock_dir / "fake.sock"), serve)
    try:
        with pytest.raises(AuthenticationError, match=match):
            connect(str(sock_dir / "fake.sock"), secret, timeout=SLOW_S)
        th.join(SLOW_S)
        assert result.get(timeout=SLOW_S) == b""
    finally:
        th.join(SLOW_S)
        srv.close()


@TIMEOUT
@pytest.mark.parametrize("kind", sorted(ADDRESSES))
def test_garbage_is_dropped_and_the_listener_keeps_working(kind, secret, sock_dir, closing):
    """A peer that answers the challenge with junk is closed and counted."""
    listener = Listener(ADDRESSES[kind](sock_dir), secret)
    closing(listener)
    with _raw_connect(listener.address) as raw:
        raw.sendall(os.urandom(300))
        greeting = _read_to_eof(raw)
    assert greeting[:3] == b"TB1" and len(greeting) == 35  # the challenge, then nothing
    assert listener.rejected == 1
    _still_works(listener, secret, closing)


class _Boom:
    """Unpickling this creates a file: proof that something was unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@TIMEOUT
@pytest.mark.parametrize("when", ["before the challenge", "instead of the reply"])
def test_a_pickle_sent_before_the_handshake_is_never_unpickled(when, secret, sock_dir, tmp_path, closing):
    """A multiprocessing-style frame holding a pickle is treated as a failed handshake:
    nothing is unpickled (the marker file stays absent), the listener keeps working."""
    control = tmp_path / "control"  # the same payload does create its file when unpickled
    pickle.loads(pickle.dumps(_Boom(str(control)), protocol=5)).close()
    assert control.exists()

    marker = tmp_path / "marker"
    payload = pickle.dumps(_Boom(str(marker)), protocol=5)
    frame = struct.pack("!i", len(payload)) + payload
    listener = Listener(str(sock_dir / "l.sock"), secret, handshake_timeout_s=0.5)
    closing(listener)
    with _raw_connect(listener.address) as raw:
        if when == "instead of the reply":
            assert _recv_n(raw, 35)[:3] == b"TB1"
        raw.sendall(frame)
        raw.shutdown(socket.SHUT_WR)
        _read_to_eof(raw)
    assert listener.rejected == 1
    _still_works(listener, secret, closing)
    assert not marker.exists()


@TIMEOUT
def test_silent_peers_do_not_block_a_correct_client(secret, sock_dir, closing):
    """Peers that connect and say nothing wait in parallel with everyone else; a correct
    client is accepted at once and the silent ones are dropped at their deadline."""
    listener = Listener(str(sock_dir / "l.sock"), secret, handshake_timeout_s=0.5)
    closing(listener)
    silent = [_raw_connect(listener.address) for _ in range(3)]
    for s in silent:
        closing(s)
        assert _recv_n(s, 35)[:3] == b"TB1"  # each got its challenge without waiting
    _still_works(listener, secret, closing)
    assert listener.rejected == 0  # accepted while the silent ones were still pending
    for s in silent:
        assert _read_to_eof(s) == b""  # dropped after 0.5 s
    assert listener.rejected == 3
    _still_works(listener, secret, closing)


@TIMEOUT
def test_too_many_pending_handshakes_are_shed(secret, sock_dir, closing):
    """Beyond max_pending_handshakes a new connection is closed at once, unanswered."""
    listener = Listener(str(sock_dir / "l.sock"), secret, max_pending_handshakes=1)
    closing(listener)
    first = _raw_connect(listener.address)
    closing(first)
    assert _recv_n(first, 35)[:3] == b"TB1"
    with _raw_connect(listener.address) as second:
        assert _read_to_eof(second) == b""
    assert listener.rejected == 1


@TIMEOUT
def test_only_loopback_unless_allow_remote(secret):
    """Listening on every interface needs allow_remote=True."""
    for host in ("0.0.0.0", "", "::"):
        with pytest.raises(ValueError, match="allow_remote"):
            Listener((host, 0), secret)
    with Listener(("0.0.0.0", 0), secret, allow_remote=True) as listener:
        assert listener.address[1] > 0
    with Listener(("localhost", 0), secret) as listener:
        assert listener.address[0] == "127.0.0.1"


@TIMEOUT
def test_bad_arguments_fail_at_the_call_site(secret, sock_dir):
    with pytest.raises(TypeError, match="secret"):
        Listener(str(sock_dir / "l.sock"), secret.hex())
    with pytest.raises(ValueError, match="secret"):
        connect(str(sock_dir / "l.sock"), secret[:16])
    with pytest.raises(ValueError, match="handshake_timeout_s"):
        Listener(str(sock_dir / "l.sock"), secret, handshake_timeout_s=0)
    with pytest.raises(TypeError, match="address"):
        Listener(8080, secret)
    assert not os.path.exists(sock_dir / "l.sock")


@TIMEOUT
def test_unix_socket_file_is_private_unique_and_removed(secret, sock_dir):
    """The socket file is 0600, a second listener cannot take the path, close removes it."""
    path = sock_dir / "l.sock"
    with Listener(str(path), secret) as listener:
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        with pytest.raises(FileExistsError):
            Listener(str(path), secret)
        with pytest.raises(TypeError):
            pickle.dumps(listener)  # it holds the secret
    assert sorted(os.listdir(sock_dir)) == []
    with pytest.raises(FileNotFoundError):
        connect(str(path), secret)


@TIMEOUT
def test_connecting_to_a_closed_tcp_port_is_refused(secret):
    with Listener(("127.0.0.1", 0), secret) as listener:
        address = listener.address
    with pytest.raises(ConnectionRefusedError):
        connect(address, secret)


@TIMEOUT
def test_send_with_buffers_keeps_a_50mb_array_out_of_the_pickle(secret, sock_dir, closing):
    """The array travels as its own frame; the in-band pickle stays small, and the
    receiver's array is a view of the received buffer (not a copy)."""
    listener = Listener(str(sock_dir / "l.sock"), secret)
    closing(listener)
    client, server = _pair(listener, secret, closing)
    arr = np.random.default_rng(0).random(50_000_000 // 8)
    for_wire, for_obj = queue.Queue(), queue.Queue()
    sender = threading.Thread(target=lambda: [q.put(client.send_with_buffers(("obj", 7, arr)))
                                              for q in (for_wire, for_obj)])
    sender.start()
    try:
        # first copy: look at the frames on the wire
        first = server.recv_bytes()
        assert first.startswith(b"TBOB") and len(first) < 1000
        assert server.recv_bytes() == arr.tobytes()
        assert for_wire.get(timeout=SLOW_S) == len(first)
        # second copy: the object as recv() rebuilds it
        tag, n, got = server.recv()
    finally:
        sender.join(SLOW_S)
    assert (tag, n) == ("obj", 7)
    assert np.array_equal(got, arr)
    assert not got.flags.owndata and got.flags.writeable
    assert for_obj.get(timeout=SLOW_S) < 1000


@TIMEOUT
def test_wait_returns_only_ready_channels_in_order(secret, sock_dir, closing):
    listener = Listener(str(sock_dir / "l.sock"), secret)
    closing(listener)
    pairs = [_pair(listener, secret, closing) for _ in range(3)]
    servers = [s for _, s in pairs]
    assert wait(servers + [listener], timeout=0) == []
    pairs[2][0].send("b")  # on a Unix socket the data is readable as soon as send returns
    pairs[0][0].send("a")
    assert wait(servers, timeout=SLOW_S) == [servers[0], servers[2]]  # the order given
    assert [servers[0].recv(), servers[2].recv()] == ["a", "b"]
    assert wait(servers, timeout=0) == []
    client = connect(listener.address, secret, timeout=SLOW_S)  # a listener is ready when it can accept
    closing(client)
    assert wait(servers + [listener], timeout=SLOW_S) == [listener]
    closing(listener.accept(timeout=0))
    assert wait(servers + [listener], timeout=0) == []


@TIMEOUT
def test_two_threads_sending_on_one_channel(secret, sock_dir, closing):
    """Concurrent senders never interleave frames: 2 x 1,000 messages arrive intact and in
    each sender's order (some are large enough to be written in several pieces)."""
    listener = Listener(str(sock_dir / "l.sock"), secret)
    closing(listener)
    client, server = _pair(listener, secret, closing)

    def send_all(who: str):
        for i in range(1000):
            client.send((who, i, bytes([i % 256]) * (40_000 if i % 10 == 0 else 50)))

    senders = [threading.Thread(target=send_all, args=(w,)) for w in ("a", "b")]
    for t in senders:
        t.start()
    try:
        got = [server.recv() for _ in range(2000)]
    finally:
        for t in senders:
            t.join(SLOW_S)
    for who in ("a", "b"):
        mine = [(i, p) for w, i, p in got if w == who]
        assert [i for i, _ in mine] == list(range(1000))
        assert all(p == bytes([i % 256]) * len(p) for i, p in mine)
    assert not server.poll(0)


@TIMEOUT
def test_close_wakes_blocked_threads(secret, sock_dir, closing):
    """Closing a listener wakes a thread in accept() (OSError); closing a channel wakes a
    thread in recv() (EOFError or OSError), and the peer sees EOF."""
    listener = Listener(str(sock_dir / "l.sock"), secret)
    client, server = _pair(listener, secret, closing)
    outcomes = queue.Queue()

    def blocked(fn):
        try:
            fn()
            outcomes.put("returned")
        except (EOFError, OSError) as e:
            outcomes.put(type(e).__name__)

    threads = [threading.Thread(target=blocked, args=(lambda: listener.accept(),)),
               threading.Thread(target=blocked, args=(server.recv,))]
    for t in threads:
        t.start()
    listener.close()
    assert outcomes.get(timeout=SLOW_S) == "OSError"
    server.close()
    assert outcomes.get(timeout=SLOW_S) in ("EOFError", "OSError", "ConnectionError")
    for t in threads:
        t.join(SLOW_S)
    with pytest.raises(EOFError):
        client.recv()
    assert server.closed
    server.close()  # idempotent
