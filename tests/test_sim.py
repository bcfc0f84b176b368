"""The SimPy cluster model: each test states one rule of the engine and checks it on the Trace.

Configs are plain dicts resolved like a TOML file; constant durations are used wherever an
exact time is expected. Where a test needs its own policy or workload, it builds the
:class:`~testbed.sim.Simulation` directly (as ``make_simulation`` does).
"""
from __future__ import annotations

import gc
import math

import numpy as np
import pandas as pd
import pytest

from testbed.core import trace as trace_module
from testbed.core.trace import metrics_from_trace
from testbed.policy.base import Placement, PlacementPolicy, SpilloverPolicy
from testbed.sim import Simulation
from testbed.sim import engine as engine_module
from testbed.sim.kernel import Kernel
from testbed.studies.execute import make_simulation
from testbed.policy.build import build_policies
from testbed.studies.experiment import resolve
from testbed.workloads import Workload, parse_workload
from testbed.workloads.generator import job_deps

#: cluster overheads switched off, for exact arithmetic on times
NO_OVERHEADS = {"latency_s": 0.0, "gcs_write_s": 0.0, "gcs_read_s": 0.0, "local_decision_s": 0.0}
TPU_TASK = {"CPU": 1.0, "TPU": 1.0}
GPU_TASK = {"CPU": 1.0, "GPU": 1.0}
SHAPE_PARAMS = {"chain_length": 5, "map_tasks": 4, "reduce_tasks": 2, "tree_leaves": 7, "tree_fanin": 3}


def const(x: float) -> dict:
    return {"dist": "constant", "value": x}


def config(cluster=None, workload=None, scheduler=None, **run) -> dict:
    return resolve({"cluster": cluster or {}, "workload": workload or {}, "scheduler": scheduler or {},
                    "run": {"trace": "rows", **run}})


def simulate(cluster=None, workload=None, scheduler=None, *, seed=0, keep_rows=True, **run):
    """(simulation, result) of one run of the given config sections."""
    sim = make_simulation(config(cluster, workload, scheduler, **run), seed=seed, keep_rows=keep_rows)
    return sim, sim.run()


def build(cfg, *, seed=0, keep_rows=True, placement=None, spillover=None, workload_cls=Workload):
    """A Simulation as make_simulation builds it, with optional own policy objects / workload class."""
    pl, sp = build_policies(cfg["scheduler"])
    if placement is not None:
        placement.bind_estimators(pl.task_time, pl.bandwidth)
        pl = placement
    workload = workload_cls(parse_workload(cfg["workload"]), seed)
    return Simulation(cfg["cluster"], workload, pl, spillover or sp, seed=seed, keep_rows=keep_rows,
                      validate=cfg["run"]["validate"], max_sim_time_s=cfg["run"]["max_sim_time_s"],
                      decide_at=cfg["scheduler"]["decide_at"])


def index_in_job(tr: pd.DataFrame) -> pd.Series:
    """Each row's task index within its job (task ids are consecutive within a job)."""
    return tr.task_id - tr.groupby("job_id").task_id.transform("min")


def assert_same_metrics(got: dict, want: dict, rel: float = 0.0) -> None:
    """Equal keys and values (NaN equals NaN), within ``rel`` relative tolerance."""
    assert got.keys() == want.keys()
    for k, v in want.items():
        if isinstance(v, float) and math.isnan(v):
            assert math.isnan(got[k]), k
        else:
            assert got[k] == pytest.approx(v, rel=rel, abs=0), k


def max_concurrent(starts, ends) -> int:
    """Most [start, end) intervals open at once (an end at t comes before a start at t)."""
    events = sorted([(e, -1) for e in ends] + [(s, +1) for s in starts])
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


# --- determinism ----------------------------------------------------------------------

DETERMINISM_CASES = {
    "poisson_spills": (
        {"nodes": 4, "cpus_per_node": 2},
        {"arrival": "poisson", "rate_per_s": 40.0, "drivers": 2, "jobs": 600},
        {"spillover": {"name": "QueueThreshold", "threshold": 1}}),
    "chains": (
        {"nodes": 3, "cpus_per_node": 2},
        {"shape": "chains", "chain_length": 5, "jobs": 60, "drivers": 2, "in_flight": 3,
         "output_bytes": {"dist": "exponential", "mean": 1e6}},
        {"spillover": {"name": "QueueThreshold", "threshold": 1}}),
    "map_reduce": (
        {"nodes": 4, "cpus_per_node": 2},
        {"shape": "map_reduce", "map_tasks": 4, "reduce_tasks": 2, "jobs": 60, "in_flight": 2,
         "output_bytes": {"dist": "lognormal", "mean": 1e6, "sigma": 1.0}},
        {"placement": "Random", "spillover": {"name": "QueueThreshold", "threshold": 0}}),
}


