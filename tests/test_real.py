"""The real runtime, used the way a Ray user would (``import testbed as tb``)."""
from __future__ import annotations

import os
import pickle
import socket
import time

import numpy as np
import pytest

import testbed as tb
from conftest import assert_cluster_gone

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def cluster():
    """Two nodes of two CPUs each, plus a custom resource on node 1."""
    c = tb.init(nodes=[{"CPU": 2}, {"CPU": 2, "accel": 1}])
    yield c
    tb.shutdown()
    assert_cluster_gone(c)


@tb.remote
def double(x):
    return 2 * x


@tb.remote
def add(a, b):
    return a + b


def test_tasks_return_futures_and_get_resolves_them(cluster):
    assert tb.get(double.remote(21)) == 42
    assert tb.get([double.remote(i) for i in range(20)]) == [2 * i for i in range(20)]


def test_refs_as_arguments_are_resolved_but_nested_refs_stay_refs(cluster):
    a, b = double.remote(1), double.remote(2)
    assert tb.get(add.remote(a, b)) == 6

    @tb.remote
    def kinds(x, box):
        return type(x).__name__, type(box[0]).__name__

    assert tb.get(kinds.remote(a, [a])) == ("int", "ObjectRef")


def test_put_and_get_numpy_zero_copy_read_only(cluster):
    arr = np.arange(1_000_000, dtype=np.float64)
    ref = tb.put(arr)
    out = tb.get(ref)
    assert np.array_equal(out, arr)
    assert not out.flags.writeable
    with pytest.raises(ValueError):
        out[0] = 1.0

    @tb.remote
    def total(a):
        return float(a.sum()), a.flags.writeable

    assert tb.get(total.remote(ref)) == (float(arr.sum()), False)


def test_large_object_moves_between_nodes(cluster):
    """A 4 MB result made on the node with the accelerator is read on node 0 (a pull)."""
    @tb.remote(resources={"accel": 1})
    def make():
        return np.full(500_000, 7.0)

    @tb.remote(num_cpus=1)
    def first(a):
        return float(a[0]) + len(a)

    ref = make.remote()
    assert tb.get(ref).sum() == 3_500_000.0
    assert tb.get(first.remote(ref)) == 500_007.0


def test_num_returns_gives_one_ref_per_value(cluster):
    @tb.remote(num_returns=3)
    def three():
        return 1, "two", [3]

    r1, r2, r3 = three.remote()
    assert tb.get([r3, r1, r2]) == [[3], 1, "two"]


def test_wait_returns_ready_and_not_ready_in_input_order(cluster):
    @tb.remote(resources={"accel": 1})      # one accelerator: the slow tasks run one at a time
    def slow(t):
        time.sleep(t)       # the task's work: a deliberate duration, not synchronisation
        return t

    refs = [slow.remote(0.5), double.remote(1), slow.remote(0.5), double.remote(2)]
    ready, not_ready = tb.wait(refs, num_returns=2)
    assert ready == [refs[1], refs[3]] and not_ready == [refs[0], refs[2]]
    ready, not_ready = tb.wait(refs, num_returns=4, timeout=0.0)
    assert refs[2] in not_ready and ready + not_ready == [r for r in refs if r in ready] + \
        [r for r in refs if r in not_ready]
    ready, _ = tb.wait(refs, num_returns=4)
    assert ready == refs


def test_task_exception_keeps_its_type_and_shows_the_remote_traceback(cluster):
    @tb.remote
    def boom(x):
        raise ValueError(f"bad value {x}")

    with pytest.raises(ValueError) as info:
        tb.get(boom.remote(3))
    err = info.value
    assert isinstance(err, tb.TaskError)
    assert "bad value 3" in str(err) and "remote traceback" in str(err) and "boom" in str(err)


def test_an_input_that_failed_fails_its_consumer_with_the_same_error(cluster):
    @tb.remote
    def boom():
        raise KeyError("lost")

    with pytest.raises(KeyError):
        tb.get(double.remote(boom.remote()))


def test_get_timeout(cluster):
    @tb.remote
    def sleepy():
        time.sleep(5)

    with pytest.raises(tb.GetTimeoutError):
        tb.get(sleepy.remote(), timeout=0.2)


def test_infeasible_task_fails_clearly_instead_of_hanging(cluster):
    @tb.remote(num_gpus=1)
    def needs_gpu():
        return 1

    with pytest.raises(tb.InfeasibleError, match="GPU"):
        tb.get(needs_gpu.remote(), timeout=10)


def test_misuse_gives_clear_errors(cluster):
    with pytest.raises(TypeError, match="cannot be called directly"):
        double(1)
    with pytest.raises(TypeError, match="ObjectRef"):
        tb.get(42)
    with pytest.raises(TypeError, match="cannot be pickled"):
        double.remote(socket.socket())
    with pytest.raises(ValueError, match="num_returns"):
        tb.remote(num_returns=-1)(lambda: 1)         # 0 is allowed, as in Ray (test_ray_compat_api)
    with pytest.raises(TypeError, match="unknown option"):
        tb.remote(gpus=1)(lambda: 1)


