"""Programs written for Ray run on testbed's real runtime: the API surface behaves as Ray 2.x's
(issue 10, "Ray's own core tests"): @tb.method(num_returns=N) and num_returns=0, tb.get_gpu_ids(),
tb.init(object_store_memory=...), tb.kill(no_restart=...), ActorDiedError.actor_id, arguments
checked at .remote(), num_gpus above 1 whole and no bare @tb.remote(), the actor class standing
for the class, and an actor's 1 CPU for placement.

Tests that start their own cluster come first: the module's shared cluster (``cluster``) starts
with the first test that asks for it and runs until the module ends (one driver, one cluster)."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

import testbed as tb
from conftest import assert_cluster_gone, poll_until
from testbed.real.gpus import GpuPool

pytestmark = pytest.mark.timeout(120)


# --- definitions (module level: workers load them by reference, as a Ray program's) ------------

@tb.remote
class Pair:
    """Class and static attributes, read inside methods through the decorated name."""
    X = 5

    def __init__(self, start, *, step=1):
        self.n = start
        self.step = step

    @staticmethod
    def double(v):
        return 2 * v

    @classmethod
    def plus_x(cls, v):
        return cls.X + v

    def through_name(self):
        return Pair.X + Pair.double(1)          # Pair is the actor class here, as in Ray

    @tb.method(num_returns=2)
    def split(self, v):
        return v, -v

    @tb.method(num_returns=0)
    def bump(self):
        self.n += self.step
        return "dropped"

    def value(self):
        return self.n

    def many(self, k):
        return tuple(range(k))

    def pid(self):
        return os.getpid()


@tb.remote
def add(a, b, *, scale=1):
    return (a + b) * scale


@tb.remote(num_returns=0)
def poke(counter):
    counter.bump.remote()
    return "dropped"


@tb.remote
def gpu_ids_in_task():
    return tb.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@tb.remote(num_gpus=1)
def one_gpu():
    return tb.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@tb.remote(num_gpus=2)
def two_gpus():
    return tb.get_gpu_ids()


@tb.remote(num_gpus=1)
class GpuHolder:
    def ids(self):
        return tb.get_gpu_ids()


@tb.remote
class Plain:
    def ping(self):
        return "pong"


@tb.remote(max_restarts=1)
class Restartable:
    def pid(self):
        return os.getpid()


# --- no cluster: refused at decoration or at the call site -----------------------------------

def test_bare_remote_with_parentheses_is_refused_as_in_ray():
    """Ray asserts that @ray.remote() has options (ray_option_utils.remote_args_error_string):
    @tb.remote() is a TypeError saying how to write it."""
    with pytest.raises(TypeError, match="no parentheses"):
        tb.remote()
    with pytest.raises(TypeError, match="no parentheses"):
        tb.remote(add, num_cpus=1)


def test_num_gpus_above_one_must_be_whole():
    """As in Ray: a fraction of one GPU is for sharing it; above 1, whole GPUs only."""
    with pytest.raises(ValueError, match="num_gpus above 1 must be a whole number"):
        tb.remote(num_gpus=1.5)(lambda: 1)
    with pytest.raises(ValueError, match="num_gpus above 1"):
        tb.remote(num_gpus=2.5)(Plain._cls)
    with pytest.raises(ValueError, match="num_gpus above 1"):
        one_gpu.options(num_gpus=1.25)
    for ok in (0.5, 1, 2, 3.0):
        tb.remote(num_gpus=ok)(lambda: 1)


def test_num_returns_zero_is_accepted_and_negative_refused():
    tb.remote(num_returns=0)(lambda: 1)
    with pytest.raises(ValueError, match="num_returns must be an integer >= 0"):
        tb.remote(num_returns=-1)(lambda: 1)
    with pytest.raises(TypeError, match="tb.method"):
        tb.method(lambda self: 1)                 # bare @tb.method: Ray needs an option too
    with pytest.raises(TypeError, match="unknown option 'concurrency_group'"):
        tb.method(concurrency_group="io")


def test_the_actor_class_stands_for_the_class():
    """Attribute access on the decorated class reaches the class's own attributes (Ray's actor
    class derives from the class); subclassing it is a TypeError, as in Ray."""
    assert Pair.X == 5 and Pair.double(4) == 8 and Pair.plus_x(1) == 6
    assert Pair.__name__ == "Pair" and Pair.__module__ == __name__
    with pytest.raises(AttributeError, match="actor class Pair has no attribute 'nope'"):
        Pair.nope
    with pytest.raises(TypeError, match="cannot subclass actor class Pair"):
        class Sub(Pair):                           # noqa: F841 - the class statement is the test
            pass


def test_init_refuses_two_different_store_sizes():
    """object_store_memory is Ray's name for object_store_bytes: both, different, is an error
    before anything starts."""
    with pytest.raises(ValueError, match="object_store_memory .* is Ray's name for object_store_bytes"):
        tb.init(num_cpus=1, object_store_bytes=1 << 26, object_store_memory=1 << 27)
    with pytest.raises(ValueError, match="object_store_memory must be > 0"):
        tb.init(num_cpus=1, object_store_memory=0)
    assert not tb.is_initialized()


# --- GPU ids: the node's pool (pure) ----------------------------------------------------------

def test_gpu_pool_gives_whole_gpus_the_lowest_free_ids_and_packs_fractions():
    p = GpuPool(2.0)
    assert p.take(1.0) == [0] and p.take(1.0) == [1] and p.take(1.0) is None
    p.give([0], 1.0)
    assert p.take(0.5) == [0] and p.take(0.5) == [0]    # two halves share GPU 0
    assert p.take(0.5) is None                           # both GPUs in use
    p.give([1], 1.0)
    assert p.take(2.0) is None and p.take(0.25) == [1]
    p.give([0], 0.5)
    p.give([0], 0.5)
    assert p.take(1.0) == [0]


def test_gpu_pool_never_strands_a_demand_the_node_can_hold():
    """A fractional GPU count adds a last id holding the fraction; every demand that the node's
    totals hold gets ids on an idle node (so no feasible task waits for good)."""
    for total in (0.5, 1.0, 1.5, 2.0, 3.25):
        for demand in (0.25, 0.5, 0.75, 1.0, 2.0, 3.0):
            if demand <= total:
                ids = GpuPool(total).take(demand)
                assert ids is not None and len(ids) == max(1, int(demand)), (total, demand, ids)
    assert GpuPool(1.5).capacity == [1.0, 0.5]
    assert GpuPool(0).take(0.0) == []


# --- clusters of their own (before the shared one starts) ------------------------------------

def test_object_store_memory_sizes_the_store():
    """tb.init(object_store_memory=N) is a store of N bytes per node: a put bigger than it does
    not fit (ObjectStoreFullError), one smaller does."""
    size = 4 << 20
    with tb.init(num_cpus=1, object_store_memory=size) as c:
        assert c.config["object_store_bytes"] == size
        assert tb.get(tb.put(np.ones(size // 16))).sum() == size // 16
        with pytest.raises(tb.ObjectStoreFullError):
            tb.put(np.ones(size // 4))               # 2x the store
    assert_cluster_gone(c)
    with tb.init(num_cpus=1, object_store_bytes=size, object_store_memory=size) as c:   # same: fine
        assert c.config["object_store_bytes"] == size
    assert_cluster_gone(c)


@tb.remote(num_cpus=0)
class NoCpu:
    def ping(self):
        return "pong"


@tb.remote(num_cpus=0)
def no_cpu_task():
    return "ran"


def test_an_actor_asking_for_nothing_needs_a_cpu_to_be_placed():
    """As in Ray, an actor with default resources needs 1 CPU to be placed and holds none while
    it runs. On a cluster without CPUs it is infeasible, reported at once (testbed fails
    infeasible work fast, where Ray would wait for a node); one asking for num_cpus=0 is placed."""
    with tb.init(num_cpus=0) as c:
        a = Plain.remote()
        with pytest.raises(tb.InfeasibleError, match="needs 1 CPU to be placed"):
            tb.get(a.ping.remote(), timeout=30)
        assert tb.get(NoCpu.remote().ping.remote(), timeout=30) == "pong"
        assert tb.get(no_cpu_task.remote(), timeout=30) == "ran"
    assert_cluster_gone(c)
    with tb.init(num_cpus=1) as c:
        actors = [Plain.remote() for _ in range(3)]    # placed one after another on the one CPU
        assert tb.get([x.ping.remote() for x in actors], timeout=60) == ["pong"] * 3
        assert tb.get(add.remote(1, 2), timeout=30) == 3   # they hold no CPU: a task still runs
        poll_until(lambda: tb.available_resources().get("CPU") == 1.0, "the node reports its CPU free")
    assert_cluster_gone(c)


# --- the shared cluster ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    """One node of two CPUs and two GPUs."""
    c = tb.init(nodes=[{"CPU": 2, "GPU": 2}])
    yield c
    tb.shutdown()
    assert_cluster_gone(c)


def test_method_num_returns_and_call_options(cluster):
    """@tb.method(num_returns=2) gives two refs; .options(num_returns=N) sets one call's;
    num_returns=0 returns None and the method still runs (in order with the handle's calls)."""
    p = Pair.remote(10, step=3)
    pos, neg = p.split.remote(7)
    assert tb.get([pos, neg], timeout=30) == [7, -7]
    refs = p.many.options(num_returns=3).remote(3)
    assert isinstance(refs, list) and tb.get(refs, timeout=30) == [0, 1, 2]
    assert tb.get(p.many.options(num_returns=1).remote(2), timeout=30) == (0, 1)
    assert p.bump.remote() is None
    assert p.value.options(num_returns=0).remote() is None
    assert tb.get(p.value.remote(), timeout=30) == 13
    with pytest.raises(ValueError, match="num_returns must be an integer >= 0"):
        p.value.options(num_returns=-1)
    with pytest.raises(TypeError, match="unknown option 'name'"):
        p.value.options(name="x")
    tb.kill(p)


def test_a_task_with_num_returns_zero_returns_none_and_runs(cluster):
    p = Pair.remote(0)
    assert poke.remote(p) is None
    poll_until(lambda: tb.get(p.value.remote(), timeout=30) == 1, "the num_returns=0 task ran")
    tb.kill(p)


def test_the_actor_class_name_reaches_class_attributes_inside_methods(cluster):
    p = Pair.remote(0)
    assert tb.get(p.through_name.remote(), timeout=30) == 7
    assert tb.get([p.double.remote(3), p.plus_x.remote(1)], timeout=30) == [6, 6]
    tb.kill(p)


def test_arguments_are_checked_at_the_call_site(cluster):
    """Ray binds a call's arguments to the signature at .remote(): a call that cannot fit
    raises TypeError there (naming the function), for a task, a constructor and a method
    (``self`` left out), and nothing is submitted."""
    with pytest.raises(TypeError, match=r"add.remote\(\): missing a required argument: 'b'"):
        add.remote(1)
    with pytest.raises(TypeError, match=r"add.remote\(\).*unexpected keyword argument 'scal'"):
        add.remote(1, 2, scal=3)
    with pytest.raises(TypeError, match="too many positional"):
        add.remote(1, 2, 3)
    assert tb.get(add.remote(1, b=2, scale=2), timeout=30) == 6
    with pytest.raises(TypeError, match=r"Pair.remote\(\): missing a required argument: 'start'"):
        Pair.remote()
    with pytest.raises(TypeError, match="too many positional"):
        Pair.remote(1, 2)                           # step is keyword-only
    p = Pair.remote(1, step=2)
    with pytest.raises(TypeError, match=r"Pair.many.remote\(\): missing a required argument: 'k'"):
        p.many.remote()
    with pytest.raises(TypeError, match="too many positional"):
        p.value.remote(1)
    with pytest.raises(TypeError, match="too many positional"):
        p.double.remote(1, 2)                       # a static method: no self to skip
    with pytest.raises(TypeError, match=r"add.remote\(\)"):
        add.options(num_cpus=1).remote()
    assert tb.get(p.many.remote(k=2), timeout=30) == (0, 1)
    tb.kill(p)


def test_get_gpu_ids_names_the_gpus_a_task_or_actor_holds(cluster):
    """The driver and a task without GPUs get []; a task with num_gpus=1 gets one of the node's
    two ids (and CUDA_VISIBLE_DEVICES says the same); two actors holding a GPU each for their
    lives hold different ids, and a task asking for both GPUs runs once they have died."""
    assert tb.get_gpu_ids() == []
    ids, cuda = tb.get(gpu_ids_in_task.remote(), timeout=30)
    assert ids == [] and cuda == os.environ.get("CUDA_VISIBLE_DEVICES")    # as the worker inherited it
    ids, cuda = tb.get(one_gpu.remote(), timeout=30)
    assert len(ids) == 1 and ids[0] in (0, 1) and cuda == str(ids[0])
    a, b = GpuHolder.remote(), GpuHolder.remote()
    got = tb.get([a.ids.remote(), b.ids.remote()], timeout=30)
    assert sorted(got) == [[0], [1]]
    assert tb.get(a.ids.remote(), timeout=30) == got[0]       # the actor keeps its GPU
    tb.kill(a)
    tb.kill(b)
    assert tb.get(two_gpus.remote(), timeout=60) == [0, 1]


def test_kill_does_not_restart_unless_asked(cluster):
    """tb.kill(a) (no_restart=True, Ray's default) leaves an actor with restarts dead: its calls
    raise ActorDiedError naming the actor (actor_id == handle._actor_id.hex(), as in Ray);
    tb.kill(a, no_restart=False) kills it as a crash would, and it restarts in a new process."""
    a = Restartable.remote()
    tb.get(a.pid.remote(), timeout=30)
    tb.kill(a)
    with pytest.raises(tb.ActorDiedError, match="killed") as err:
        tb.get(a.pid.remote(), timeout=30)
    assert err.value.actor_id == a._actor_id.hex()
    b = Restartable.remote()
    first = tb.get(b.pid.remote(), timeout=30)
    tb.kill(b, no_restart=False)
    again = tb.get(b.pid.remote(), timeout=60)
    assert again != first
    tb.kill(b, no_restart=False)                  # its one restart is spent: now it dies
    with pytest.raises(tb.ActorDiedError) as err:
        tb.get(b.pid.remote(), timeout=30)
    assert err.value.actor_id == b._actor_id.hex()
    with pytest.raises(TypeError, match="no_restart must be True or False"):
        tb.kill(b, no_restart="yes")


@tb.remote(max_restarts=1)
class SlowStart:
    def __init__(self, ready_file):
        with open(ready_file, "w"):
            pass                                  # the constructor has started
        self.wait_file = ready_file + ".go"
        while not os.path.exists(self.wait_file):   # held in its constructor until the test says go
            time.sleep(0.01)

    def pid(self):
        return os.getpid()


def test_kill_without_no_restart_while_the_constructor_runs_restarts_it(cluster, tmp_path):
    """tb.kill(a, no_restart=False) that reaches an actor still being created is a crash there
    too: the actor restarts (max_restarts=1) and serves calls; it is not killed for good."""
    ready = str(tmp_path / "ready")
    a = SlowStart.remote(ready)
    poll_until(lambda: os.path.exists(ready), "the constructor started")
    tb.kill(a, no_restart=False)
    call = a.pid.remote()
    open(ready + ".go", "w").close()              # the constructor ends (a restart's at once)
    assert tb.get(call, timeout=60) > 0
