"""Workloads: config validation, distributions, DAG shapes, determinism, streaming."""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.core.errors import ConfigError
from testbed.workloads import DISTRIBUTIONS, Workload, parse_distribution, parse_workload


def make(seed=0, **table):
    return Workload(parse_workload(table), seed)


def content(job):
    """What a job is, apart from who submitted it."""
    return job.job_id, [(t.index, t.function, t.duration_s, dict(t.resources), t.output_bytes, t.deps)
                        for t in job.tasks]


def drain(w, driver=0, now=0.0):
    jobs = []
    while (job := w.next_job(driver, now)) is not None:
        jobs.append(job)
    return jobs


MIXED = dict(
    shape="map_reduce", jobs=300,
    output_bytes={"dist": "uniform", "low": 0, "high": 1e6},
    functions=[{"name": "a", "weight": 2.0},
               {"name": "b", "duration": {"dist": "lognormal", "mean": 0.5, "sigma": 1.0}}],
)


# --- determinism ---------------------------------------------------------------------

def test_same_seed_gives_same_jobs_and_different_seed_different_jobs():
    a = [content(j) for j in drain(make(7, **MIXED))]
    b = [content(j) for j in drain(make(7, **MIXED))]
    c = [content(j) for j in drain(make(8, **MIXED))]
    assert a == b
    assert len(a) == 300
    assert [t[2] for _, ts in a for t in ts] != [t[2] for _, ts in c for t in ts]