def test_nested_tasks_make_progress_when_every_cpu_runs_a_parent(cluster):
    """Four parents fill all four CPUs and each waits for children: a worker blocked in
    get gives its CPU back, so the children still run."""
    @tb.remote
    def parent(i):
        return sum(tb.get([double.remote(i * 10 + k) for k in range(3)]))

    assert tb.get([parent.remote(i) for i in range(4)], timeout=30) == [
        sum(2 * (i * 10 + k) for k in range(3)) for i in range(4)]


def test_nodes_and_resources_look_like_rays(cluster):
    nodes = tb.nodes()
    assert len(nodes) == 2
    for n in nodes:
        assert {"NodeID", "Alive", "Resources"} <= set(n) and n["Alive"]
    assert tb.cluster_resources() == {"CPU": 4.0, "accel": 1.0}


def test_a_peer_without_the_secret_is_refused_and_nothing_it_sends_is_unpickled(cluster, tmp_path):
    """Connect to a node manager's socket without the secret and send a pickle whose
    loading would create a file: the handshake fails first, the file never appears, and the
    cluster keeps working."""
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Evil())
    path = os.path.join(cluster.dir, "node-0.sock")
    from testbed.real import transport
    with pytest.raises((transport.AuthenticationError, ConnectionError, OSError)):
        transport.connect(path, os.urandom(32), timeout=5)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.sendall(len(payload).to_bytes(4, "big") + payload)
    try:
        s.recv(1024)        # the challenge, then the listener drops us
    except OSError:
        pass
    s.close()
    assert tb.get(double.remote(5)) == 10
    assert not marker.exists()
    st = os.stat(path)
    assert st.st_mode & 0o077 == 0 and os.stat(cluster.dir).st_mode & 0o077 == 0


# --- actors ---------------------------------------------------------------------------

@tb.remote
class Counter:
    def __init__(self, start=0):
        self.n = start

    def incr(self, k=1):
        self.n += k
        return self.n

    def get(self):
        return self.n


def test_actor_calls_run_one_at_a_time_in_submission_order(cluster):
    c = Counter.remote(10)
    assert tb.get([c.incr.remote() for _ in range(500)]) == list(range(11, 511))
    assert tb.get(c.get.remote()) == 510


def test_actor_handles_can_be_passed_to_tasks_and_to_other_actors(cluster):
    c = Counter.remote()

    @tb.remote
    def bump(h, k):
        return tb.get(h.incr.remote(k))

    @tb.remote
    class Relay:
        def __init__(self, target):
            self.target = target

        def push(self, k):
            return tb.get(self.target.incr.remote(k))

    assert tb.get(bump.remote(c, 5)) == 5
    r = Relay.remote(c)
    assert tb.get(r.push.remote(10)) == 15
    assert tb.get(c.get.remote()) == 15


def test_killed_or_failed_actors_raise_actor_died(cluster):
    c = Counter.remote()
    assert tb.get(c.incr.remote()) == 1
    tb.kill(c)
    with pytest.raises(tb.ActorDiedError, match="killed"):
        tb.get(c.get.remote(), timeout=20)

    @tb.remote
    class Broken:
        def __init__(self):
            raise ValueError("no config")

        def f(self):
            return 1

    with pytest.raises(tb.ActorDiedError, match="no config"):
        tb.get(Broken.remote().f.remote(), timeout=20)
    with pytest.raises(TypeError, match="directly"):
        Counter()
    with pytest.raises(AttributeError, match="no method"):
        c.nope


def test_an_actor_no_node_can_hold_fails_clearly(cluster):
    @tb.remote(num_gpus=2)
    class Greedy:
        def f(self):
            return 1

    with pytest.raises(tb.InfeasibleError, match="GPU"):
        tb.get(Greedy.remote().f.remote(), timeout=20)


def test_timeline_writes_chrome_trace_events_for_tasks_and_actor_calls(cluster, tmp_path):
    c = Counter.remote()
    tb.get([double.remote(1), c.incr.remote()])
    path = tmp_path / "trace.json"
    events = tb.timeline(str(path))
    import json
    data = json.loads(path.read_text())
    assert data["traceEvents"] == events
    spans = [e for e in events if e["ph"] == "X"]
    names = {e["name"] for e in spans}
    assert "double" in names and "Counter.incr" in names
    for e in spans:
        assert e["dur"] >= 0 and e["pid"] in (0, 1) and e["tid"] > 0
    assert {e["args"]["name"] for e in events if e["ph"] == "M"} >= {"node 0"}


def test_an_object_whose_last_ref_is_dropped_is_freed_and_its_memory_reused(cluster):
    """Twenty 20 MB puts in a row, each dropped after a get: the store never holds more than
    a couple of them and spills nothing (the memory is reused, so puts run near memcpy speed)."""
    from testbed.real import api
    arr = np.ones(20_000_000 // 8)
    used = []
    for _ in range(20):
        r = tb.put(arr)
        assert tb.get(r)[0] == 1.0
        del r
        used.append(api._core().request("store_stats")["used_bytes"])
    assert max(used) <= 3 * 20_000_000
    assert api._core().request("store_stats")["spilled"] == 0


def test_refs_passed_to_tasks_outlive_the_callers_refs(cluster):
    """A ref given to a task keeps its object alive after the caller drops it."""
    @tb.remote
    def total(a):
        return float(a.sum())
    r = tb.put(np.ones(50_000))          # 400 kB: in shared memory
    out = total.remote(r)
    del r
    assert tb.get(out) == 50_000.0
