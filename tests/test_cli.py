"""The ``testbed`` command: every user error is one line on stderr naming the file and
the key, exit status 2, no traceback and nothing under results/; a run writes config.toml,
runs.csv, figures and summary.md; Ctrl-C keeps what finished and says where."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from testbed.cli import main
from testbed.core import config as C
from testbed.studies import executors, runner
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
MEAN = '{dist = "exponential", mean = 0.01}'


def nested_mixture(depth: int) -> str:
    """A ``mixture`` distribution whose one component is a mixture, ``depth`` levels down."""
    d = MEAN
    for _ in range(depth):
        d = '{dist = "mixture", components = [' + d.replace("{", "{weight = 1.0, ", 1) + "]}"
    return d


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
    ("set-out-of-range", BASE, ["--set", "cluster.nodes=0"], ["{file}", "cluster.nodes", "1..1,000,000"]),
    ("unknown-option", BASE, ["--frobnicate"], ["--frobnicate"]),
    ("no-such-file", None, [], ["{file}", "no such file"]),
    ("jobs-0", BASE, ["--jobs", "0"], ["--jobs", "positive integer"]),
    ("jobs-not-a-number", BASE, ["--jobs", "many"], ["--jobs", "positive integer"]),
    ("sweep-point-invalid", BASE + '[sweep]\n"cluster.nodes" = [4, 0]\n', [],
     ["{file}", "cluster.nodes", "sweep point", "nodes=0"]),
    # nesting: tomllib recurses (RecursionError) and so would every walk over the parsed data
    ("arrays-5000-deep", BASE + "x = " + "[" * 5000 + "]" * 5000 + "\n", [], ["{file}", "nested too deep"]),
    ("inline-tables-5000-deep", BASE + "x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n", [],
     ["{file}", "nested too deep"]),
    ("mixture-300-deep", BASE.replace(MEAN, nested_mixture(300)), [], ["{file}", "nested"]),
    ("mixture-20-deep", BASE.replace(MEAN, nested_mixture(20)), [],
     ["{file}", "workload.duration", "nested more than 32 deep"]),
    # sizes: every count has an upper bound, every integer fits in 64 bits
    ("nodes-1e23", BASE.replace("nodes = 4", "nodes = " + str(10**23)), [],
     ["{file}", "cluster.nodes", "1..1,000,000", "10^23"]),
    ("jobs-1e18", BASE.replace("jobs = 200", "jobs = " + str(10**18)), [],
     ["{file}", "workload.jobs", "1..1,000,000,000"]),
    ("seed-past-64-bits", BASE.replace("seeds = [0, 1]", "seeds = [" + str(10**20) + "]"), [],
     ["{file}", "run.seeds", "64 bits"]),
    ("integer-of-5000-digits", BASE.replace("nodes = 4", "nodes = " + "9" * 5000), [],
     ["{file}", "malformed TOML", "4300 digits"]),
    ("node-groups-past-the-bound", BASE, ["--set", "cluster.node_groups=[{count=1000000}, {count=1}]"],
     ["{file}", "cluster.node_groups", "1,000,001"]),
    ("gcs-shards-1e9", BASE, ["--set", "cluster.gcs_shards=1000000000"], ["{file}", "cluster.gcs_shards", "10,000"]),
    # line breaks: refused in --set (TOML would read up to the break), escaped when echoed
    ("set-value-with-newline", BASE, ["--set", "cluster.nodes=3\n4"],
     ["{file}", "--set", "'cluster.nodes=3\\n4'", "one line"]),
    ("set-key-with-newline", BASE, ["--set", "cluster.no\ndes=3"], ["{file}", "'cluster.no\\ndes=3'", "one line"]),
    ("toml-key-with-newline", BASE.replace("nodes = 4", '"no\\ndes" = 4'), [], ["{file}", "'cluster.no\\ndes'"]),
    ("set-value-5000-deep", BASE, ["--set", "cluster.resources=" + "[" * 5000 + "]" * 5000], ["{file}", "--set"]),
    ("out-with-newline", BASE, ["--out", "a\nb"], ["--out", "'a\\nb'"]),
    ("out-empty", BASE, ["--out", ""], ["--out"]),
    # --jobs: capped at min(runs, cores), absurd values refused
    ("jobs-2000", BASE, ["--jobs", "2000"], ["--jobs", "1,024"]),
    ("jobs-1e9", BASE, ["--jobs", "1000000000"], ["--jobs", "1,024"]),
    # the number of runs: refused past --max-runs (default 10,000), before any point is resolved
    # (kept small, 6,000 points: unrefused, a million points once filled 23 GB resolving them)
    ("sweep-of-12000-runs", BASE + '[sweep]\n"cluster.nodes" = [' + ", ".join(["1"] * 100) + ']\n'
     '"cluster.cpus_per_node" = [' + ", ".join(["1"] * 60) + "]\n", [],
     ["{file}", "sweep", "6,000 point(s) x 2 seed(s) = 12,000 runs", "--max-runs 12000"]),
    ("seeds-past-max-runs", BASE, ["--max-runs", "1"], ["{file}", "run.seeds", "2 runs", "--max-runs 2"]),
    # degenerate values that made a run tick until run.max_sim_time_s (1e7 s: hours of wall time)
    ("heartbeat-1e-9", BASE, ["--set", "cluster.heartbeat_interval_s=1e-9"],
     ["{file}", "cluster.heartbeat_interval_s", ">= 0.0001"]),
    ("kill-every-1e-9", BASE, ["--set", "faults.kill_every_s=1e-9"], ["{file}", "faults.kill_every_s", "0 or >= 0.0001"]),
    ("rate-1e-300", BASE, ["--set", "workload.arrival=\"poisson\"", "--set", "workload.rate_per_s=1e-300"],
     ["{file}", "workload.rate_per_s", "no job would arrive"]),
    ("duration-1e300", BASE.replace(MEAN, '{dist = "constant", value = 1e300}'), [],
     ["{file}", "workload.duration", "no task would finish"]),
    # names that do not exist, wrong types
    ("unknown-placement", BASE + '[scheduler]\nplacement = "NoSuchPolicy"\n', [],
     ["{file}", "scheduler.placement", "NoSuchPolicy"]),
    ("unknown-keying", BASE + '[scheduler]\ntask_time_key = "per_moon"\n', [],
     ["{file}", "scheduler.task_time_key", "per_moon"]),
    ("unknown-shape", BASE.replace('shape = "independent"', 'shape = "ring"'), [], ["{file}", "workload.shape", "ring"]),
    ("unknown-distribution", BASE.replace(MEAN, '{dist = "zipf", a = 2}'), [],
     ["{file}", "workload.duration", "zipf"]),
    ("estimator-wrong-type", BASE + "[scheduler]\ntask_time = 3\n", [], ["{file}", "scheduler.task_time"]),
    ("estimator-name-not-a-string", BASE + "[scheduler]\ntask_time = {name = 3}\n", [],
     ["{file}", "scheduler.task_time", "name"]),
    ("estimator-unknown-argument", BASE + '[scheduler]\ntask_time = {name = "ExponentialAverage", beta = 1}\n', [],
     ["{file}", "scheduler.task_time", "beta"]),
    ("set-policy-argument-unknown", BASE, ["--set", "scheduler.task_time.beta=1"],
     ["{file}", "scheduler.task_time", "beta"]),
    ("set-into-a-value", BASE, ["--set", "cluster.nodes.x=1"], ["{file}", "cluster.nodes", "not a table"]),
    ("seeds-not-a-list", BASE.replace("seeds = [0, 1]", "seeds = 3"), [], ["{file}", "run.seeds", "list"]),
    ("seeds-repeated", BASE.replace("seeds = [0, 1]", "seeds = [1, 1]"), [], ["{file}", "run.seeds", "distinct"]),
    ("seeds-of-strings", BASE.replace("seeds = [0, 1]", 'seeds = ["a"]'), [], ["{file}", "run.seeds", "item 0"]),
    ("sweep-axis-not-a-list", BASE + '[sweep]\n"cluster.nodes" = 4\n', [], ["{file}", "sweep.cluster.nodes", "list"]),
]


def no_pool(*args, **kwargs):
    pytest.fail(f"a process pool was made: {kwargs}")


@pytest.mark.parametrize("text, extra, needles", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys, text, extra, needles):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "exp.toml"
    if text is not None:
        cfg.write_text(text)
    ran = []
    monkeypatch.setattr(runner, "_one", lambda t: ran.append(t))     # nothing may start
    monkeypatch.setattr(executors.cf, "ProcessPoolExecutor", no_pool)   # (--jobs 10**9 once forked until killed)
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
    (["bench", "sim", "--tasks", str(10**20)], "--tasks"),
    (["validate", ""], "''"),
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


def test_validate_accepts_every_toml_in_experiments(capsys):
    """`testbed validate experiments/*.toml` passes: every file there is an experiment (the
    calibration lives in experiments/calibration/, not beside them)."""
    paths = sorted(str(p) for p in EXPERIMENTS.glob("*.toml"))
    assert len(paths) >= 8
    assert main(["validate", *paths]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == len(paths) and err == ""


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


# --- config files that are not files, plug-ins that misbehave ------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "too-large"])
def test_a_config_that_is_not_a_small_regular_file_is_refused(tmp_path, monkeypatch, capsys, kind):
    """A FIFO would block the read forever and /dev/zero never ends: both are refused by
    their kind, a regular file by its size, before a byte is read."""
    monkeypatch.chdir(tmp_path)
    if kind == "fifo":
        path, needle = tmp_path / "exp.toml", "FIFO"
        os.mkfifo(path)
    elif kind == "dev-zero":
        path, needle = Path("/dev/zero"), "character device"
    else:
        path, needle = write(tmp_path, BASE + "#" * (C.MAX_CONFIG_BYTES + 1) + "\n"), "bytes"
    assert main(["validate", str(path)]) == 2
    assert_one_error_line(capsys.readouterr().err, str(path), needle)


def write_plugin(tmp_path: Path, monkeypatch, body: str) -> str:
    """A plug-in module under a fresh name (so no earlier import is reused); returns its name."""
    name = f"plugin_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


PLUGIN_BODY = """\
import sys
from testbed.policy.placement import PaperWaitTime