def test_job_content_does_not_depend_on_when_its_driver_asks():
    """Common random numbers: job j is the same whatever the drivers' interleaving."""
    table = dict(MIXED, drivers=2, jobs=9000)  # spans several chunks
    w1, w2 = make(3, **table), make(3, **table)
    first = [w1.next_job(i % 2, now=0.001 * i) for i in range(9000)]
    second = []
    for i in range(9000):
        driver = 1 if (i // 3) % 2 else 0
        second.append(w2.next_job(driver, now=5.0 + i))
    by_id = sorted(second, key=lambda j: j.job_id)
    assert [content(j) for j in first] == [content(j) for j in by_id]
    assert [j.driver for j in first[:4]] == [0, 1, 0, 1]
    assert [j.job_id for j in second[:6]] == [0, 2, 4, 1, 3, 5]


def test_driver_d_submits_jobs_d_plus_k_drivers_whatever_the_order_it_asks_in():
    """The split rule both engines share: driver d's k-th job is d + k * drivers, so job j
    has the same submitter in the simulator (which asks as jobs end) and the real runtime
    (whose drivers take their jobs by number)."""
    w = make(drivers=3, jobs=8)
    jobs = [w.next_job(d, 0.0) for d in (2, 0, 1, 1, 0, 0, 2, 1)]
    assert [j.job_id for j in jobs] == [2, 0, 1, 4, 3, 6, 5, 7]
    assert all(j.job_id % 3 == j.driver for j in jobs)
    assert w.jobs_generated == 8
    assert w.next_job(0, 0.0) is None and w.next_job(1, 0.0) is None and w.next_job(2, 1.0) is None
    assert w.jobs_generated == 8
    assert [list(w.driver_jobs(d)) for d in range(3)] == [[0, 3, 6], [1, 4, 7], [2, 5]]
    with pytest.raises(ValueError, match="driver"):
        make(drivers=2).next_job(2, 0.0)
    with pytest.raises(ValueError, match="driver"):
        make(drivers=2).driver_jobs(2)


def test_a_driver_that_is_done_leaves_the_others_their_jobs():
    """Drivers run out separately: one driver asking more often cannot take another's jobs."""
    w = make(drivers=2, jobs=5)
    assert [w.next_task(0, 0.0)[0] for _ in range(3)] == [0, 2, 4]
    assert w.next_task(0, 0.0) is None
    assert [w.next_task(1, 0.0)[0] for _ in range(2)] == [1, 3]
    assert w.next_task(1, 0.0) is None


def test_each_chunk_is_drawn_once_however_far_the_drivers_drift_apart(monkeypatch):
    """Drivers read interleaved job numbers at their own pace: a chunk a slow driver still
    needs is kept (not drawn again for it), and one that every driver has passed is dropped;
    taken by number only (the runtime's drivers), at most CACHE_CHUNKS are kept."""
    from testbed.workloads import generator as G
    drawn = []
    real = G.Workload._draw
    monkeypatch.setattr(G.Workload, "_draw", lambda self, c: drawn.append(c) or real(self, c))
    chunks = 3 * G.CACHE_CHUNKS
    w = make(drivers=3, jobs=chunks * G.MAX_JOBS_PER_CHUNK)
    for d in (0, 1, 2):                        # driver 0 runs ahead through every chunk first
        while w.next_task(d, 0.0) is not None:
            pass
    assert sorted(drawn) == list(range(chunks))
    drawn.clear()
    w1 = make(drivers=2, jobs=chunks * G.MAX_JOBS_PER_CHUNK)
    while w1.next_task(0, 0.0) is not None:    # in step: the chunks both have passed are dropped
        w1.next_task(1, 0.0)
        assert len(w1._cache) <= 2
    assert sorted(drawn) == list(range(chunks))
    w2 = make(drivers=3, jobs=chunks * G.MAX_JOBS_PER_CHUNK)
    for j in range(0, chunks * G.MAX_JOBS_PER_CHUNK, 997):
        w2.job(j, j % 3, 0.0)
        assert len(w2._cache) <= G.CACHE_CHUNKS


def test_workload_attributes_come_from_the_spec():
    w = make(drivers=4, jobs=12, arrival="poisson", in_flight=3, rate_per_s=5,
             functions=[{"name": "x"}, {"name": "y"}])
    assert (w.n_drivers, w.total_jobs, w.arrival, w.in_flight) == (4, 12, "poisson", 3)
    assert w.functions == ("x", "y")
    assert make().functions == ("task",)


def test_memory_is_flat_in_the_number_of_jobs():
    """Jobs are streamed: generating many chunks holds no more than generating one."""
    from testbed.workloads.generator import CACHE_CHUNKS, MAX_JOBS_PER_CHUNK
    w = make(jobs=10_000_000)
    tracemalloc.start()
    try:
        for _ in range((CACHE_CHUNKS + 1) * MAX_JOBS_PER_CHUNK):   # the cache full of traced chunks
            w.next_job(0, 0.0)
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(60_000):
            w.next_job(0, 0.0)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 256 * 1024


# --- DAG shapes ------------------------------------------------------------------------

def deps_of(**table):
    w = make(jobs=2, **table)
    job = w.next_job(0, 0.0)
    assert [t.index for t in job.tasks] == list(range(len(job.tasks)))
    assert len(job.tasks) == w.tasks_per_job
    return [t.deps for t in job.tasks]


def test_independent_jobs_are_one_task():
    assert deps_of(shape="independent") == [()]


def test_chains_depend_on_the_previous_task():
    assert deps_of(shape="chains", chain_length=4) == [(), (0,), (1,), (2,)]
    assert deps_of(shape="chains", chain_length=1) == [()]


def test_map_reduce_reduces_take_every_map():
    assert deps_of(shape="map_reduce", map_tasks=3, reduce_tasks=2) == [
        (), (), (), (0, 1, 2), (0, 1, 2)]


def test_tree_reduce_combines_by_fanin_with_a_smaller_last_group():
    assert deps_of(shape="tree_reduce", tree_leaves=5, tree_fanin=2) == [
        (), (), (), (), (), (0, 1), (2, 3), (4,), (5, 6), (7,), (8, 9)]
    assert deps_of(shape="tree_reduce", tree_leaves=1) == [()]


@pytest.mark.parametrize("leaves,fanin", [(16, 2), (16, 4), (7, 3), (100, 10)])
def test_tree_reduce_is_a_tree_with_one_root(leaves, fanin):
    deps = deps_of(shape="tree_reduce", tree_leaves=leaves, tree_fanin=fanin)
    assert all(d == () for d in deps[:leaves])
    consumers = [0] * len(deps)
    for i, d in enumerate(deps[leaves:], start=leaves):
        assert 1 <= len(d) <= fanin and all(x < i for x in d)
        for x in d:
            consumers[x] += 1
    assert consumers[:-1] == [1] * (len(deps) - 1)  # every task but the root feeds one
    assert consumers[-1] == 0


# --- distributions ---------------------------------------------------------------------

DISTS = [
    ({"dist": "constant", "value": 2.5}, 2.5),
    ({"dist": "uniform", "low": 1.0, "high": 3.0}, 2.0),
    ({"dist": "exponential", "mean": 0.1}, 0.1),
    ({"dist": "lognormal", "mean": 0.05, "sigma": 1.0}, 0.05),
    ({"dist": "pareto", "alpha": 3.0, "min": 2.0}, 3.0),
    ({"dist": "pareto", "alpha": 2.5, "mean": 0.1}, 0.1),      # by its mean: min = 0.06
    ({"dist": "mixture", "components": [
        {"weight": 9, "dist": "constant", "value": 0.01},
        {"weight": 1, "dist": "exponential", "mean": 1.0}]}, 0.109),
]


@pytest.mark.parametrize("table,mean", DISTS, ids=[t["dist"] for t, _ in DISTS])
def test_distribution_mean_is_exact_and_matches_samples(table, mean):
    d = parse_distribution(table, "d")
    assert d.mean() == pytest.approx(mean, rel=1e-12)
    x = d.sample(np.random.default_rng(1), 200_000)
    assert x.shape == (200_000,) and np.all(x >= 0)
    assert abs(x.mean() - mean) / mean < 0.02
    assert parse_distribution(d.to_dict(), "d") == d


def test_every_registered_distribution_is_covered():
    assert set(DISTRIBUTIONS) == {t["dist"] for t, _ in DISTS}


def test_mixture_is_bimodal():
    d = parse_distribution({"dist": "mixture", "components": [
        {"weight": 0.9, "dist": "constant", "value": 0.01},
        {"weight": 0.1, "dist": "constant", "value": 1.0}]}, "d")
    x = d.sample(np.random.default_rng(2), 100_000)
    assert set(np.unique(x)) == {0.01, 1.0}
    assert np.mean(x == 0.01) == pytest.approx(0.9, abs=0.005)


def test_output_sizes_are_non_negative_ints():
    w = make(jobs=100, output_bytes={"dist": "exponential", "mean": 1000.5})
    sizes = [j.tasks[0].output_bytes for j in drain(w)]
    assert all(type(s) is int and s >= 0 for s in sizes)
    assert len(set(sizes)) > 50


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["lognormal", "pareto"]),
       scale=st.floats(1e-9, 1e9),
       shape=st.floats(0.0, 1.0))