@pytest.mark.parametrize("case", DETERMINISM_CASES)
def test_same_config_and_seed_give_the_same_trace(case):
    """Same config + same seed -> an identical Trace; another seed -> a different one."""
    cluster, workload, scheduler = DETERMINISM_CASES[case]
    _, a = simulate(cluster, workload, scheduler, seed=3)
    _, b = simulate(cluster, workload, scheduler, seed=3)
    _, c = simulate(cluster, workload, scheduler, seed=4)
    assert a.info["complete"] and len(a.trace) > 0
    assert a.trace.spilled.any()            # the runs exercise the global scheduler
    if case == "poisson_spills":
        assert not a.trace.spilled.all()    # ... and the local one
    assert a.trace.equals(b.trace)
    assert_same_metrics(a.metrics, b.metrics)
    assert not a.trace.equals(c.trace)


# --- conservation and causality -------------------------------------------------------

@pytest.mark.parametrize("shape", ["independent", "chains", "map_reduce", "tree_reduce"])
def test_every_task_finishes_exactly_once_after_its_inputs(shape):
    """Without faults every task finishes once; times are ordered submitted <= placed <=
    started <= finished, and no task starts before all its dependencies have finished."""
    workload = {"shape": shape, "jobs": 40, "drivers": 2, "in_flight": 3, **SHAPE_PARAMS,
                "output_bytes": {"dist": "exponential", "mean": 1e5}}
    sim, res = simulate({"nodes": 4, "cpus_per_node": 2}, workload,
                        {"spillover": {"name": "QueueThreshold", "threshold": 1}})
    tr = res.trace
    per_job = sim.workload.tasks_per_job
    assert res.info["complete"] and not res.info["stuck"]
    assert tr.task_id.is_unique
    assert len(tr) == 40 * per_job
    assert (tr.state == "finished").all()
    assert tr.groupby("job_id").size().eq(per_job).all()
    assert (tr.placed_s >= tr.submitted_s).all()
    assert (tr.started_s >= tr.placed_s).all()
    assert (tr.finished_s >= tr.started_s).all()
    assert res.metrics["finished"] == len(tr)

    deps = job_deps(parse_workload(config(workload=workload)["workload"]))
    assert len(deps) == per_job
    tr = tr.assign(idx=index_in_job(tr)).set_index(["job_id", "idx"]).sort_index()
    assert set(tr.index.get_level_values("idx")) == set(range(per_job))
    checked = 0
    for (job, i), row in tr.iterrows():
        for d in deps[i]:
            assert row.started_s >= tr.loc[(job, d), "finished_s"], (job, i, d)
            checked += 1
    assert checked == 40 * sum(len(d) for d in deps)


# --- exact timing ---------------------------------------------------------------------

def test_one_cpu_closed_loop_runs_tasks_back_to_back():
    """One node, one CPU, one job in flight, no overheads: task k finishes at 0.1 * (k + 1)."""
    _, res = simulate({"nodes": 1, "cpus_per_node": 1, **NO_OVERHEADS},
                      {"jobs": 6, "in_flight": 1, "duration": const(0.1)})
    tr = res.trace.sort_values("task_id")
    expected = 0.1 * np.arange(1, 7)
    np.testing.assert_allclose(tr.finished_s, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tr.started_s, expected - 0.1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tr.submitted_s, tr.started_s, rtol=0, atol=0)
    assert res.info["sim_end_s"] == pytest.approx(0.6, abs=1e-12)


def test_two_cpus_two_in_flight_run_two_at_a_time():
    """Two CPUs, two jobs in flight: tasks run in pairs, pair k finishing at 0.1 * (k + 1)."""
    _, res = simulate({"nodes": 1, "cpus_per_node": 2, **NO_OVERHEADS},
                      {"jobs": 6, "in_flight": 2, "duration": const(0.1)})
    tr = res.trace.sort_values("task_id")
    expected = 0.1 * np.repeat(np.arange(1, 4), 2)
    np.testing.assert_allclose(tr.finished_s, expected, rtol=0, atol=1e-12)
    assert max_concurrent(tr.started_s, tr.finished_s) == 2


