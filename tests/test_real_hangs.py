"""The real runtime never hangs and says what went wrong: a get that cannot be met, a task
that raises a BaseException, errors of types with special constructors, numbers that are
not finite, an actor killed before it is up, calls that kill their actor (issue 10).
Every test has a timeout, checks the answer, and leaves nothing running."""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

import testbed as tb
from conftest import assert_cluster_gone

pytestmark = pytest.mark.timeout(90)

MiB = 1 << 20


# --- numbers that are not finite (before the module's cluster starts) ---------------------

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_cpus=INF), "num_cpus"), (dict(num_gpus=INF), "num_gpus"),
    (dict(resources={"accel": INF}), "accel"), (dict(nodes=[{"CPU": INF}]), "nodes"),
    (dict(object_store_bytes=INF), "object_store_bytes"), (dict(object_store_bytes=0), "object_store_bytes"),
    (dict(object_store_bytes=1.5), "object_store_bytes"),
    (dict(heartbeat_interval_s=INF), "heartbeat_interval_s"),
    (dict(link_latency_s=INF), "link_latency_s"), (dict(link_latency_s=NAN), "link_latency_s"),
    (dict(link_bandwidth_bytes_per_s=INF), "link_bandwidth_bytes_per_s"),
    (dict(gcs_flush_interval_s=INF), "gcs_flush_interval_s"),
    (dict(_system_config={"start_timeout_s": INF}), "start_timeout_s"),
    (dict(_system_config={"gcs_write_behind_s": NAN}), "gcs_write_behind_s"),
])
def test_init_rejects_numbers_that_are_not_finite_or_out_of_range(kwargs, name):
    """Checked at the call, naming the argument, before any process starts (these tests
    come first in the module: no cluster runs yet)."""
    assert not tb.is_initialized()
    with pytest.raises(ValueError, match=name):
        c = tb.init(**kwargs)
        tb.shutdown()                  # it started (the bug): leave nothing behind
        assert_cluster_gone(c)
    assert not tb.is_initialized()


# --- killing a dead node (its own cluster, before the module's starts) ---------------------

def test_killing_a_node_twice_is_a_clear_error():
    with tb.init(num_cpus=1, num_nodes=2) as c:
        victim = tb.nodes()[1]["NodeID"]
        tb.kill_node(victim)
        with pytest.raises(ValueError, match="already dead"):
            tb.kill_node(victim)
    assert_cluster_gone(c)


@pytest.fixture(scope="module")
def cluster():
    """One node of two CPUs with a 64 MiB object store."""
    c = tb.init(num_cpus=2, object_store_bytes=64 * MiB)
    yield c
    tb.shutdown()
    assert_cluster_gone(c)