def test_valid_heavy_tailed_params_give_finite_non_negative_samples(kind, scale, shape):
    if kind == "lognormal":
        table = {"dist": "lognormal", "mean": scale, "sigma": 10.0 * shape}
    else:
        table = {"dist": "pareto", "min": scale, "alpha": 1.0 + 1e-6 + 20.0 * shape}
    d = parse_distribution(table, "d")
    x = d.sample(np.random.default_rng(0), 2000)
    assert np.all(np.isfinite(x)) and np.all(x >= 0)
    assert math.isfinite(d.mean()) and d.mean() > 0


# --- functions and regime shifts ---------------------------------------------------------

def test_functions_are_drawn_by_weight_with_their_own_parameters():
    w = make(jobs=20_000, functions=[
        {"name": "fast", "weight": 3.0, "duration": {"dist": "constant", "value": 0.01}},
        {"name": "slow", "resources": {"GPU": 1, "CPU": 0},
         "output_bytes": {"dist": "constant", "value": 7}}],
        duration={"dist": "constant", "value": 2.0})
    tasks = [j.tasks[0] for j in drain(w)]
    fast = [t for t in tasks if t.function == "fast"]
    slow = [t for t in tasks if t.function == "slow"]
    assert len(fast) / len(tasks) == pytest.approx(0.75, abs=0.015)
    assert {t.duration_s for t in fast} == {0.01} and {t.duration_s for t in slow} == {2.0}
    assert {t.output_bytes for t in fast} == {0} and {t.output_bytes for t in slow} == {7}
    assert fast[0].resources == {"CPU": 1.0} and slow[0].resources == {"GPU": 1.0}
    assert w.mean_duration("fast", 0.0) == 0.01
    assert w.mean_duration(None, 0.0) == pytest.approx(0.75 * 0.01 + 0.25 * 2.0)