@pytest.mark.parametrize("ret", [0.0, 0.002])
def test_a_closed_loop_submits_after_the_finish_has_dispatched(ret):
    """A closed-loop driver submits its next job when it sees the last result, so its local
    scheduler sees the node after the finish freed the slot and started the queued task (as
    the runtime's driver, whose submission follows its get). One CPU, two jobs in flight: one
    runs and one waits, so each new job meets an empty queue and stays (QueueThreshold 1);
    deciding before that dispatch saw the waiting one and forwarded every job after the first
    two."""
    _, res = simulate({"nodes": 2, "cpus_per_node": 1, **NO_OVERHEADS, "result_return_s": ret},
                      {"jobs": 12, "in_flight": 2, "driver_nodes": [0],
                       "duration": const(0.1)},
                      {"spillover": {"name": "QueueThreshold", "threshold": 1}})
    tr = res.trace
    assert res.info["complete"] and len(tr) == 12
    assert not tr.spilled.any() and (tr.node == 0).all()


@pytest.mark.parametrize("critical", [True, False])
def test_local_decision_and_gcs_writes_add_exact_delays(critical):
    """local_decision_s delays each placement; with gcs_on_critical_path a task starts only once
    its task-table write is acknowledged and the driver sees the result only once the
    object-table write is: one cycle = decision + write + duration + write."""
    dur, decide, write = 0.1, 0.01, 0.002
    _, res = simulate({"nodes": 1, "cpus_per_node": 1, **NO_OVERHEADS, "local_decision_s": decide,
                       "gcs_write_s": write, "gcs_on_critical_path": critical},
                      {"jobs": 5, "in_flight": 1, "duration": const(dur)})
    tr = res.trace.sort_values("task_id")
    gcs = write if critical else 0.0
    cycle = decide + gcs + dur + gcs
    k = np.arange(5)
    np.testing.assert_allclose(tr.submitted_s, k * cycle, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tr.placed_s, k * cycle + decide, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tr.started_s, k * cycle + decide + gcs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tr.finished_s, k * cycle + decide + gcs + dur, rtol=0, atol=1e-12)
    assert res.info["gcs_ops"] == 2 * 5       # one task-table and one object-table write per task


# --- resources ------------------------------------------------------------------------

@pytest.mark.parametrize("cpu_demand, cpus, most", [(1.0, 2, 2), (0.5, 2, 4)])
def test_never_more_tasks_running_on_a_node_than_fit(cpu_demand, cpus, most):
    """At no instant does a node run more tasks than its CPUs can hold (sweep of trace intervals)."""
    _, res = simulate({"nodes": 3, "cpus_per_node": cpus},
                      {"shape": "map_reduce", "map_tasks": 6, "reduce_tasks": 2, "jobs": 60,
                       "drivers": 2, "in_flight": 4, "resources": {"CPU": cpu_demand}},
                      {"spillover": {"name": "QueueThreshold", "threshold": 2}})
    tr = res.trace
    assert res.info["complete"]
    peaks = {m: max_concurrent(g.started_s, g.finished_s) for m, g in tr.groupby("node")}
    assert max(peaks.values()) == most          # reached: the check is not vacuous
    assert all(p <= most for p in peaks.values())


def test_gpu_tasks_run_only_on_gpu_nodes():
    """A task demanding a GPU runs only on a node that has one, and never more at once than its GPUs."""
    _, res = simulate({"node_groups": [{"count": 3, "cpus": 2}, {"count": 1, "cpus": 2, "gpus": 1}]},
                      {"jobs": 300, "drivers": 2, "in_flight": 4,
                       "functions": [{"name": "cpu", "weight": 3.0}, {"name": "gpu", "resources": GPU_TASK}]},
                      {"spillover": {"name": "QueueThreshold", "threshold": 2}})
    tr = res.trace
    assert res.info["complete"] and (tr.state == "finished").all()
    gpu = tr[tr.function == "gpu"]
    assert len(gpu) > 30
    assert set(gpu.node) == {3}
    assert max_concurrent(gpu.started_s, gpu.finished_s) == 1
    on3 = tr[tr.node == 3]
    assert max_concurrent(on3.started_s, on3.finished_s) <= 2


