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
    out = tmp_path / "cal.toml"
    assert main(["calibrate", "--out", str(out), "--quiet"]) == 0
    table = load_calibration(out)                       # loads as a calibration: only known keys
    assert set(MEASURED) <= set(table)
    assert all(v >= 0 for v in table.values())
    # per-task costs on a real runtime are not zero
    for k in ("local_decision_s", "task_overhead_s", "duration_inflation_s", "result_return_s"):
        assert table[k] > 0, k
    meta = tomllib.loads(out.read_text())["meta"]
    for k in MEASURED:
        assert meta[k]["method"] and meta[k]["in_schema"] is True
        loads = [x for x in meta[k] if x.startswith("load_")]
        assert loads and all(meta[k][x]["n"] >= 0 for x in loads)
    assert [int(x.removeprefix("load_")) for x in meta["local_decision_s"] if x.startswith("load_")] == [1, 2, 4]
    # a quantity without a [cluster] key yet is recorded in [meta] only
    report = meta["estimator_report_delay_s"]
    assert report["in_schema"] == ("estimator_report_delay_s" in CLUSTER)
    assert report["load_2"]["n"] > 0
    for label in ("no_link", "link"):
        assert set(meta["transfer"][label]) == {"1000", "100000"}
    assert not list(tmp_path.glob(".*partial"))


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
    """global_decision_s and result_return_s are derived (less local_decision_s and one hop; less
    gcs_write_s) in the table, not in the measurements: the same measurements give the same file."""
    meas = {"latency_s": {1: [0.001]}, "local_decision_s": {1: [0.002]}, "gcs_write_s": {1: [0.0005]},
            "forwarded_decision_s": {1: [0.010]}, "result_return_s": {1: [0.004]}}
    first = cal.to_table(meas, 1.0)
    assert first["cluster"]["global_decision_s"] == pytest.approx(0.007)
    assert first["cluster"]["result_return_s"] == pytest.approx(0.0035)
    assert set(meas) == {"latency_s", "local_decision_s", "gcs_write_s", "forwarded_decision_s", "result_return_s"}
    assert cal.to_table(meas, 1.0)["cluster"] == first["cluster"]