def test_shift_after_jobs_scales_durations_with_common_random_numbers():
    base = drain(make(5, jobs=400))
    w = make(5, jobs=400, shift={"after_jobs": 150, "scale": 4.0})
    assert w.mean_duration(None, 1e9) == pytest.approx(0.1)
    shifted = []
    for _ in range(400):
        shifted.append(w.next_job(0, 0.0))
        if w.jobs_generated == 149:
            assert w.mean_duration("task", 0.0) == pytest.approx(0.1)
        if w.jobs_generated == 150:
            assert w.mean_duration("task", 0.0) == pytest.approx(0.4)
    for b, s in zip(base, shifted):
        factor = 4.0 if s.job_id >= 150 else 1.0
        assert s.tasks[0].duration_s == pytest.approx(b.tasks[0].duration_s * factor)


def test_shift_at_s_switches_to_the_functions_after_shift_distribution():
    w = make(jobs=4000, shift={"at_s": 10.0, "scale": 2.0}, functions=[
        {"name": "f", "duration": {"dist": "constant", "value": 0.1},
         "duration_after_shift": {"dist": "constant", "value": 3.0}},
        {"name": "g", "duration": {"dist": "constant", "value": 1.0}}])
    assert w.mean_duration("f", 9.99) == 0.1 and w.mean_duration("f", 10.0) == 3.0
    assert w.mean_duration("g", 9.99) == 1.0 and w.mean_duration("g", 10.0) == 2.0
    assert w.mean_duration(None, 0.0) == pytest.approx(0.55)
    assert w.mean_duration(None, 20.0) == pytest.approx(2.5)
    before = {(t.function, t.duration_s) for j in (w.next_job(0, 5.0) for _ in range(100)) for t in j.tasks}
    after = {(t.function, t.duration_s) for j in (w.next_job(0, 10.0) for _ in range(100)) for t in j.tasks}
    assert before == {("f", 0.1), ("g", 1.0)}
    assert after == {("f", 3.0), ("g", 2.0)}
    with pytest.raises(KeyError, match="unknown function"):
        w.mean_duration("nope", 0.0)


# --- arrivals --------------------------------------------------------------------------

def test_poisson_gaps_have_mean_one_over_rate_per_driver_stream():
    w = make(arrival="poisson", rate_per_s=50.0, drivers=2)
    gaps = np.array([w.next_arrival_gap(0) for _ in range(20_000)])
    assert np.all(gaps > 0)
    assert abs(gaps.mean() - 0.02) / 0.02 < 0.03
    # driver 1's gaps do not depend on how many gaps driver 0 drew
    other = make(arrival="poisson", rate_per_s=50.0, drivers=2)
    assert [w.next_arrival_gap(1) for _ in range(600)] == [other.next_arrival_gap(1) for _ in range(600)]
    assert w.next_arrival_gap(0) != w.next_arrival_gap(1)


def test_closed_workloads_have_no_arrival_gaps():
    with pytest.raises(RuntimeError, match="poisson"):
        make().next_arrival_gap(0)


# --- the spec --------------------------------------------------------------------------