@tb.remote
def two_mib(i):
    return np.full(2 * MiB // 8, float(i))


# --- get that cannot be met --------------------------------------------------------------

def test_get_of_more_than_the_store_holds_raises_store_full_and_the_store_recovers(cluster):
    """Forty 2 MiB results fit in the store one by one (the rest spill) but not together:
    get raises ObjectStoreFullError (a MemoryError, as put's) with or without a timeout, and
    the pins it took are released, so a get that fits works afterwards."""
    refs = [two_mib.remote(i) for i in range(40)]
    tb.wait(refs, num_returns=40, timeout=60)
    with pytest.raises(tb.ObjectStoreFullError, match="object store") as info:
        tb.get(refs, timeout=20)
    assert isinstance(info.value, MemoryError)
    with pytest.raises(MemoryError, match="object store"):
        tb.get(refs)
    got = tb.get(refs[:10], timeout=20)
    assert [float(a[0]) for a in got] == [float(i) for i in range(10)]
    del got
    got = tb.get(refs[30:], timeout=20)
    assert [float(a[-1]) for a in got] == [float(i) for i in range(30, 40)]


def test_get_timeout_is_honoured_while_objects_are_missing(cluster):
    """A get whose objects never come back within the timeout raises GetTimeoutError then."""
    @tb.remote
    def slow():
        import time
        time.sleep(30)            # the task's work: it must outlast the get's timeout

    with pytest.raises(tb.GetTimeoutError):
        tb.get([slow.remote()], timeout=0.3)


def _kill_and_see_it_dead(actor, method: str) -> None:
    """tb.kill, then until its node manager has seen the process go (a call fails): the
    leftover check must not see it still exiting."""
    tb.kill(actor)
    with pytest.raises(tb.ActorDiedError):
        tb.get(getattr(actor, method).remote(), timeout=30)


# --- BaseException in a task -------------------------------------------------------------

class MyBaseException(BaseException):
    pass


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, GeneratorExit, MyBaseException])
def test_a_task_raising_a_base_exception_fails_once_as_a_task_error(cluster, tmp_path, exc_type):
    """The exception comes back to get as a TaskError; the body ran once (no worker crash,
    no retry); the worker serves the next task."""
    @tb.remote
    def raises(folder, t):
        open(os.path.join(folder, f"ran-{os.getpid()}-{os.urandom(4).hex()}"), "w").close()
        raise t("from the task")

    with pytest.raises(tb.TaskError, match="from the task") as info:
        tb.get(raises.remote(str(tmp_path), exc_type), timeout=30)
    assert info.value.cause_type is exc_type
    assert len(os.listdir(tmp_path)) == 1
    assert not isinstance(info.value, (KeyboardInterrupt, SystemExit, GeneratorExit))
    if exc_type is MyBaseException:        # a user's own BaseException: dual-typed, as in Ray
        assert isinstance(info.value, MyBaseException)
    assert tb.get(two_mib.remote(3), timeout=30)[0] == 3.0


def test_an_actor_method_raising_keyboard_interrupt_keeps_the_actor(cluster):
    @tb.remote
    class A:
        def __init__(self):
            self.n = 0

        def boom(self):
            self.n += 1
            raise KeyboardInterrupt("stop")

        def count(self):
            return self.n

    a = A.remote()
    with pytest.raises(tb.TaskError, match="stop"):
        tb.get(a.boom.remote(), timeout=30)
    assert tb.get(a.count.remote(), timeout=30) == 1
    _kill_and_see_it_dead(a, "count")


# --- dual-typed errors of types with special constructors --------------------------------

def _memory():
    raise MemoryError("too big")


def _decode():
    b"\xff".decode("utf-8")


def _encode():
    "\u00e9".encode("ascii")


def _group():
    raise ExceptionGroup("several", [ValueError("v"), TypeError("t")])  # noqa: F821


def _os():
    raise FileNotFoundError(2, "no such file", "/nope")


class Custom(Exception):
    """A user's error with a constructor of its own (picklable: its args are its arguments)."""
    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code


def _custom():
    raise Custom(7, "detail")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is Python 3.11+")
@pytest.mark.parametrize("body, exc_type", [(_memory, MemoryError), (_decode, UnicodeDecodeError),
                                            (_encode, UnicodeEncodeError), (_group, ExceptionGroup),
                                            (_os, FileNotFoundError), (_custom, Custom)])
def test_task_errors_are_instances_of_the_original_type(cluster, body, exc_type):
    """``except MemoryError`` (UnicodeError, ExceptionGroup, ...) catches the task's error,
    which is also a TaskError and keeps the original's attributes."""
    @tb.remote
    def run(f):
        f()

    with pytest.raises(exc_type) as info:
        tb.get(run.remote(body), timeout=30)
    err = info.value
    assert isinstance(err, tb.TaskError) and err.cause_type is exc_type
    assert "remote traceback" in str(err)
    if exc_type is UnicodeDecodeError:
        assert (err.encoding, err.start, err.end) == ("utf-8", 0, 1)
    if exc_type is ExceptionGroup:                                            # noqa: F821
        assert [type(e) for e in err.exceptions] == [ValueError, TypeError]
        matched, rest = err.split(ValueError)
        assert [type(e) for e in matched.exceptions] == [ValueError]
    if exc_type is FileNotFoundError:
        assert (err.errno, err.filename) == (2, "/nope")
    if exc_type is Custom:
        assert err.code == 7