# --- infeasible tasks -----------------------------------------------------------------

MIXED_FUNCTIONS = [{"name": "ok", "weight": 3.0}, {"name": "tpu", "resources": TPU_TASK}]


@pytest.mark.timeout(30)
def test_infeasible_tasks_are_recorded_and_the_run_ends():
    """A task no node can hold is recorded "infeasible" (never placed); the others finish and the run completes."""
    _, res = simulate({"nodes": 3}, {"jobs": 300, "in_flight": 4, "drivers": 2, "functions": MIXED_FUNCTIONS})
    tr = res.trace
    assert res.info["complete"] and not res.info["stuck"]
    assert len(tr) == 300 and tr.task_id.is_unique
    tpu, ok = tr[tr.function == "tpu"], tr[tr.function == "ok"]
    assert len(tpu) > 20 and len(ok) > 100
    assert (tpu.state == "infeasible").all() and (tpu.node == -1).all()
    assert tpu.placed_s.isna().all() and tpu.started_s.isna().all()
    assert (ok.state == "finished").all()
    assert res.metrics["infeasible"] == len(tpu) and res.metrics["finished"] == len(ok)


@pytest.mark.timeout(30)
def test_infeasible_task_in_a_chain_fails_its_dependents():
    """In a chain, the tasks before an infeasible one finish, it is "infeasible", every later one "failed"."""
    L = 4
    _, res = simulate({"nodes": 3}, {"shape": "chains", "chain_length": L, "jobs": 80, "in_flight": 3,
                                     "functions": MIXED_FUNCTIONS})
    tr = res.trace
    assert res.info["complete"] and not res.info["stuck"]
    assert len(tr) == 80 * L and tr.task_id.is_unique
    tr = tr.assign(idx=index_in_job(tr))
    n_broken = 0
    for _, job in tr.sort_values("idx").groupby("job_id"):
        states = list(job.state)
        fns = list(job.function)
        first_tpu = fns.index("tpu") if "tpu" in fns else L
        assert states[:first_tpu] == ["finished"] * first_tpu
        if first_tpu < L:
            n_broken += 1
            assert states[first_tpu] == "infeasible"
            assert states[first_tpu + 1:] == ["failed"] * (L - first_tpu - 1)
            assert (job.node.iloc[first_tpu:] == -1).all()
    assert 10 < n_broken < 80
    assert (tr[tr.function == "ok"].state != "infeasible").all()


@pytest.mark.timeout(30)
def test_a_workload_of_only_infeasible_tasks_ends():
    """Even if no task of the workload can ever run, every one is recorded "infeasible" and the run ends."""
    _, res = simulate({"nodes": 2}, {"jobs": 1000, "in_flight": 1,
                                     "functions": [{"name": "tpu", "resources": TPU_TASK}]})
    assert res.info["complete"]
    assert (res.trace.state == "infeasible").all() and len(res.trace) == 1000


def _make_infeasible(indices):
    class Workload_(Workload):
        """The workload, with tasks ``indices`` of every job demanding a TPU (which no node has)."""

        def next_job(self, driver, now):
            job = super().next_job(driver, now)
            if job is not None:
                for i in indices:
                    job.tasks[i].resources = dict(TPU_TASK)
            return job
    return Workload_


@pytest.mark.timeout(30)
@pytest.mark.parametrize("shape, bad", [("map_reduce", (0, 1)), ("tree_reduce", (0, 2))])
def test_two_infeasible_inputs_fail_a_shared_dependent_once(shape, bad):
    """When two infeasible tasks share a dependent, that dependent is recorded "failed" once and the job ends."""
    jobs = 10
    cfg = config({"nodes": 2}, {"shape": shape, "map_tasks": 3, "reduce_tasks": 2, "tree_leaves": 4,
                                "tree_fanin": 2, "jobs": jobs, "in_flight": 2})
    sim = build(cfg, workload_cls=_make_infeasible(bad))
    res = sim.run()
    tr = res.trace
    assert tr.task_id.is_unique
    assert len(tr) == jobs * sim.workload.tasks_per_job
    assert (tr.groupby("job_id").state.apply(lambda s: (s == "infeasible").sum()) == 2).all()
    assert res.info["complete"] and not res.info["stuck"]


# --- heartbeat staleness --------------------------------------------------------------