def test_defaults_are_filled_and_to_dict_round_trips():
    spec = parse_workload({})
    d = spec.to_dict()
    assert d["shape"] == "independent" and d["jobs"] == 1000 and d["arrival"] == "closed"
    assert d["duration"] == {"dist": "exponential", "mean": 0.1}
    assert d["functions"][0]["name"] == "task" and "shift" not in d
    assert parse_workload(d) == spec
    full = parse_workload(dict(MIXED, shift={"at_s": 3, "scale": 2}, driver_nodes=[0, 1], drivers=2))
    fd = full.to_dict()
    assert fd["shift"] == {"at_s": 3.0, "scale": 2.0}
    assert parse_workload(fd) == full

    def no_none(x):
        if isinstance(x, dict):
            return all(no_none(v) for v in x.values())
        if isinstance(x, list):
            return all(no_none(v) for v in x)
        return x is not None
    assert no_none(fd)


BAD = [
    ({"bogus": 1}, "workload.bogus", "unknown key"),
    ({"jobs": "10"}, "workload.jobs", "expected an integer"),
    ({"jobs": True}, "workload.jobs", "boolean"),
    ({"jobs": 0}, "workload.jobs", "in 1..1,000,000,000"),
    ({"shape": "star"}, "workload.shape", "one of"),
    ({"tree_fanin": 1}, "workload.tree_fanin", ">= 2"),
    ({"duration": {"dist": "exponential", "mean": -1}}, "workload.duration.mean", "> 0"),
    ({"duration": {"dist": "pareto", "alpha": 1, "min": 1}}, "workload.duration.alpha", "> 1"),
    ({"duration": {"dist": "gamma"}}, "workload.duration.dist", "one of"),
    ({"duration": {"mean": 1}}, "workload.duration.dist", "required"),
    ({"duration": {"dist": "uniform", "low": 2, "high": 1}}, "workload.duration.high", ">= low"),
    ({"output_bytes": {"dist": "constant", "value": 1, "x": 2}}, "workload.output_bytes.x", "unknown key"),
    ({"duration": {"dist": "mixture", "components": [
        {"weight": 1, "dist": "constant", "value": 1},
        {"weight": 1, "dist": "exponential", "mean": 0}]}},
     "workload.duration.components[1].mean", "> 0"),
    ({"duration": {"dist": "mixture", "components": [{"dist": "constant", "value": 1}]}},
     "workload.duration.components[0].weight", "required"),
    ({"resources": {"CPU": -1}}, "workload.resources.CPU", ">= 0"),
    ({"drivers": 2, "driver_nodes": [0]}, "workload.driver_nodes", "one node per driver"),
    ({"shift": {"at_s": 1.0, "after_jobs": 5}}, "workload.shift", "exactly one"),
    ({"shift": {"scale": 2.0}}, "workload.shift", "exactly one"),
    ({"shift": {"after_jobs": 5, "scale": 0}}, "workload.shift.scale", "> 0"),
    ({"functions": [{"name": "f"}, {"name": "f"}]}, "workload.functions[1].name", "duplicate"),
    ({"functions": [{"weight": 1.0}]}, "workload.functions[0].name", "required"),
    ({"functions": [{"name": "f", "weight": 0}]}, "workload.functions[0].weight", "> 0"),
    ({"functions": [{"name": "f", "speed": 2}]}, "workload.functions[0].speed", "unknown key"),
    ({"functions": [{"name": "f", "duration_after_shift": {"dist": "constant", "value": 1}}]},
     "workload.functions[0].duration_after_shift", "shift"),
    ({"duration": {"dist": "pareto", "alpha": 2, "min": 1, "mean": 2}}, "workload.duration", "not both"),
    ({"duration": {"dist": "pareto", "alpha": 2}}, "workload.duration", "exactly one of min or mean"),
    ({"drift": {"per_s": -0.1}}, "workload.drift.per_s", "kind = \"exp\""),
    ({"drift": {"per_s": 0.1, "kind": "log"}}, "workload.drift.kind", "one of"),
    ({"drift": {"kind": "exp"}}, "workload.drift.per_s", "required"),
    ({"functions": [{"name": "f", "drift": {"per_s": 1, "rate": 2}}]}, "workload.functions[0].drift.rate",
     "unknown key"),
    ({"trace_file": "x.csv"}, "workload.trace_file", "shape = \"trace\""),
    ({"shape": "trace"}, "workload.trace_file", "required"),
    ({"arrival": "trace"}, "workload.arrival", "shape = \"trace\""),
]


