"""The ``testbed`` command: every user error is one line on stderr naming the file and
the key, exit status 2, no traceback and nothing under results/; a run writes config.toml,
runs.csv, figures and summary.md; Ctrl-C keeps what finished and says where."""
from __future__ import annotations

import csv
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from testbed.cli import main
from testbed.core import config as C
from testbed.studies import runner
from testbed.studies.experiment import load_experiment
from testbed.workloads.spec import FIELDS as WORKLOAD_FIELDS

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: 4 nodes, 200 independent jobs, two sweep points x two seeds: four runs, well under a second
TINY = """\
[cluster]
nodes = 4
cpus_per_node = 4

[workload]
shape = "independent"
jobs = 200
duration = {dist = "exponential", mean = 0.01}

[run]
seeds = [0, 1]
trace = "aggregate"

[sweep]
"cluster.nodes" = [2, 4]
"""

#: the same without a sweep: the base of the bad-input cases (one run if anything ran)
BASE = TINY.split("[sweep]")[0]


def write(directory: Path, text: str, name: str = "exp.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def read_runs(out: Path) -> list[dict[str, str]]:
    with open(out / "runs.csv", newline="") as f:
        return list(csv.DictReader(f))


def results_is_empty(cwd: Path) -> bool:
    results = cwd / "results"
    return not results.exists() or not any(results.rglob("*"))


def assert_one_error_line(err: str, *needles: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("testbed: error: "), lines[0]
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


# --- bad input: one line, exit 2, nothing written -------------------------------------

# (id, config text or None for "no such file", extra CLI args, substrings the line must name)
BAD = [
    ("malformed-toml", "[cluster\nnodes = 4\n", [], ["{file}", "malformed TOML"]),
    ("unknown-section", BASE + "[clutser]\nnodes = 4\n", [], ["{file}", "clutser", "unknown section"]),
    ("unknown-key", BASE.replace("nodes = 4", "nodez = 4"), [], ["{file}", "cluster.nodez", "unknown key"]),
    ("wrong-type", BASE.replace("nodes = 4", 'nodes = "four"'), [], ["{file}", "cluster.nodes", "integer"]),
    ("alpha-1.5", BASE + '[scheduler]\ntask_time = {name = "ExponentialAverage", alpha = 1.5}\n', [],
     ["{file}", "scheduler.task_time", "alpha", "1.5"]),
    ("negative-bandwidth", BASE.replace("nodes = 4", "nodes = 4\nbandwidth_bytes_per_s = -1"), [],
     ["{file}", "cluster.bandwidth_bytes_per_s", "> 0"]),
    ("sweep-unknown-key", BASE + '[sweep]\n"cluster.nodez" = [1, 2]\n', [], ["{file}", "sweep", "cluster.nodez"]),
    ("plugin-no-module", BASE + '[scheduler]\nplacement = "nosuchpkg.mod:X"\n', [],
     ["{file}", "scheduler.placement", "nosuchpkg"]),
    ("plugin-wrong-base", BASE + '[scheduler]\nplacement = "testbed.policy.estimators:ExponentialAverage"\n', [],
     ["{file}", "scheduler.placement", "PlacementPolicy"]),
    ("unknown-estimator", BASE + '[scheduler]\ntask_time = "NoSuchEstimator"\n', [],
     ["{file}", "scheduler.task_time", "NoSuchEstimator"]),
    ("set-without-equals", BASE, ["--set", "cluster.nodes"], ["{file}", "cluster.nodes", "KEY=VALUE"]),
    ("set-unknown-key", BASE, ["--set", "cluster.nodez=3"], ["{file}", "cluster.nodez"]),
    ("set-unknown-section", BASE, ["--set", "clutser.nodes=3"], ["{file}", "clutser"]),
    ("set-out-of-range", BASE, ["--set", "cluster.nodes=0"], ["{file}", "cluster.nodes", "> 0"]),
    ("unknown-option", BASE, ["--frobnicate"], ["--frobnicate"]),
    ("no-such-file", None, [], ["{file}", "no such file"]),
    ("jobs-0", BASE, ["--jobs", "0"], ["--jobs", "positive integer"]),
    ("jobs-not-a-number", BASE, ["--jobs", "many"], ["--jobs", "positive integer"]),
    ("sweep-point-invalid", BASE + '[sweep]\n"cluster.nodes" = [4, 0]\n', [],
     ["{file}", "cluster.nodes", "sweep point", "nodes=0"]),
]


@pytest.mark.parametrize("text, extra, needles", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, text, extra, needles):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "exp.toml"
    if text is not None:
        cfg.write_text(text)
    ran = []
    monkeypatch.setattr(runner, "_one", lambda t: ran.append(t))     # nothing may start
    code = main(["run", str(cfg), *extra])
    out, err = capsys.readouterr()
    assert code == 2
    assert_one_error_line(err, *[n.format(file=cfg) for n in needles])
    assert ran == []
    assert out == ""
    assert results_is_empty(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["exp.toml"] if text is not None else [])


@pytest.mark.parametrize("argv, needle", [
    ([], "required"),
    (["frobnicate"], "frobnicate"),
    (["run"], "config"),
    (["validate"], "CONFIG"),
    (["bench", "quantum"], "quantum"),
])
def test_usage_errors_are_one_line_exit_2(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert_one_error_line(capsys.readouterr().err, needle)
    assert not any(tmp_path.iterdir())


def test_validate_reports_a_bad_config_as_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, BASE.replace("nodes = 4", "nodes = -4"))
    assert main(["validate", str(cfg)]) == 2
    assert_one_error_line(capsys.readouterr().err, str(cfg), "cluster.nodes")


def test_validate_with_set_checks_the_override(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, BASE)
    assert main(["validate", str(cfg), "--set", "run.study=nope"]) == 2
    assert_one_error_line(capsys.readouterr().err, str(cfg), "run.study", "nope")


@pytest.mark.timeout(60)
def test_the_real_command_exits_2_with_one_line_and_no_traceback(tmp_path):
    """The console entry point, in a fresh process: exit status 2, exactly one stderr line."""
    cfg = write(tmp_path, BASE + '[scheduler]\ntask_time = {name = "ExponentialAverage", alpha = 1.5}\n')
    proc = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(cfg)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert_one_error_line(proc.stderr, str(cfg), "scheduler.task_time")
    assert proc.stdout == ""
    assert results_is_empty(tmp_path)


# --- validate and list -------------------------------------------------------------

def test_validate_accepts_both_shipped_configs(capsys):
    paths = [str(EXPERIMENTS / "quickstart.toml"), str(EXPERIMENTS / "fig8b_scalability.toml")]
    assert main(["validate", *paths]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2
    for path, line in zip(paths, lines):
        assert line.startswith(f"{path}: ok")
    assert "study 'estimators'" in lines[0] and "study 'scalability'" in lines[1]
    assert err == ""


def test_list_names_every_built_in(capsys):
    from testbed.policy import registry
    from testbed.studies.studies import STUDIES
    from testbed.workloads import DISTRIBUTIONS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    names = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert {"compare", "estimators", "scalability"} <= names
    assert {"PaperWaitTime", "Random", "PowerOfTwoChoices", "HybridSpread"} <= names
    assert {"QueueThreshold", "AlwaysLocal", "AlwaysGlobal"} <= names
    assert {"ExponentialAverage", "SlidingMedian", "Holt", "Oracle"} <= names
    assert {"constant", "uniform", "exponential", "lognormal", "pareto", "mixture"} <= names
    expected = set(STUDIES) | set(DISTRIBUTIONS)
    for kind in ("placement", "spillover", "estimator"):
        expected |= set(registry.builtins(kind))
    assert expected <= names


def test_list_describes_a_plugin(monkeypatch, capsys):
    if not (ROOT / "examples" / "user_policy.py").exists():
        pytest.skip("examples/user_policy.py is not written yet")
    monkeypatch.chdir(ROOT)                    # plug-ins import from the current directory
    assert main(["list", "--plugin", "examples.user_policy:ShortestExpectedQueue"]) == 0
    out = capsys.readouterr().out
    [line] = [ln for ln in out.splitlines() if "examples.user_policy:ShortestExpectedQueue" in ln]
    assert "placement" in line
    assert "PaperWaitTime" in out                # the built-ins are still listed


@pytest.mark.parametrize("spec", ["nosuchpkg.mod:X", "testbed.core.config:CLUSTER"])
def test_list_with_an_unloadable_plugin_is_exit_2(tmp_path, monkeypatch, capsys, spec):
    monkeypatch.chdir(tmp_path)
    assert main(["list", "--plugin", spec]) == 2
    assert_one_error_line(capsys.readouterr().err, "--plugin", spec)


# --- a real run --------------------------------------------------------------------

@pytest.fixture
def finished_run(tmp_path, monkeypatch, capsys):
    """Run TINY once (two points x two seeds) into tmp_path/out; return (config, out, stdout)."""
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, TINY)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--jobs", "1", "--quiet"]) == 0
    stdout, err = capsys.readouterr()
    assert err == ""
    return cfg, out, stdout


def test_run_writes_the_results_folder(finished_run, tmp_path):
    cfg, out, stdout = finished_run
    assert f"results: {out}" in stdout
    assert {"config.toml", "runs.csv", "summary.md"} <= {p.name for p in out.iterdir()}
    # nothing else next to it: no temporary or interrupted folder, no default results/
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml", "out"]


def test_run_config_toml_is_resolved_and_loads_again(finished_run):
    cfg, out, _ = finished_run
    resolved = tomllib.loads((out / "config.toml").read_text())
    assert set(resolved["cluster"]) == set(C.CLUSTER)
    assert set(resolved["scheduler"]) == set(C.SCHEDULER)
    assert set(resolved["run"]) == set(C.RUN)
    assert set(WORKLOAD_FIELDS) - set(resolved["workload"]) == {"shift", "drift"}
    assert resolved["sweep"] == {"cluster.nodes": [2, 4]}
    again = load_experiment(out / "config.toml")
    original = load_experiment(cfg)
    assert again.resolved == original.resolved
    assert [p.config for p in again.points] == [p.config for p in original.points]


def test_run_runs_csv_has_one_row_per_point_and_seed(finished_run):
    _, out, _ = finished_run
    rows = read_runs(out)
    assert len(rows) == 4
    for col in ("point", "label", "seed", "cluster.nodes", "finished", "throughput_per_s", "latency_p99_s"):
        assert col in rows[0], col
    assert [(r["point"], r["seed"], r["cluster.nodes"]) for r in rows] == [
        ("0", "0", "2"), ("0", "1", "2"), ("1", "0", "4"), ("1", "1", "4")]
    assert all(int(r["finished"]) == 200 for r in rows)
    assert all(float(r["throughput_per_s"]) > 0 for r in rows)
    assert rows[0]["label"] != rows[2]["label"]


def test_run_summary_and_figures(finished_run):
    _, out, stdout = finished_run
    summary = (out / "summary.md").read_text()
    assert "| point" in summary and "|:--" in summary          # a markdown table
    pngs = list(out.glob("*.png"))
    assert pngs
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f"]({png.name})" in summary                     # linked from the summary


def test_set_overrides_the_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, TINY)
    out = tmp_path / "out"
    code = main(["run", str(cfg), "--set", "workload.jobs=50", "--set", "run.seeds=[3]",
                 "--out", str(out), "--jobs", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    rows = read_runs(out)
    assert [r["seed"] for r in rows] == ["3", "3"]
    assert all(int(r["finished"]) == 50 for r in rows)
    resolved = tomllib.loads((out / "config.toml").read_text())
    assert resolved["workload"]["jobs"] == 50 and resolved["run"]["seeds"] == [3]


def test_run_without_out_writes_under_results(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, BASE.replace("jobs = 200", "jobs = 20").replace("[0, 1]", "[0]"), "tiny.toml")
    assert main(["run", str(cfg), "--jobs", "1", "--quiet"]) == 0
    [folder] = list((tmp_path / "results" / "tiny").iterdir())
    assert f"results: {Path('results') / 'tiny' / folder.name}" in capsys.readouterr().out
    assert len(read_runs(folder)) == 1
    assert not folder.name.startswith(".")


def test_run_refuses_a_non_empty_out_folder_and_leaves_it_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, TINY)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    ran = []
    monkeypatch.setattr(runner, "_one", lambda t: ran.append(t))
    assert main(["run", str(cfg), "--out", str(out), "--jobs", "1", "--quiet"]) == 2
    assert_one_error_line(capsys.readouterr().err, str(out), "not empty")
    assert ran == []
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml", "out"]


def test_run_accepts_an_empty_out_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, BASE.replace("[0, 1]", "[0]"))
    out = tmp_path / "out"
    out.mkdir()
    assert main(["run", str(cfg), "--out", str(out), "--jobs", "1", "--quiet"]) == 0
    assert len(read_runs(out)) == 1


def test_out_under_a_file_is_refused_before_running(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, BASE)
    (tmp_path / "afile").write_text("x")
    ran = []
    monkeypatch.setattr(runner, "_one", lambda t: ran.append(t) or {"point": t[0], "label": "", "seed": t[2]})
    try:
        code = main(["run", str(cfg), "--out", str(tmp_path / "afile" / "sub"), "--jobs", "1", "--quiet"])
    except OSError:
        code = None
    assert code == 2
    assert ran == []
    assert_one_error_line(capsys.readouterr().err, "afile")


# --- Ctrl-C ------------------------------------------------------------------------

def interrupt_on_call(monkeypatch, n: int) -> list:
    """Make runner._one run for real but raise KeyboardInterrupt on its n-th call (1-based)."""
    real = runner._one
    calls = []

    def one(task):
        calls.append(task)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(runner, "_one", one)
    return calls


def test_ctrl_c_keeps_the_finished_runs_and_says_where(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, TINY)
    out = tmp_path / "out"
    calls = interrupt_on_call(monkeypatch, 2)
    code = main(["run", str(cfg), "--out", str(out), "--jobs", "1", "--quiet"])
    _, err = capsys.readouterr()
    assert code == 130
    assert len(calls) == 2                                  # it stopped at the interrupt
    saved = tmp_path / "out-interrupted"
    assert err.splitlines() == [f"testbed: interrupted; finished runs are in {saved}"]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml", "out-interrupted"]
    rows = read_runs(saved)
    assert len(rows) == 1
    assert (rows[0]["point"], rows[0]["seed"], int(rows[0]["finished"])) == ("0", "0", 200)
    assert "Interrupted" in (saved / "summary.md").read_text()
    assert "1 of 4" in (saved / "summary.md").read_text()
    assert load_experiment(saved / "config.toml").resolved == load_experiment(cfg).resolved


def test_ctrl_c_before_any_run_finished_still_says_where(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, TINY)
    interrupt_on_call(monkeypatch, 1)
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--jobs", "1", "--quiet"]) == 130
    saved = tmp_path / "out-interrupted"
    assert str(saved) in capsys.readouterr().err
    assert "No run finished" in (saved / "summary.md").read_text()


def test_a_second_ctrl_c_with_the_same_out_keeps_both(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, TINY)
    argv = ["run", str(cfg), "--out", str(tmp_path / "out"), "--jobs", "1", "--quiet"]
    interrupt_on_call(monkeypatch, 2)
    assert main(argv) == 130
    interrupt_on_call(monkeypatch, 2)
    try:
        code = main(argv)
    except OSError:
        code = None
    assert code == 130
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_ctrl_c_while_writing_leaves_nothing_half_written(tmp_path, monkeypatch, capsys):
    from testbed.studies.studies import STUDIES

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, BASE.replace("[0, 1]", "[0]"))
    monkeypatch.setattr(STUDIES["compare"], "figures", interrupted)
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--jobs", "1", "--quiet"]) == 130
    capsys.readouterr()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