HERD_CLUSTER = {"nodes": 4, "cpus_per_node": 1}
HERD_WORKLOAD = {"arrival": "poisson", "rate_per_s": 30.0, "jobs": 300, "duration": const(0.1)}
WINDOW_S = 0.25     # heartbeat interval of the stale runs (a binary fraction: exact windows)


def _nodes_per_window(count_recent: bool, heartbeat_s: float) -> pd.DataFrame:
    _, res = simulate({**HERD_CLUSTER, "heartbeat_interval_s": heartbeat_s}, HERD_WORKLOAD,
                      {"spillover": "AlwaysGlobal",
                       "placement": {"name": "PaperWaitTime", "count_recent": count_recent}})
    tr = res.trace
    assert res.info["complete"] and tr.spilled.all()
    per = tr.groupby(np.floor(tr.placed_s / WINDOW_S)).node.agg(["nunique", "size"])
    busy = per[per["size"] >= 2]
    assert len(busy) > 20
    return busy


def test_stale_heartbeat_without_recent_counts_herds_each_window_onto_one_node():
    """PaperWaitTime(count_recent=false) sees the same queues for every decision between two
    heartbeats, so all tasks placed in one heartbeat window go to the same node."""
    busy = _nodes_per_window(count_recent=False, heartbeat_s=WINDOW_S)
    assert (busy["nunique"] == 1).all()
    assert busy["size"].max() >= 5


def test_recent_counts_spread_tasks_within_a_heartbeat_window():
    """With count_recent (the default) the policy counts what it sent since the heartbeat: a window's tasks spread."""
    busy = _nodes_per_window(count_recent=True, heartbeat_s=WINDOW_S)
    assert (busy["nunique"] >= 2).all()


def test_fresh_heartbeats_spread_tasks_too():
    """With a tiny heartbeat_interval_s the view is fresh, so even without recent counts tasks spread."""
    busy = _nodes_per_window(count_recent=False, heartbeat_s=1e-3)
    assert (busy["nunique"] >= 2).all()


# --- transfers ------------------------------------------------------------------------

class Alternate(PlacementPolicy):
    """Places the i-th forwarded task on node i mod n; records every observed transfer."""

    def __init__(self):
        self.i = 0
        self.transfers: list[tuple[int, int, int, float]] = []

    def place(self, task, view, now, rng):
        node = self.i % view.n_nodes
        self.i += 1
        return Placement(node)

    def observe_transfer(self, src, dst, size_bytes, seconds, now):
        self.transfers.append((src, dst, size_bytes, seconds))
        super().observe_transfer(src, dst, size_bytes, seconds, now)