@pytest.mark.parametrize("table,key,rule", BAD, ids=[k for _, k, _ in BAD])
def test_invalid_tables_fail_naming_the_key_and_the_rule(table, key, rule):
    with pytest.raises(ConfigError) as info:
        parse_workload(table)
    assert info.value.key == key
    assert str(info.value).startswith(key + ":")
    assert rule in str(info.value)


def test_next_task_fast_path_gives_the_same_draws_as_next_job():
    """Engines may take single-task jobs through next_task; it must hand out exactly what
    next_job would: the same functions, durations (regime included), resources and sizes."""
    table = dict(jobs=9000, functions=[
        {"name": "a", "weight": 3, "duration": {"dist": "exponential", "mean": 0.1},
         "output_bytes": {"dist": "uniform", "low": 0, "high": 1e6}},
        {"name": "b", "weight": 1, "duration": {"dist": "lognormal", "mean": 1.0, "sigma": 1.0},
         "resources": {"CPU": 2.0}}],
        shift={"after_jobs": 4500, "scale": 10.0})
    slow, fast = make(seed=3, **table), make(seed=3, **table)
    while True:
        job = slow.next_job(0, 0.0)
        t = fast.next_task(0, 0.0)
        if job is None:
            assert t is None
            break
        spec = job.tasks[0]
        assert t == (job.job_id, spec.function, spec.duration_s, spec.resources, spec.output_bytes)


# --- drift -----------------------------------------------------------------------------

DRIFTING = dict(jobs=400, functions=[
    {"name": "a", "duration": {"dist": "exponential", "mean": 0.1}, "drift": {"per_s": 0.5, "kind": "linear"}},
    {"name": "b", "duration": {"dist": "lognormal", "mean": 1.0, "sigma": 0.5},
     "drift": {"per_s": -0.2, "kind": "exp"}},
    {"name": "c", "duration": {"dist": "constant", "value": 0.3}}])


def test_drift_scales_each_functions_draws_by_its_factor_at_submission():
    """Drift multiplies the draw a task would have without it by the function's factor at its
    submission time (linear 1 + r t, exp e^(r t); none for c): the draws stay common, so
    two estimators compared on a drifting workload see the same tasks."""
    plain = dict(DRIFTING, functions=[{k: v for k, v in f.items() if k != "drift"} for f in DRIFTING["functions"]])
    w, ref = make(5, **DRIFTING), make(5, **plain)
    factor = {"a": lambda t: 1 + 0.5 * t, "b": lambda t: math.exp(-0.2 * t), "c": lambda t: 1.0}
    for i in range(400):
        now = 0.05 * i
        got, want = w.next_job(0, now).tasks[0], ref.next_job(0, now).tasks[0]
        assert got.function == want.function
        assert got.duration_s == pytest.approx(want.duration_s * factor[got.function](now), rel=1e-12)
    # the Oracle's truth drifts with them
    for f, base in (("a", 0.1), ("b", 1.0), ("c", 0.3)):
        assert w.mean_duration(f, 4.0) == pytest.approx(base * factor[f](4.0), rel=1e-12)
    assert w.mean_duration(None, 4.0) == pytest.approx((0.1 * 3 + math.exp(-0.8) + 0.3) / 3, rel=1e-12)


