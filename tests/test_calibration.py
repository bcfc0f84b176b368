"""Using a calibration (``cluster.calibration = "FILE"``, or ``--set``) and exporting a run's
Trace (``run.trace_out``): a calibration fills the [cluster] keys the config does not set;
a bad calibration file is one line naming the file and key, exit 2; the trace files hold
one row per task with the Trace's columns."""
from __future__ import annotations

import importlib.util
import tomllib

import pandas as pd
import pytest

from testbed.cli import main
from testbed.core.trace import NAMES
from testbed.studies.experiment import load_experiment

BASE = """\
[cluster]
nodes = 2
cpus_per_node = 2
{cluster}

[workload]
jobs = 50
duration = {{dist = "constant", value = 0.01}}

[run]
seeds = [0, 1]
{run}
"""

CAL = """\
# written by testbed calibrate
[cluster]
latency_s = 0.0002
task_overhead_s = 0.0003
gcs_write_s = 0.00004

[meta.task_overhead_s]
method = "slot gap"
"""


def write(tmp_path, cluster="", run="", cal=CAL, name="cal.toml"):
    (tmp_path / "cfg").mkdir(exist_ok=True)
    if cal is not None:
        (tmp_path / "cfg" / name).write_text(cal)
    p = tmp_path / "cfg" / "exp.toml"
    p.write_text(BASE.format(cluster=cluster, run=run))
    return p


def test_calibration_fills_unset_keys_and_explicit_keys_win(tmp_path):
    """The file's keys replace the defaults; a key the config sets keeps the config's value."""
    p = write(tmp_path, cluster='calibration = "cal.toml"\nlatency_s = 0.001')
    c = load_experiment(p).points[0].config["cluster"]
    assert c["task_overhead_s"] == 0.0003 and c["gcs_write_s"] == 0.00004
    assert c["latency_s"] == 0.001                       # explicit wins
    assert c["calibration"] == "cal.toml"


def test_set_calibration_is_relative_to_the_current_folder_and_set_keys_win(tmp_path, monkeypatch):
    p = write(tmp_path)
    monkeypatch.chdir(tmp_path)
    exp = load_experiment(p, ["cluster.calibration=cfg/cal.toml", "cluster.task_overhead_s=0.01"])
    c = exp.points[0].config["cluster"]
    assert c["latency_s"] == 0.0002 and c["task_overhead_s"] == 0.01


def test_a_sweep_can_compare_with_and_without_calibration(tmp_path):
    p = write(tmp_path, run='[sweep]\n"cluster.calibration" = ["", "cal.toml"]')
    a, b = (pt.config["cluster"] for pt in load_experiment(p).points)
    assert a["task_overhead_s"] == 0.0 and b["task_overhead_s"] == 0.0003


def test_run_records_the_calibrated_values_in_config_toml(tmp_path, capsys):
    p = write(tmp_path, cluster='calibration = "cal.toml"')
    assert main(["run", str(p), "--out", str(tmp_path / "out"), "--quiet", "--jobs", "1"]) == 0
    resolved = tomllib.loads((tmp_path / "out" / "config.toml").read_text())
    assert resolved["cluster"]["task_overhead_s"] == 0.0003
    assert resolved["cluster"]["calibration"] == "cal.toml"


@pytest.mark.parametrize("cal, needles", [
    (None, ["cal.toml", "no such file", "cluster.calibration"]),
    ("[cluster\nlatency_s = 1", ["cal.toml", "malformed TOML"]),
    ("[cluster]\nfoo_s = 0.1\n", ["cal.toml", "cluster.foo_s", "unknown parameter"]),
    ("[cluster]\nlatency_s = -1.0\n", ["cal.toml", "cluster.latency_s", ">= 0"]),
    ("[cluster]\ncalibration = \"other.toml\"\n", ["cal.toml", "cluster.calibration", "unknown parameter"]),
    ("[meta]\nx = 1\n", ["cal.toml", "[cluster] table"]),
    ("[bogus]\nx = 1\n[cluster]\n", ["cal.toml", "bogus", "unknown section"]),
])
@pytest.mark.parametrize("cmd", ["validate", "run"])
def test_a_bad_calibration_file_is_one_line_exit_2(tmp_path, capsys, cal, needles, cmd):
    p = write(tmp_path, cluster='calibration = "cal.toml"', cal=cal)
    argv = [cmd, str(p)] + (["--out", str(tmp_path / "out"), "--quiet"] if cmd == "run" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("testbed: error: ")
    for n in needles:
        assert n in err, (n, err)
    assert not (tmp_path / "out").exists()


def test_validate_with_set_calibration_reports_a_missing_file(tmp_path, capsys, monkeypatch):
    p = write(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(p), "--set", "cluster.calibration=nope.toml"]) == 2
    err = capsys.readouterr().err
    assert "nope.toml" in err and "no such file" in err and err.count("\n") == 1