class SeesInputs(Alternate):
    """Alternate, recording what each decision saw of the task's inputs."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[int, tuple]] = []

    def place(self, task, view, now, rng):
        self.seen.append((task.task_id, tuple((i.size_bytes, i.locations) for i in task.inputs)))
        return super().place(task, view, now, rng)


def test_decided_at_submission_a_task_waits_on_its_node_for_its_inputs():
    """scheduler.decide_at = "submit" (the default, as the runtime and Ray's raylet): every task
    of a chain is placed when the job is submitted, seeing inputs that do not exist yet as
    size 0 with no location; each reader then waits on its node and pulls its input when it
    appears: it starts size / bandwidth + latency after its producer finished."""
    size, bw, lat, L, jobs = 1e6, 1e8, 1e-3, 4, 5
    cfg = config({"nodes": 2, "bandwidth_bytes_per_s": bw, "latency_s": lat, "gcs_write_s": 0.0, "gcs_read_s": 0.0,
                  "global_decision_s": 0.0},
                 {"shape": "chains", "chain_length": L, "jobs": jobs, "in_flight": 1,
                  "duration": const(0.05), "output_bytes": const(size)},
                 {"spillover": "AlwaysGlobal"}, validate=True)
    assert cfg["scheduler"]["decide_at"] == "submit"
    policy = SeesInputs()
    res = build(cfg, placement=policy).run()
    tr = res.trace.sort_values("task_id").assign(idx=lambda d: index_in_job(d))
    assert res.info["complete"] and (tr.state == "finished").all()
    assert (tr.node.diff().iloc[1:] != 0).all()
    # placed at submission: the forward hop to the global scheduler, whose decision is free
    np.testing.assert_allclose(tr.placed_s - tr.submitted_s, lat, rtol=0, atol=1e-9)
    assert all(inputs == ((0, ()),) for _, inputs in policy.seen[1:L])
    later = tr[tr.idx > 0]
    producer_end = tr.set_index("task_id").finished_s.reindex(later.task_id - 1).to_numpy()
    np.testing.assert_allclose(later.started_s - producer_end, size / bw + lat, rtol=0, atol=1e-9)
    assert res.metrics["bytes_transferred"] == size * jobs * (L - 1)


def test_remote_input_is_fetched_over_the_link_before_the_task_starts():
    """A task whose input is on another node starts size / bandwidth + latency later than it
    otherwise would, records the bytes, and the placement policy's bandwidth estimator sees
    size / (size / bandwidth + latency) bytes/s."""
    size, bw, lat, L, jobs = 1e6, 1e8, 1e-3, 4, 5
    cfg = config({"nodes": 2, "bandwidth_bytes_per_s": bw, "latency_s": lat, "gcs_write_s": 0.0, "gcs_read_s": 0.0,
                  "global_decision_s": 0.0},
                 {"shape": "chains", "chain_length": L, "jobs": jobs, "in_flight": 1,
                  "duration": const(0.05), "output_bytes": const(size)},
                 {"spillover": "AlwaysGlobal", "decide_at": "inputs_ready"})
    policy = Alternate()
    res = build(cfg, placement=policy).run()
    tr = res.trace.sort_values("task_id").assign(idx=lambda d: index_in_job(d))
    assert res.info["complete"] and (tr.state == "finished").all()
    assert (tr.node.diff().iloc[1:] != 0).all()               # consecutive tasks alternate nodes

    first, later = tr[tr.idx == 0], tr[tr.idx > 0]
    assert (first.bytes_transferred == 0).all()
    assert (later.bytes_transferred == size).all()
    # placed -> started: the dispatch message (latency), then for remote inputs the fetch
    np.testing.assert_allclose(first.started_s - first.placed_s, lat, rtol=0, atol=1e-9)
    np.testing.assert_allclose(later.started_s - later.placed_s - lat, size / bw + lat, rtol=0, atol=1e-9)
    assert res.metrics["bytes_transferred"] == size * jobs * (L - 1)

    # samples arrive with the next heartbeat (policy.base.deliver_reports): the fetches of
    # the readers that finished after the last heartbeat round are never reported
    hb = cfg["cluster"]["heartbeat_interval_s"]
    last_round = math.floor(res.info["sim_end_s"] / hb + 1e-9) * hb
    assert len(policy.transfers) == int((later.finished_s <= last_round + 1e-9).sum()) >= jobs * (L - 1) - 2
    for src, dst, nbytes, secs in policy.transfers:
        assert src != dst and nbytes == size
        assert secs == pytest.approx(size / bw + lat, abs=1e-9)
    for node in (0, 1):
        assert policy.bandwidth.estimate(None, node) == pytest.approx(size / (size / bw + lat), rel=1e-9)


# --- estimators -----------------------------------------------------------------------

def test_placement_estimators_are_fed_task_times():
    """Every finished task updates the placement policy's task-time estimator with its run time."""
    sim, res = simulate({"nodes": 2}, {"jobs": 50, "duration": const(0.05)})
    assert res.info["complete"]
    for node in set(res.trace.node):
        assert sim.placement.task_time.estimate("task", node) == pytest.approx(0.05, abs=1e-12)


def test_oracle_knows_slow_nodes():
    """The Oracle's task time for a slow node is slow_factor x the workload's mean duration."""
    mean = 0.1
    sim, res = simulate({"nodes": 4, "slow_nodes": 1, "slow_factor": 4.0},
                        {"jobs": 50, "duration": {"dist": "exponential", "mean": mean}},
                        {"task_time": "Oracle"})
    est = sim.placement.task_time
    assert est.estimate("task", 3) == pytest.approx(4 * mean, rel=1e-12)
    assert [est.estimate("task", m) for m in range(3)] == pytest.approx([mean] * 3, rel=1e-12)
    np.testing.assert_allclose(est.estimate_nodes("task", 4), [mean, mean, mean, 4 * mean], rtol=1e-12)
    assert est.truth_nodes is not None          # that vector came from one vectorised truth call
    np.testing.assert_array_equal(est.truth_nodes("task_time", "task", 4, 0.0),
                                  [sim._truth("task_time", "task", m, 0.0) for m in range(4)])


def test_slow_node_runs_tasks_slow_factor_times_longer():
    """A task on a slow node computes slow_factor times its nominal duration."""
    _, res = simulate({"nodes": 2, "slow_nodes": 1, "slow_factor": 4.0},
                      {"jobs": 40, "duration": const(0.05)}, {"spillover": "AlwaysGlobal", "placement": "RoundRobin"})
    tr = res.trace
    run = tr.finished_s - tr.started_s
    assert set(tr.node) == {0, 1}
    np.testing.assert_allclose(run[tr.node == 0], 0.05, atol=1e-12)
    np.testing.assert_allclose(run[tr.node == 1], 0.2, atol=1e-12)


# --- streaming metrics ----------------------------------------------------------------

def test_streamed_metrics_equal_those_from_the_rows(monkeypatch):
    """keep_rows=False keeps no Trace, yet its metrics equal those computed from the rows of
    the same run (rows are flushed in many small chunks here)."""
    monkeypatch.setattr(trace_module, "FLUSH_ROWS", 97)
    monkeypatch.setattr(engine_module, "FLUSH_ROWS", 97, raising=False)     # the engine's hot path
    cluster = {"nodes": 4, "cpus_per_node": 2}
    workload = {"shape": "chains", "chain_length": 7, "jobs": 200, "drivers": 2,
                "output_bytes": {"dist": "exponential", "mean": 1e5}, "functions": MIXED_FUNCTIONS}
    scheduler = {"spillover": {"name": "QueueThreshold", "threshold": 1}}
    _, streamed = simulate(cluster, workload, scheduler, seed=5, keep_rows=False)
    _, kept = simulate(cluster, workload, scheduler, seed=5, keep_rows=True)
    assert streamed.trace is None
    assert len(kept.trace) == 200 * 7
    from_rows = metrics_from_trace(kept.trace)
    assert streamed.info["complete"]
    assert from_rows["infeasible"] > 0 and from_rows["failed"] > 0 and from_rows["bytes_transferred"] > 0
    assert_same_metrics(streamed.metrics, from_rows, rel=1e-9)
    assert_same_metrics(kept.metrics, from_rows, rel=1e-9)


# --- kernel ---------------------------------------------------------------------------

def test_kernel_interleaves_fast_calls_and_simpy_events_in_time_order():
    """call_in fast calls and SimPy timeouts share one heap: time order, ties in scheduling
    order (a process's first step is SimPy-URGENT, so it precedes NORMAL entries of its instant)."""
    env = Kernel()
    log = []

    def note(name):
        log.append((name, env.now))

    def proc():
        note("proc start")
        yield env.timeout(1.0)                # scheduled after every call_in below
        note("proc t=1")
        env.call_in(0.5, note, "fast from proc")
        env.process(child())
        yield env.timeout(1.0)
        note("proc t=2")

    def child():
        yield env.timeout(0.25)
        note("child")
        env.call_in(0.0, note, "fast from child")

    env.call_in(1.0, note, "fast a")
    env.process(proc())
    env.call_in(1.0, note, "fast b")
    env.call_in(2.0, note, "fast c")
    env.call_in(0.0, note, "fast now")
    env.call_in(1.5, lambda _: env.timeout(0.25).callbacks.append(lambda ev: note("timeout from fast")), None)
    env.drive()
    assert log == [("proc start", 0.0), ("fast now", 0.0),
                   ("fast a", 1.0), ("fast b", 1.0), ("proc t=1", 1.0),
                   ("child", 1.25), ("fast from child", 1.25),
                   ("fast from proc", 1.5), ("timeout from fast", 1.75),
                   ("fast c", 2.0), ("proc t=2", 2.0)]


def test_kernel_drive_stops_at_until_or_when_stopped():
    """drive(until) leaves later entries queued and sets now = until; ``stopped`` ends it after the current call."""
    env = Kernel()
    log = []
    env.call_in(1.0, log.append, "a")
    env.call_in(3.0, log.append, "c")
    env.drive(until=2.0)
    assert log == ["a"] and env.now == 2.0
    env.call_in(0.5, lambda _: setattr(env, "stopped", True), None)
    env.call_in(0.5, log.append, "same instant, after the stop")
    env.drive()
    assert log == ["a"] and env.now == 2.5
    env.stopped = False
    env.drive()
    assert log == ["a", "same instant, after the stop", "c"] and env.now == 3.0



class _NotesGcThreshold(SpilloverPolicy):
    """Forwards nothing; notes the collector's first threshold at each decision."""

    def __init__(self):
        self.seen = []

    def should_forward(self, task, local, now, rng):
        self.seen.append(gc.get_threshold()[0])
        return False


def test_a_run_raises_the_young_gc_threshold_and_restores_it():
    """While a run is driven, the cyclic collector's first threshold is engine.GC_YOUNG_OBJECTS
    (per-task objects die young instead of being scanned by every full collection); after it,
    the thresholds are as they were — also when the run raises."""
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        sp = _NotesGcThreshold()
        res = build(config({"nodes": 2}, {"jobs": 20}), spillover=sp).run()
        assert res.info["complete"] and sp.seen and set(sp.seen) == {engine_module.GC_YOUNG_OBJECTS}
        assert gc.get_threshold() == (700, 10, 10)

        class Raises(_NotesGcThreshold):
            def should_forward(self, task, local, now, rng):
                raise ValueError("a bad policy")
        with pytest.raises(ValueError, match="a bad policy"):
            build(config({"nodes": 2}, {"jobs": 20}), spillover=Raises()).run()
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)