class Raises(PaperWaitTime):
    def __init__(self, **kwargs):
        raise RuntimeError("no GPU here\\nsecond line")

class Exits(PaperWaitTime):
    def __init__(self, **kwargs):
        sys.exit(0)

class ExitsWhenPlacing(PaperWaitTime):
    def place(self, *args, **kwargs):
        sys.exit(0)
"""


@pytest.mark.parametrize("cmd", ["validate", "run"])
@pytest.mark.parametrize("cls, needles", [
    ("Raises", ["RuntimeError", "no GPU here\\nsecond line"]),
    ("Exits", ["SystemExit(0)"]),
])
def test_a_plugin_whose_init_raises_or_exits_is_one_line_exit_2(tmp_path, monkeypatch, capsys, cmd, cls, needles):
    monkeypatch.chdir(tmp_path)
    mod = write_plugin(tmp_path, monkeypatch, PLUGIN_BODY)
    cfg = write(tmp_path, BASE + f'[scheduler]\nplacement = "{mod}:{cls}"\n')
    ran = []
    monkeypatch.setattr(runner, "_one", lambda t: ran.append(t))
    assert main([cmd, str(cfg)]) == 2
    out, err = capsys.readouterr()
    assert_one_error_line(err, str(cfg), "scheduler.placement", f"{mod}:{cls}", *needles)
    assert out == "" and ran == [] and results_is_empty(tmp_path)


def test_a_plugin_that_exits_on_import_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mod = write_plugin(tmp_path, monkeypatch, "import sys\nsys.exit(0)\n")
    cfg = write(tmp_path, BASE + f'[scheduler]\nplacement = "{mod}:Policy"\n')
    assert main(["validate", str(cfg)]) == 2
    out, err = capsys.readouterr()
    assert_one_error_line(err, str(cfg), "scheduler.placement", f"{mod}:Policy", "SystemExit(0)")
    assert out == ""


def test_a_plugin_that_exits_during_a_run_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mod = write_plugin(tmp_path, monkeypatch, PLUGIN_BODY)
    cfg = write(tmp_path, BASE.replace("[0, 1]", "[0]") + f'[scheduler]\nplacement = "{mod}:ExitsWhenPlacing"\n'
                'spillover = "AlwaysGlobal"\n')
    assert main(["run", str(cfg), "--jobs", "1", "--quiet"]) == 2
    assert_one_error_line(capsys.readouterr().err, "seed 0", "SystemExit(0)")
    assert results_is_empty(tmp_path)


# --- --jobs, --max-runs ----------------------------------------------------------------

class RecordingPool:
    """A stand-in for ProcessPoolExecutor that records max_workers and runs each task inline."""
    made: list[int] = []

    def __init__(self, max_workers, **kwargs):
        RecordingPool.made.append(max_workers)

    def submit(self, fn, *args):
        import concurrent.futures as cf
        f = cf.Future()
        f.set_result(fn(*args))
        return f

    def shutdown(self, wait=True, cancel_futures=False):
        pass


@pytest.mark.parametrize("jobs, cores, expected", [("400", 8, 4), ("400", 2, 2), (None, 2, 2), ("3", 8, 3)])
def test_jobs_is_capped_at_the_runs_and_the_cores(tmp_path, monkeypatch, capsys, jobs, cores, expected):
    """--jobs 400 with 4 runs used to fork 400 processes (and --jobs 10**9 forked until killed)."""
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, TINY)                                   # 2 points x 2 seeds
    monkeypatch.setattr(runner.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(executors.cf, "ProcessPoolExecutor", RecordingPool)
    monkeypatch.setattr(RecordingPool, "made", [])
    argv = ["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"] + (["--jobs", jobs] if jobs else [])
    assert main(argv) == 0
    assert RecordingPool.made == [expected]
    assert len(read_runs(tmp_path / "out")) == 4


def test_help_says_the_caps(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--jobs" in text and "CPU cores" in text and "1,024" in text
    assert "--max-runs" in text and "10,000" in text


def test_max_runs_allows_a_larger_sweep_and_the_count_is_said(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, TINY)                                   # 4 runs
    assert main(["validate", str(cfg), "--max-runs", "3"]) == 2
    assert_one_error_line(capsys.readouterr().err, "4 runs", "--max-runs 4")
    assert main(["validate", str(cfg), "--max-runs", "4"]) == 0
    assert main(["run", str(cfg), "--max-runs", "4", "--jobs", "1", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "2 point(s) x 2 seed(s) = 4 run(s)" in err


# --- the results folder cannot be written ---------------------------------------------

def full_disk(monkeypatch):
    """Make every probe file land on /dev/full: creating it works, writing it fails with ENOSPC."""
    import tempfile
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, path = real(*args, **kwargs)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), path

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_a_full_disk_is_refused_before_anything_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, BASE)
    full_disk(monkeypatch)
    ran = []
    monkeypatch.setattr(runner, "_one", lambda t: ran.append(t) or {"point": t[0], "label": "", "seed": t[2]})
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--jobs", "1", "--quiet"]) == 2
    assert_one_error_line(capsys.readouterr().err, "--out", str(tmp_path / "out"), "No space left")
    assert ran == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml"]


def test_a_write_failure_at_the_end_keeps_the_finished_runs_and_says_where(tmp_path, monkeypatch, capsys):
    """The disk fills while the figures are written: the folder is not made (all or nothing),
    but the four finished runs are saved in <out>-incomplete and the error line says so."""
    import errno

    from testbed.studies.studies import STUDIES

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, TINY)
    monkeypatch.setattr(STUDIES["compare"], "figures", disk_full)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--jobs", "1", "--quiet"]) == 2
    saved = tmp_path / "out-incomplete"
    assert_one_error_line(capsys.readouterr().err, str(out), "No space left", "4 finished run(s)",
                          str(saved / "runs.csv"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml", "out-incomplete"]
    rows = read_runs(saved)
    assert [(r["point"], r["seed"]) for r in rows] == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert all(int(r["finished"]) == 200 for r in rows)
    assert load_experiment(saved / "config.toml").resolved == load_experiment(cfg).resolved


# --- messages stay on one line; --set reaches a policy's argument ------------------------

def test_a_config_error_is_one_line_whatever_it_echoes():
    from testbed.core.errors import ConfigError
    err = ConfigError("bad value 'a\nb'\u2028too", key="cluster.no\rdes", file="dir\n/exp.toml")
    assert len(str(err).splitlines()) == 1
    assert "'dir\\n/exp.toml'" in str(err) and "'cluster.no\\rdes'" in str(err)


def test_set_on_an_argument_of_a_default_policy_keeps_its_name(tmp_path):
    cfg = write(tmp_path, BASE)
    exp = load_experiment(cfg, ["scheduler.task_time.alpha=0.5", "scheduler.placement.per_slot=false"])
    sched = exp.points[0].config["scheduler"]
    assert sched["task_time"] == {"name": "ExponentialAverage", "alpha": 0.5}
    assert sched["placement"] == {"name": "PaperWaitTime", "per_slot": False}