# --- trace export -----------------------------------------------------------------------

def test_trace_out_csv_writes_one_file_per_point_and_seed(tmp_path, capsys):
    """Each run's Trace: one row per task, the Trace's columns, every task finished."""
    p = write(tmp_path, run='trace_out = "csv"\ntrace = "aggregate"\n[sweep]\n"cluster.nodes" = [1, 2]')
    assert main(["run", str(p), "--out", str(tmp_path / "out"), "--quiet", "--jobs", "1"]) == 0
    files = sorted(f.name for f in (tmp_path / "out").glob("trace-*"))
    assert files == ["trace-0-0.csv", "trace-0-1.csv", "trace-1-0.csv", "trace-1-1.csv"]
    df = pd.read_csv(tmp_path / "out" / "trace-1-0.csv")
    assert tuple(df.columns) == NAMES
    assert len(df) == 50 and (df.state == "finished").all() and df.task_id.is_unique
    one = pd.read_csv(tmp_path / "out" / "trace-0-0.csv")
    assert set(one.node) == {0} and set(df.node) <= {0, 1}


def test_no_trace_files_by_default(tmp_path, capsys):
    p = write(tmp_path)
    assert main(["run", str(p), "--out", str(tmp_path / "out"), "--quiet", "--jobs", "1"]) == 0
    assert not list((tmp_path / "out").glob("trace-*"))


def test_parquet_without_pyarrow_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else real(name, *a))
    p = write(tmp_path, run='trace_out = "parquet"')
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert "run.trace_out" in err and "pyarrow" in err and err.count("\n") == 1


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow is not installed")
def test_trace_out_parquet_writes_parquet(tmp_path, capsys):
    p = write(tmp_path, run='trace_out = "parquet"')
    assert main(["run", str(p), "--out", str(tmp_path / "out"), "--quiet", "--jobs", "1"]) == 0
    df = pd.read_parquet(tmp_path / "out" / "trace-0-0.parquet")
    assert tuple(df.columns) == NAMES and len(df) == 50


@pytest.mark.timeout(120)
def test_both_engines_write_traces_that_compare_task_by_task(tmp_path, capsys):
    """The same config on the simulator and on the real runtime: two trace files with the same
    columns and one finished row per task; joined on task_id, every task is in both."""
    frames = {}
    for engine in ("sim", "real"):
        p = write(tmp_path, run=f'trace_out = "csv"\nengine = "{engine}"\nreal_nodes = 2\nseeds = [0]')
        p.write_text(p.read_text().replace("seeds = [0, 1]\n", ""))
        out = tmp_path / f"out-{engine}"
        assert main(["run", str(p), "--out", str(out), "--quiet"]) == 0
        frames[engine] = pd.read_csv(out / "trace-0-0.csv")
    sim, real = frames["sim"], frames["real"]
    assert tuple(sim.columns) == tuple(real.columns) == NAMES
    assert len(sim) == len(real) == 50
    assert (sim.state == "finished").all() and (real.state == "finished").all()
    both = sim.merge(real, on="task_id", suffixes=("_sim", "_real"))
    assert len(both) == 50
    run_sim = both.finished_s_sim - both.started_s_sim
    run_real = both.finished_s_real - both.started_s_real
    assert (run_sim > 0).all() and (run_real >= run_sim - 1e-9).all()   # real tasks run at least their duration


def test_empty_calibration_gives_exactly_the_schema_defaults(tmp_path):
    """``cluster.calibration = ""`` (the validation study's uncalibrated variant) resolves every
    [cluster] key as a config without the key does."""
    plain = load_experiment(write(tmp_path)).points[0].config["cluster"]
    (tmp_path / "e").mkdir()
    empty = load_experiment(write(tmp_path / "e", cluster='calibration = ""')).points[0].config["cluster"]
    assert empty == plain


def test_the_committed_calibration_is_usable_from_experiments(tmp_path):
    """experiments/calibration/this_machine.toml (measured here by `testbed calibrate`) loads as a
    calibration and fills the [cluster] keys a shipped experiment leaves unset."""
    from pathlib import Path

    from testbed.core.config import load_calibration
    exp_dir = Path(__file__).resolve().parents[1] / "experiments"
    table = load_calibration(exp_dir / "calibration" / "this_machine.toml")
    assert table["task_overhead_s"] > 0 and table["duration_inflation_s"] > 0
    cfg = exp_dir / "quickstart.toml"
    c = load_experiment(cfg, ["cluster.calibration=" + str(exp_dir / "calibration" / "this_machine.toml")]).points[0].config["cluster"]
    for k, v in table.items():
        assert c[k] == v or k in tomllib.loads(cfg.read_text()).get("cluster", {}), k
