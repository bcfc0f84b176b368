"""tb.init(preload=[...]): modules imported once where the workers fork from, so a task's first
call on a worker does not pay their import (the real engine's first-second warm-up)."""
from __future__ import annotations

import sys

import pytest

import testbed as tb
from conftest import assert_cluster_gone
from testbed.real import api

pytestmark = pytest.mark.timeout(120)


@tb.remote
def _imported(name: str) -> bool:
    return name in sys.modules


@pytest.fixture
def probe_module(tmp_path, monkeypatch):
    """A module only this test imports, on sys.path (the cluster's processes get the driver's)."""
    name = f"tb_preload_probe_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_a_preloaded_module_is_imported_in_every_worker_before_its_first_task(probe_module):
    with tb.init(num_cpus=2) as c:
        cold = tb.get([_imported.remote(probe_module) for _ in range(4)], timeout=60)
    assert_cluster_gone(c)
    with tb.init(num_cpus=2, preload=[probe_module]) as c:
        warm = tb.get([_imported.remote(probe_module) for _ in range(4)], timeout=60)
    assert_cluster_gone(c)
    assert cold == [False] * 4 and warm == [True] * 4


@pytest.mark.parametrize("preload, error, words", [
    (["no_such_module_here"], ValueError, "preload: no module named 'no_such_module_here'"),
    (["os", 3], ValueError, "preload: expected module names, got 3"),
    ("os", TypeError, "preload must be a list of module names"),
])
def test_a_bad_preload_is_refused_before_anything_starts(monkeypatch, preload, error, words):
    started = []
    monkeypatch.setattr(api, "Cluster", lambda *a, **k: started.append(a))
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        tb.init(num_cpus=1, preload=preload)
    assert not started and not tb.is_initialized()


def test_a_module_that_fails_to_import_stops_the_start_with_one_line(tmp_path, monkeypatch):
    (tmp_path / "tb_preload_broken.py").write_text("raise RuntimeError('boom\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(tb.ClusterError) as info:
        tb.init(num_cpus=1, preload=["tb_preload_broken"])
    msg = str(info.value)
    assert "preload: importing 'tb_preload_broken' failed: RuntimeError: boom" in msg and "\n" not in msg
    assert not tb.is_initialized()          # the no_leftovers fixture checks processes and segments


def test_the_real_engine_preloads_the_module_of_its_task_functions(monkeypatch):
    """Its workers start with _work's module imported, so no run pays the import in its first tasks."""
    from testbed.studies.experiment import resolve
    from testbed.real import engine

    seen = {}

    class Stop(Exception):
        pass

    def fake_init(**kw):
        seen.update(kw)
        raise Stop
    monkeypatch.setattr(api, "init", fake_init)
    with pytest.raises(Stop):
        engine.run_real(resolve({"run": {"engine": "real"}, "workload": {"jobs": 4}}), 0)
    assert engine._work.__module__ in seen["preload"]
