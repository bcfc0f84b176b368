"""``testbed run CONFIG --resume DIR``: only the points x seeds missing from DIR run; the
combined folder is what one full run would have written (but for wall times); DIR is kept; a
DIR of another config, or not a results folder, is one line and exit 2 with nothing written."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from testbed.cli import main
from testbed.studies import runner

#: 2 points x 2 seeds, well under a second (as in test_cli)
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
#: columns that measure this machine, not the run
WALL = ["engine_wall_s"]


def run(*argv) -> int:
    return main(["run", *map(str, argv), "--jobs", "1", "--quiet"])


def runs(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "runs.csv").drop(columns=WALL)


def count_runs(monkeypatch) -> list:
    calls = []
    real = runner._one

    def one(task):
        calls.append((task[0], task[2]))
        return real(task)

    monkeypatch.setattr(runner, "_one", one)
    return calls


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "exp.toml"
    path.write_text(TINY)
    return path


@pytest.fixture
def full(cfg, tmp_path, capsys):
    """The reference: one full run of all four."""
    assert run(cfg, "--out", tmp_path / "full") == 0
    capsys.readouterr()
    return tmp_path / "full"


def test_resume_adds_the_missing_seeds_and_equals_a_full_run(cfg, full, tmp_path, monkeypatch, capsys):
    assert run(cfg, "--out", tmp_path / "half", "--set", "run.seeds=[0]") == 0
    before = (tmp_path / "half" / "runs.csv").read_bytes()
    calls = count_runs(monkeypatch)
    assert run(cfg, "--resume", tmp_path / "half", "--out", tmp_path / "both") == 0
    assert f"results: {tmp_path / 'both'}" in capsys.readouterr().out
    assert sorted(calls) == [(0, 1), (1, 1)]                       # only seed 1 of each point ran
    pd.testing.assert_frame_equal(runs(tmp_path / "both"), runs(full))
    assert (tmp_path / "both" / "config.toml").read_text() == (full / "config.toml").read_text()
    assert (tmp_path / "half" / "runs.csv").read_bytes() == before   # DIR is left as it was
    assert "Resumed from" in (tmp_path / "both" / "summary.md").read_text()


def test_resume_completes_an_interrupted_run(cfg, full, tmp_path, monkeypatch, capsys):
    real = runner._one
    n = []

    def interrupt_third(task):
        n.append(task)
        if len(n) == 3:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(runner, "_one", interrupt_third)
    assert run(cfg, "--out", tmp_path / "out") == 130
    saved = tmp_path / "out-interrupted"
    assert len(pd.read_csv(saved / "runs.csv")) == 2
    calls = count_runs(monkeypatch)
    assert run(cfg, "--resume", saved, "--out", tmp_path / "done") == 0
    assert sorted(calls) == [(1, 0), (1, 1)]
    pd.testing.assert_frame_equal(runs(tmp_path / "done"), runs(full))


def test_a_run_missing_from_the_middle_is_run_again(cfg, full, tmp_path, monkeypatch):
    gap = tmp_path / "gap"
    shutil.copytree(full, gap)
    table = pd.read_csv(gap / "runs.csv")
    table[~((table.point == 0) & (table.seed == 1))].to_csv(gap / "runs.csv", index=False)
    calls = count_runs(monkeypatch)
    assert run(cfg, "--resume", gap, "--out", tmp_path / "filled") == 0
    assert calls == [(0, 1)]
    pd.testing.assert_frame_equal(runs(tmp_path / "filled"), runs(full))


def test_resume_with_nothing_missing_runs_nothing_and_writes_nothing(cfg, full, tmp_path, monkeypatch, capsys):
    calls = count_runs(monkeypatch)
    assert run(cfg, "--resume", full) == 0
    out, err = capsys.readouterr()
    assert calls == [] and f"results: {full}" in out and "nothing to resume" in err
    assert not (tmp_path / "results").exists()


def test_resume_keeps_the_traces_of_the_runs_it_did_not_redo(cfg, tmp_path, monkeypatch):
    assert run(cfg, "--out", tmp_path / "half", "--set", "run.seeds=[0]", "--set", 'run.trace_out="csv"') == 0
    assert run(cfg, "--resume", tmp_path / "half", "--out", tmp_path / "both", "--set", 'run.trace_out="csv"') == 0
    names = sorted(p.name for p in (tmp_path / "both").glob("trace-*"))
    assert names == ["trace-0-0.csv", "trace-0-1.csv", "trace-1-0.csv", "trace-1-1.csv"]
    assert (tmp_path / "both" / "trace-0-0.csv").read_bytes() == (tmp_path / "half" / "trace-0-0.csv").read_bytes()


def _one_line(err: str, *needles: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("testbed: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.mark.parametrize("text, extra, needles", [
    (TINY, ["--set", "cluster.cpus_per_node=8"], ["differs", "cluster.cpus_per_node", "4.0 there, 8.0 here"]),
    (TINY.replace("[2, 4]", "[2, 8]"), [], ["differs", "at sweep.cluster.nodes", "[2, 4] there, [2, 8] here"]),
    (TINY.replace('trace = "aggregate"', 'trace = "aggregate"\nstudy = "estimators"'), [], ["at run.study"]),
])
def test_resume_refuses_another_config_in_one_line(full, tmp_path, monkeypatch, capsys, text, extra, needles):
    other = tmp_path / "other.toml"
    other.write_text(text)
    calls = count_runs(monkeypatch)
    assert run(other, "--resume", full, "--out", tmp_path / "new", *extra) == 2
    _one_line(capsys.readouterr().err, f"--resume {full}", *needles)
    assert calls == [] and not (tmp_path / "new").exists()


def _bad_runs_csv(full: Path, text_of) -> Path:
    d = full.parent / "bad"
    shutil.copytree(full, d)
    (d / "runs.csv").write_text(text_of((d / "runs.csv").read_text()))
    return d


@pytest.mark.parametrize("make, needles", [
    (lambda full: full.parent / "nope", ["no such folder"]),
    (lambda full: full / "runs.csv", ["not a folder"]),
    (lambda full: (full.parent / "empty").mkdir() or full.parent / "empty", ["no config.toml"]),
    (lambda full: _bad_runs_csv(full, lambda t: t.replace("\n1,", "\n7,", 1)), ["line 4", "point 7", "2 point(s)"]),
    (lambda full: _bad_runs_csv(full, lambda t: t + t.splitlines()[1] + "\n"), ["appears twice"]),
    (lambda full: _bad_runs_csv(full, lambda t: "a,b\n1,2\n"), ["no point and seed columns"]),
    (lambda full: _bad_runs_csv(full, lambda t: t.replace("nodes=4", "nodes=5")), ["point 1 is 'nodes=5' there"]),
])
def test_resume_refuses_a_folder_that_is_not_this_configs_results(cfg, full, tmp_path, monkeypatch, capsys,
                                                                   make, needles):
    d = make(full)
    calls = count_runs(monkeypatch)
    assert run(cfg, "--resume", d, "--out", tmp_path / "new") == 2
    _one_line(capsys.readouterr().err, "--resume", *needles)
    assert calls == [] and not (tmp_path / "new").exists()