def test_workload_drift_is_every_functions_default_and_applies_to_dags():
    """workload.drift holds for every function that sets none, in multi-task jobs too, and
    next_task hands out exactly what next_job does."""
    table = dict(shape="chains", chain_length=3, jobs=50, drift={"per_s": 1.0, "kind": "exp"})
    w, ref = make(2, **table), make(2, **{k: v for k, v in table.items() if k != "drift"})
    job, plain = w.next_job(0, 2.0), ref.next_job(0, 2.0)
    assert [t.duration_s for t in job.tasks] == pytest.approx([t.duration_s * math.exp(2.0) for t in plain.tasks])
    single = dict(jobs=50, drift={"per_s": 0.1})
    slow, fast = make(1, **single), make(1, **single)
    for i in range(50):
        spec = slow.next_job(0, float(i)).tasks[0]
        assert fast.next_task(0, float(i))[2] == spec.duration_s
    assert parse_workload(parse_workload(table).to_dict()) == parse_workload(table)


# --- trace files -------------------------------------------------------------------------

TRACE = """\
# a comment line
arrival_s,function,duration_s,cpus,output_bytes
0.0,map,0.25,1,1000
0.5,reduce,1.5,2,0

1.25,map,0.75,1,3000.4
2.0,map,0.5,0,10
"""


def trace_table(tmp_path, text=TRACE, **extra):
    path = tmp_path / "t.csv"
    path.write_text(text)
    return dict({"shape": "trace", "trace_file": str(path)}, **extra)


def test_trace_rows_are_replayed_as_jobs_in_file_order(tmp_path):
    """Job j is the file's j-th row: its function, duration, CPUs and output size (missing
    columns at their defaults); the functions are the file's, weighted by their rows, each
    with its mean duration (the Oracle's truth)."""
    spec = parse_workload(trace_table(tmp_path))
    assert spec.jobs == 4                         # min(jobs = 1000, rows)
    w = Workload(spec, 0)
    assert w.functions == ("map", "reduce")
    tasks = [job.tasks[0] for job in drain(w)]
    assert [(t.function, t.duration_s, t.resources, t.output_bytes) for t in tasks] == [
        ("map", 0.25, {"CPU": 1.0}, 1000), ("reduce", 1.5, {"CPU": 2.0}, 0),
        ("map", 0.75, {"CPU": 1.0}, 3000), ("map", 0.5, {}, 10)]
    assert w.mean_duration("map", 0.0) == pytest.approx(0.5)
    assert w.mean_duration(None, 0.0) == pytest.approx(0.75)
    assert [f.weight for f in spec.functions] == [3.0, 1.0]
    fast = Workload(spec, 0)
    assert [fast.next_task(0, 0.0)[1:] for _ in range(4)] == [
        (t.function, t.duration_s, t.resources, t.output_bytes) for t in tasks]
    assert Workload(parse_workload(trace_table(tmp_path, jobs=2)), 0).total_jobs == 2
    # the resolved table leaves out what the file gives, and parses to the same spec
    d = spec.to_dict()
    assert not {"functions", "duration", "output_bytes", "resources"} & set(d)
    assert parse_workload(d) == spec


def test_trace_arrivals_submit_each_job_at_its_rows_time_whatever_the_drivers(tmp_path):
    """arrival = "trace": the running sum of driver d's gaps is the arrival time of each of its
    jobs d, d + D, ..."""
    for drivers in (1, 2, 3):
        w = Workload(parse_workload(trace_table(tmp_path, arrival="trace", drivers=drivers)), 0)
        for d in range(drivers):
            t, times = 0.0, []
            for _ in w.driver_jobs(d):
                t += w.next_arrival_gap(d)
                times.append(t)
            assert times == pytest.approx([[0.0, 0.5, 1.25, 2.0][j] for j in w.driver_jobs(d)])


def test_a_trace_with_shift_and_drift_scales_its_durations(tmp_path):
    w = Workload(parse_workload(trace_table(tmp_path, shift={"at_s": 1.0, "scale": 2.0},
                                            drift={"per_s": 0.5})), 0)
    assert [w.next_task(0, now)[2] for now in (0.0, 0.5, 1.0, 2.0)] == pytest.approx(
        [0.25, 1.5 * 1.25, 0.75 * 2 * 1.5, 0.5 * 2 * 2.0])