# --- validation mode ------------------------------------------------------------------

@pytest.mark.parametrize("shape", ["independent", "chains", "map_reduce", "tree_reduce"])
def test_validation_mode_accepts_every_transition_of_a_normal_run(shape):
    """With run.validate every task-state transition is checked; a fault-free run makes only legal ones."""
    _, res = simulate({"nodes": 3}, {"shape": shape, "jobs": 30, "in_flight": 3, **SHAPE_PARAMS,
                                     "output_bytes": const(1000.0)},
                      {"spillover": {"name": "QueueThreshold", "threshold": 1}}, validate=True)
    assert res.info["complete"] and (res.trace.state == "finished").all()


@pytest.mark.timeout(30)
def test_validation_mode_accepts_an_infeasible_task_inside_a_chain():
    """An infeasible task in the middle of a chain, and its failed dependents, make only legal transitions."""
    L, jobs = 5, 20
    cfg = config({"nodes": 2}, {"shape": "chains", "chain_length": L, "jobs": jobs, "in_flight": 2},
                 validate=True)
    res = build(cfg, workload_cls=_make_infeasible([2])).run()
    tr = res.trace.assign(idx=lambda d: index_in_job(d))
    assert res.info["complete"]
    assert (tr[tr.idx < 2].state == "finished").all()
    assert (tr[tr.idx == 2].state == "infeasible").all()
    assert (tr[tr.idx > 2].state == "failed").all()
    assert len(tr) == jobs * L


