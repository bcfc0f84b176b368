"""``testbed calibrate``: it measures the real runtime (here scaled down: fewer tasks, small
objects) and writes a file that a config can use as its calibration — [cluster] keys only,
each with a [meta] entry saying how it was measured and its spread; a bad --out is one line,
exit 2, before anything starts."""
from __future__ import annotations

import tomllib

import pytest

from testbed.cli import main
from testbed.core.config import CLUSTER, load_calibration
from testbed.studies import calibrate as cal

pytestmark = pytest.mark.timeout(120)

MEASURED = ("latency_s", "local_decision_s", "global_decision_s", "gcs_read_s", "gcs_write_s", "task_overhead_s",
            "duration_inflation_s", "result_return_s", "heartbeat_delay_s", "worker_start_s")


def test_calibrate_writes_a_usable_calibration(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cal, "TASKS_PER_LOAD", 30)
    monkeypatch.setattr(cal, "GCS_N", 50)
    monkeypatch.setattr(cal, "SIZES", (1_000, 100_000))
    monkeypatch.setattr(cal, "TRANSFER_REPS", 2)
    monkeypatch.setattr(cal, "LOADED_WINDOW_S", 0.6)
    monkeypatch.setattr(cal, "LOADED_WARMUP_S", 0.3)
    out = tmp_path / "cal.toml"
    assert main(["calibrate", "--out", str(out), "--quiet", "--nodes", "2"]) == 0
    table = load_calibration(out)                       # loads as a calibration: only known keys
    assert set(MEASURED) <= set(table)
    assert all(v >= 0 for v in table.values())
    # per-task costs on a real runtime are not zero
    for k in ("local_decision_s", "task_overhead_s", "duration_inflation_s", "result_return_s"):
        assert table[k] > 0, k
    meta = tomllib.loads(out.read_text())["meta"]
    for k in MEASURED:
        assert meta[k]["method"] and meta[k]["in_schema"] is True
        levels = [x for x in meta[k] if x.startswith(("in_flight_", "load_"))]
        assert levels == meta[k]["levels"] and all(meta[k][x]["n"] >= 0 for x in levels)
    levels = [x for x in meta["local_decision_s"] if x.startswith(("in_flight_", "load_"))]
    assert levels == ["in_flight_1", "in_flight_2", "in_flight_4", "load_0.3", "load_0.6", "load_0.85"]
    # the loaded phase (Poisson arrivals on --nodes x 2 CPUs) ran every load to the end, and its
    # keys' values come from it
    for lvl in ("load_0.3", "load_0.6", "load_0.85"):
        ran = meta["loaded"][lvl]
        assert ran["finished"] == ran["jobs"] > 0
        assert meta["task_overhead_s"][lvl]["n"] == ran["jobs"]
        assert meta["duration_inflation_s"][lvl]["n"] == ran["jobs"]
    for k in ("task_overhead_s", "duration_inflation_s", "local_decision_s", "result_return_s"):
        assert meta[k]["value_from"] == cal.BY_LOAD, k
    assert meta["run"]["nodes"] == 2 and meta["run"]["cpus_per_node"] == 2
    assert len(meta["run"]["loadavg_start"]) == 3
    # a quantity without a [cluster] key yet is recorded in [meta] only
    report = meta["estimator_report_delay_s"]
    assert report["in_schema"] == ("estimator_report_delay_s" in CLUSTER)
    assert report["in_flight_2"]["n"] > 0
    for label in ("no_link", "link"):
        assert set(meta["transfer"][label]) == {"1000", "100000"}
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("args, needle", [
    (["--nodes", "0"], "--nodes"),
    (["--cpus-per-node", "-1"], "--cpus-per-node"),
    (["--nodes", "two"], "--nodes"),
])
def test_bad_cluster_is_one_line_exit_2(tmp_path, capsys, args, needle):
    assert main(["calibrate", "--out", str(tmp_path / "c.toml"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: None, "does not exist"),
])
def test_bad_out_is_one_line_exit_2_and_starts_nothing(tmp_path, capsys, make, needle):
    target = tmp_path / "x" if needle == "is a folder" else tmp_path / "missing" / "cal.toml"
    make(target)
    assert main(["calibrate", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "--out" in err


def test_to_table_derives_from_the_measurements_without_changing_them():
    """global_decision_s and result_return_s are derived (less local_decision_s and two hops; less
    gcs_write_s) in the table, not in the measurements: the same measurements give the same file."""
    one = cal.in_flight(1)
    meas = {"latency_s": {one: [0.001]}, "local_decision_s": {one: [0.002]}, "gcs_write_s": {one: [0.0005]},
            "forwarded_decision_s": {one: [0.010]}, "result_return_s": {one: [0.004]}}
    first = cal.to_table(meas, 1.0)
    assert first["cluster"]["global_decision_s"] == pytest.approx(0.006)
    assert first["cluster"]["result_return_s"] == pytest.approx(0.0035)
    assert first["meta"]["global_decision_s"]["value_from"] == one     # no loaded measurement: the idle one
    assert set(meas) == {"latency_s", "local_decision_s", "gcs_write_s", "forwarded_decision_s", "result_return_s"}
    assert cal.to_table(meas, 1.0)["cluster"] == first["cluster"]


def test_a_loaded_key_is_the_mean_over_the_loads_weighted_by_the_load():
    """The rule of a key phase D measures: each load's mean, weighted by the load (0.3, 0.6, 0.85);
    a load without samples does not count; the idle in_flight_* levels are kept in [meta] only.
    Under load a global decision is the global scheduler's service time (global_service_s)."""
    one, lo, mid, hi = cal.in_flight(1), cal.at_load(0.3), cal.at_load(0.6), cal.at_load(0.85)
    meas = {"latency_s": {one: [0.0001]}, "gcs_write_s": {one: [0.0]},
            "task_overhead_s": {one: [0.050], lo: [0.001, 0.003], mid: [0.004], hi: [0.010]},
            "local_decision_s": {one: [0.002], lo: [0.001], mid: [0.003], hi: []},
            "forwarded_decision_s": {one: [0.010], mid: [0.0081]}, "global_service_s": {mid: [0.0005]}}
    t = cal.to_table(meas, 1.0)
    want = (0.3 * 0.002 + 0.6 * 0.004 + 0.85 * 0.010) / (0.3 + 0.6 + 0.85)
    assert t["cluster"]["task_overhead_s"] == pytest.approx(want, abs=1e-7)
    assert t["cluster"]["local_decision_s"] == pytest.approx((0.3 * 0.001 + 0.6 * 0.003) / 0.9, abs=1e-7)
    assert t["cluster"]["global_decision_s"] == pytest.approx(0.0005, abs=1e-7)
    assert t["meta"]["global_decision_s"]["in_flight_1"]["mean"] == pytest.approx(0.010 - 0.002 - 0.0002)
    m = t["meta"]["task_overhead_s"]
    assert m["value_from"] == cal.BY_LOAD and m["in_flight_1"]["mean"] == pytest.approx(0.050)
    assert m["load_0.3"]["median"] == pytest.approx(0.002) and m["load_0.85"]["n"] == 1


def row(pid, placed, started, finished, *, job=0, submitted=None, spilled=False, fn="task"):
    return {"pid": pid, "job_id": job, "function": fn, "spilled": spilled, "placed_s": placed,
            "submitted_s": placed if submitted is None else submitted, "started_s": started, "finished_s": finished}


def test_slot_waits_split_idle_workers_from_turnarounds():
    """started - max(placed, the worker's previous finish): a task that found its worker idle
    counts from its placement; one that waited for it, from the previous task's finish — per
    worker, whatever order the rows come in."""
    rows = [row(7, 0.000, 0.001, 0.010),            # idle worker: 1 ms
            row(7, 0.005, 0.0103, 0.020),           # waited behind the first: 0.3 ms turnaround
            row(9, 0.006, 0.0062, 0.030),           # another worker, idle: 0.2 ms
            row(7, 0.025, 0.0255, 0.040)]           # after the worker was free again: 0.5 ms
    idle, queued = cal.slot_waits(list(reversed(rows)))
    assert sorted(idle) == pytest.approx([0.0002, 0.0005, 0.001])
    assert queued == pytest.approx([0.0003])


def test_server_times_take_the_queue_out():
    """A FIFO server's service times: from arrival when it was idle, from the previous departure
    when the job had to wait."""
    arrivals = [0.0, 0.001, 0.010]
    departures = [0.002, 0.005, 0.0115]          # the 2nd waited for the 1st; the 3rd found it idle
    assert cal.server_times(arrivals, departures) == pytest.approx([0.002, 0.003, 0.0015])


def test_derive_loaded_reads_every_key_from_the_records():
    rows = [row(1, 0.000, 0.001, 0.0221, job=0, submitted=-0.0004),
            row(2, 0.002, 0.0024, 0.0125, job=1, submitted=0.001, spilled=True)]
    drawn = {0: 0.021, 1: 0.010}
    probes = [row(3, 0.50, 0.501, 0.502, fn="calib_probe"), row(3, 0.40, 0.401, 0.402, fn="calib_probe")]
    got = cal.derive_loaded(rows, drawn, probes, seen=[0.4026, 0.5031], ages=[0.0007], hop=0.0001)
    assert got["duration_inflation_s"] == pytest.approx([0.0001, 0.0001])
    assert got["local_decision_s"] == pytest.approx([0.0004])
    assert got["forwarded_decision_s"] == pytest.approx([0.001])
    # it reached the global scheduler the mean local decision and a hop after its submission,
    # and its node recorded it a hop after the decision
    assert got["global_service_s"] == pytest.approx([0.001 - 0.0004 - 0.0002])
    assert got["result_return_s"] == pytest.approx([0.0006, 0.0011])     # probes in submission order
    assert sorted(got["task_overhead_s"]) == pytest.approx([0.0004, 0.001])
    assert got["heartbeat_delay_s"] == [0.0007]
    # a probe without its record (or the reverse) cannot be paired: no result return then
    assert "result_return_s" not in cal.derive_loaded(rows, drawn, probes[:1], [0.4026, 0.5031], [])


def test_poisson_rate_offers_the_load_of_validate_sims_cases():
    """validate_sim.toml: 4 nodes x 2 CPUs, 2 drivers, 20 ms tasks — 60/s per driver is 0.3."""
    assert cal.poisson_rate(0.3, 4, 2, 2, 0.02) == pytest.approx(60.0)
    assert cal.poisson_rate(0.85, 4, 2, 2, 0.02) == pytest.approx(170.0)