# --- actors killed early -----------------------------------------------------------------

def test_kill_before_the_actor_is_up_then_a_call_raises_actor_died(cluster):
    """tb.kill while the constructor still runs, then a call: ActorDiedError, never a hang."""
    @tb.remote
    class Slow:
        def __init__(self):
            sum(range(3_000_000))      # the constructor's work: kill arrives while it runs

        def f(self):
            return 1

    for _ in range(3):
        a = Slow.remote()
        tb.kill(a)
        with pytest.raises(tb.ActorDiedError, match="killed"):
            tb.get(a.f.remote(), timeout=20)


def test_kill_of_something_that_is_not_an_actor_is_a_value_error(cluster):
    with pytest.raises(ValueError, match="actor"):
        tb.kill("x")
    with pytest.raises(ValueError, match="actor"):
        tb.kill(two_mib.remote(0))


# --- numbers given to the running cluster ------------------------------------------------

def test_numeric_arguments_of_the_running_cluster_are_checked_at_the_call(cluster):
    with pytest.raises(ValueError, match="num_cpus"):
        tb.add_node(num_cpus=INF)
    with pytest.raises(ValueError, match="num_gpus"):
        tb.add_node(num_cpus=1, num_gpus=NAN)
    with pytest.raises(ValueError, match="timeout"):
        tb.get(two_mib.remote(0), timeout=INF)
    with pytest.raises(ValueError, match="timeout"):
        tb.wait([two_mib.remote(0)], timeout=NAN)
    with pytest.raises(ValueError, match="num_cpus"):
        two_mib.options(num_cpus=INF)
    with pytest.raises(ValueError, match="resources"):
        tb.remote(resources={"x": INF})(lambda: 1)
    # the cluster is still usable: the supervisor did not crash
    assert tb.get(two_mib.remote(5), timeout=30)[0] == 5.0
    assert math.isfinite(tb.cluster_resources()["CPU"])


# --- calls that kill their actor ---------------------------------------------------------

@tb.remote(max_restarts=-1)
class Fragile:
    def __init__(self):
        self.n = 0

    def crash(self, folder):
        open(os.path.join(folder, f"crash-{os.urandom(4).hex()}"), "w").close()
        os._exit(1)                  # the process dies, as a segfault would

    def incr(self):
        self.n += 1
        return self.n


@pytest.mark.parametrize("max_task_retries, runs", [(None, 1), (0, 1), (2, 3)])
def test_a_call_that_kills_its_actor_runs_max_task_retries_plus_one_times(cluster, tmp_path,
                                                                          max_task_retries, runs):
    """As in Ray: the call that was running when the actor's process died runs again only
    under max_task_retries (default 0: None here), then fails with ActorDiedError; the actor itself is
    restarted (max_restarts=-1), replays the calls it completed, and later calls run."""
    cls = Fragile if max_task_retries is None else Fragile.options(max_task_retries=max_task_retries)
    a = cls.remote()
    assert tb.get(a.incr.remote(), timeout=30) == 1
    with pytest.raises(tb.ActorDiedError, match="max_task_retries"):
        tb.get(a.crash.remote(str(tmp_path)), timeout=30)
    assert len(os.listdir(tmp_path)) == runs
    assert tb.get([a.incr.remote(), a.incr.remote()], timeout=30) == [2, 3]
    _kill_and_see_it_dead(a, "incr")


def test_max_task_retries_is_checked_at_the_call():
    with pytest.raises(ValueError, match="max_task_retries"):
        Fragile.options(max_task_retries=-2)
    with pytest.raises(TypeError, match="max_task_retries"):
        tb.remote(max_task_retries=1)(lambda: 1)
