"""When an estimator receives a sample — one rule in both engines
(:func:`testbed.policy.base.deliver_reports`): a node's task run times and transfer times
reach the placement policy with that node's next heartbeat, not at the finish."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import run_toml

from test_sim_faults import simulate

pytestmark = pytest.mark.timeout(120)

PLUGIN = "tests.report_plugins:RecordingWaitTime"
#: samples written closer together than this (s) were delivered together
BATCH_S = 0.002


def test_the_simulator_delivers_samples_at_the_heartbeat_after_the_finish():
    """Every sample arrives at the first heartbeat round at or after its task's finish
    (input fetches: with their reader's finish), never earlier, and none is lost."""
    hb = 0.05
    sim, res = simulate({"nodes": 4, "cpus_per_node": 2, "heartbeat_interval_s": hb, "latency_s": 1e-4},
                        {"shape": "map_reduce", "jobs": 30, "in_flight": 2, "drivers": 2, "map_tasks": 4, "reduce_tasks": 1,
                         "duration": {"dist": "exponential", "mean": 0.01},
                         "output_bytes": {"dist": "constant", "value": 1e6}},
                        {"placement": PLUGIN, "spillover": {"name": "QueueThreshold", "threshold": 0}})
    tr = res.trace
    done = tr[tr.state == "finished"]
    finish = {(int(r.node), r.finished_s - r.started_s): r.finished_s for r in done.itertuples()}
    seen = sim.placement.seen
    tasks = [s for s in seen if s[0] == "task"]
    transfers = [s for s in seen if s[0] == "transfer"]
    assert transfers, "the workload must move inputs between nodes"
    last_round = math.floor(res.info["sim_end_s"] / hb + 1e-9) * hb
    # every finished task before the last round is reported once
    assert len(tasks) == int((done.finished_s <= last_round + 1e-9).sum())
    for _, now, node, _fn, secs in tasks:
        assert now / hb == pytest.approx(round(now / hb), abs=1e-6)          # at a heartbeat round
        end = finish[(node, secs)]
        assert end - 1e-9 <= now < end + hb                                   # the first one after
    reader_ends = sorted(done.finished_s)
    for _, now, _dst, _src, _size, _secs in transfers:
        assert now / hb == pytest.approx(round(now / hb), abs=1e-6)
        assert any(e - 1e-9 <= now < e + hb for e in reader_ends)


def test_the_simulators_estimates_lag_the_finishes_by_up_to_one_heartbeat():
    """Between two rounds the estimators do not move, however many tasks finish."""
    hb = 0.1
    sim, res = simulate({"nodes": 2, "cpus_per_node": 2, "heartbeat_interval_s": hb},
                        {"jobs": 200, "in_flight": 4, "duration": {"dist": "exponential", "mean": 0.01}},
                        {"placement": PLUGIN})
    times = sorted({s[1] for s in sim.placement.seen})
    assert len(sim.placement.seen) > 3 * len(times)              # batched: several samples per round
    assert all(b - a >= hb - 1e-9 for a, b in zip(times, times[1:]))


def test_the_runtime_delivers_each_nodes_samples_with_its_heartbeats(tmp_path):
    """The runtime's global scheduler gets a node's samples in batches, one per heartbeat of
    that node (about heartbeat_interval_s apart), not one at each finish."""
    log = tmp_path / "samples.txt"
    hb = 0.05
    res = run_toml(tmp_path / "real.toml", f"""
        [cluster]
        nodes = 4
        cpus_per_node = 2
        heartbeat_interval_s = {hb}
        [scheduler]
        placement = {{name = "{PLUGIN}", path = "{log}"}}
        spillover = {{name = "QueueThreshold", threshold = 0}}
        [workload]
        jobs = 300
        drivers = 2
        in_flight = 4
        duration = {{dist = "constant", value = 0.01}}
        [run]
        engine = "real"
        real_nodes = 4
        real_cpus_per_node = 2
        real_max_jobs = 300
        real_time_scale = 1.0
    """)
    assert res.info["complete"]
    rows = [line.split() for line in Path(log).read_text().splitlines()]
    by_node: dict[int, list[float]] = defaultdict(list)
    for _kind, wall, node, _secs in rows:            # task run times and input fetches alike
        by_node[int(node)].append(float(wall))
    assert sum(r[0] == "task" for r in rows) >= 250   # tasks finished before the last heartbeats
    batches = gaps = spaced = 0
    for node, walls in by_node.items():
        # a batch: the samples delivered together (one heartbeat's, written in one loop, well
        # within BATCH_S); samples fed at each finish would be ~5 ms apart (2 CPUs, 10 ms tasks)
        starts = [w for i, w in enumerate(walls) if i == 0 or w - walls[i - 1] > BATCH_S]
        batches += len(starts)
        gaps += len(starts) - 1
        spaced += sum(b - a >= hb / 2 for a, b in zip(starts, starts[1:]))
    assert len(rows) > 3 * batches
    # about one report per interval (a busy global scheduler may read two of a node's
    # heartbeats back to back now and then)
    assert spaced >= 0.8 * gaps


def _task_samples(log: Path) -> list[float]:
    if not log.exists():
        return []
    return [float(x.split()[3]) for x in log.read_text().splitlines() if x.startswith("task ")]


def test_the_runtime_reports_only_finished_run_times(tmp_path):
    """Which attempts give a run time (policy.base.reports_run_time, both engines): only the
    finished ones. A task that raises after 60 ms and its consumer (failed at once by its
    input's error) give none; a 20 ms task that finishes after them gives one."""
    import testbed as tb
    from testbed.policy.base import reports_run_time
    assert reports_run_time("finished") and not reports_run_time("failed") and not reports_run_time("lost")
    log = tmp_path / "samples.txt"

    def bad():
        import time
        time.sleep(0.06)
        raise ValueError("no")

    def good(x=None):
        import time
        time.sleep(0.02)
        return 1

    def consumer(x):
        return x

    with tb.init(num_cpus=1, placement={"name": PLUGIN, "path": str(log)}, heartbeat_interval_s=0.05):
        f_bad, f_good, f_cons = tb.remote(bad), tb.remote(good), tb.remote(consumer)
        b = f_bad.remote()
        with pytest.raises(tb.TaskError):
            tb.get(f_cons.remote(b), timeout=30)
        assert tb.get(f_good.remote(), timeout=30) == 1     # finished after both failures
        deadline = 200                                       # heartbeats, at most
        while not _task_samples(log) and deadline:
            tb.get(f_good.remote(), timeout=30)              # more finishes, more heartbeats
            deadline -= 1
    samples = _task_samples(log)
    assert samples, "the finished task's run time must be reported"
    assert all(0.02 <= s < 0.05 for s in samples), samples