@pytest.mark.timeout(30)
def test_validation_mode_accepts_an_infeasible_chain_head():
    """A chain whose tasks may be infeasible, including its first one, runs in validation mode without an IllegalTransition."""
    _, res = simulate({"nodes": 2}, {"shape": "chains", "chain_length": 4, "jobs": 40, "in_flight": 2,
                                     "functions": MIXED_FUNCTIONS}, validate=True)
    assert res.info["complete"]
    assert (res.trace.state == "infeasible").any() and (res.trace.state == "failed").any()


# --- stuck detection ------------------------------------------------------------------

class KeepEverything(SpilloverPolicy):
    """A (careless) local scheduler that never forwards, even tasks its node can never hold."""

    def should_forward(self, task, local, now, rng):
        return False


@pytest.mark.timeout(30)
def test_a_task_its_node_can_never_hold_is_forwarded_whatever_the_spillover_says():
    """GPU tasks kept by the policy on the GPU-less driver node could never run: the shared
    rule (SpilloverPolicy.forwards, as in the real runtime) forwards them anyway, and the
    global scheduler puts them on the GPU node."""
    cfg = config({"node_groups": [{"count": 1, "cpus": 2}, {"count": 1, "cpus": 2, "gpus": 1}],
                  "heartbeat_interval_s": 0.25},
                 {"jobs": 20, "in_flight": 2, "driver_nodes": [0], "resources": GPU_TASK})
    res = build(cfg, spillover=KeepEverything()).run()
    assert res.info["complete"] and len(res.trace) == 20
    assert (res.trace.state == "finished").all() and res.trace.spilled.all() and (res.trace.node == 1).all()