def test_a_trace_file_is_read_again_when_it_changes(tmp_path):
    table = trace_table(tmp_path)
    assert parse_workload(table).jobs == 4
    path = tmp_path / "t.csv"
    path.write_text(TRACE + "3.0,map,0.1,1,0\n")
    assert parse_workload(table).jobs == 5


BAD_TRACES = [
    ("arrival_s,function,duration_s,memory\n0,a,1,2\n", "line 1, column memory", "unknown column"),
    ("arrival_s,function\n0,a\n", "line 1, column duration_s", "missing"),
    ("arrival_s,function,duration_s,duration_s\n", "line 1, column duration_s", "twice"),
    ("arrival_s,function,duration_s\n0,a,1\n0,a\n", "line 3", "expected 3 fields"),
    ("arrival_s,function,duration_s\n0,a,fast\n", "line 2, column duration_s", "expected a number"),
    ("arrival_s,function,duration_s,cpus\n0,a,1,-1\n", "line 2, column cpus", ">= 0"),
    ("arrival_s,function,duration_s\n0,a,nan\n", "line 2, column duration_s", "finite"),
    ("arrival_s,function,duration_s\n2,a,1\n# late\n1,a,1\n", "line 4, column arrival_s", "sort"),
    ("arrival_s,function,duration_s\n0,,1\n", "line 2, column function", "non-empty"),
    ("arrival_s,function,duration_s\n", "line 1", "no rows"),
    ("", "", "empty trace file"),
]


@pytest.mark.parametrize("text,where,what", BAD_TRACES, ids=[w or "empty" for _, w, _ in BAD_TRACES])
def test_a_bad_trace_file_is_one_error_naming_file_line_and_column(tmp_path, text, where, what):
    table = trace_table(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        parse_workload(table)
    msg = str(info.value)
    assert "\n" not in msg and info.value.key == "workload.trace_file"
    assert f"{tmp_path / 't.csv'}: {where}" in msg and what in msg


def test_a_missing_trace_file_is_named():
    with pytest.raises(ConfigError, match="workload.trace_file: /no/such.csv: no such trace file"):
        parse_workload({"shape": "trace", "trace_file": "/no/such.csv"})


def test_make_trace_is_deterministic_and_wrote_the_shipped_trace(tmp_path):
    """The documented command regenerates experiments/traces/synthetic.csv byte for byte;
    another seed gives another trace; the file parses with the mix the docstring states."""
    from pathlib import Path

    from testbed.workloads import make_trace
    shipped = Path(__file__).resolve().parents[1] / "experiments" / "traces" / "synthetic.csv"
    out = tmp_path / "a.csv"
    assert make_trace.main(["--rows", "3000", "--seed", "0", "--out", str(out)]) == 0
    assert out.read_bytes() == shipped.read_bytes()
    assert make_trace.main(["--rows", "3000", "--seed", "1", "--out", str(tmp_path / "b.csv")]) == 0
    assert (tmp_path / "b.csv").read_bytes() != out.read_bytes()
    w = Workload(parse_workload(trace_table(tmp_path, out.read_text(), arrival="trace", jobs=3000)), 0)
    assert w.total_jobs == 3000 and set(w.functions) == {"serve", "etl", "train", "shuffle"}
    counts = w.spec.trace.counts()
    assert counts["serve"] > counts["etl"] > counts["shuffle"] > counts["train"]
    assert w.mean_duration("train", 0.0) == pytest.approx(0.4, rel=0.25)
    assert w.spec.trace.arrival_s[-1] == pytest.approx(30.0, rel=0.1)       # ~100 arrivals/s
    assert make_trace.main(["--rows", "0", "--out", str(tmp_path / "c.csv")]) == 2
    assert not (tmp_path / "c.csv").exists()
