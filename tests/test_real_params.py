"""The runtime's timing parameters: one table, validated, documented in the README, and
carried to every process (only the last test starts a cluster)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import testbed as tb
from testbed.real import api, params


def test_the_readme_lists_every_parameter_as_the_table_defines_it():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    m = re.search(r"<!-- runtime-parameters:begin -->\n(.*?)\n<!-- runtime-parameters:end -->", text, re.S)
    assert m, "README has no Runtime parameters table"
    assert m.group(1) == params.markdown_table()


def test_every_parameter_has_a_unit_and_a_meaning():
    for name, f in params.RUNTIME.items():
        assert name.endswith(("_s", "_heartbeats", "_calls")), name
        unit, _, meaning = f.doc.partition(":")
        assert unit in ("seconds", "heartbeat intervals", "calls") and len(meaning) > 20, name


def test_resolve_fills_defaults_and_takes_overrides():
    got = params.resolve({"gcs_write_behind_s": 0})
    assert got["gcs_write_behind_s"] == 0.0
    assert {k: v for k, v in got.items() if k != "gcs_write_behind_s"} == \
        {k: f.default for k, f in params.RUNTIME.items() if k != "gcs_write_behind_s"}


@pytest.mark.parametrize("bad, words", [
    ({"gcs_write_behind": 0.1}, "_system_config.gcs_write_behind"),
    ({"start_timeout_s": 0}, "_system_config.start_timeout_s"),
    ({"gcs_ack_coalesce_s": "fast"}, "_system_config.gcs_ack_coalesce_s"),
    ({"handshake_timeout_s": True}, "_system_config.handshake_timeout_s"),
])
def test_a_bad_parameter_is_a_value_error_naming_it(bad, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        params.resolve(bad)


def test_init_rejects_a_bad_system_config_before_starting_anything(monkeypatch):
    monkeypatch.setattr(api, "Cluster", lambda config: pytest.fail("a cluster was started"))
    with pytest.raises(ValueError, match="no_such_knob"):
        tb.init(num_cpus=1, _system_config={"no_such_knob": 1})


@tb.remote
def _param(name):
    """A task's view of its process's parameter (workers fork from the supervisor)."""
    return params.get(name)


def test_every_process_gets_the_cluster_s_parameters():
    """An override reaches the processes: the workers (forked from the supervisor, like every
    role) see it, and tasks run with a zero write-behind window."""
    with tb.init(num_cpus=1, num_nodes=2, _system_config={"gcs_write_behind_s": 0.0,
                                                            "lost_recheck_min_s": 0.5}) as c:
        assert tb.get([_param.remote("gcs_write_behind_s") for _ in range(20)], timeout=60) == [0.0] * 20
        assert tb.get(_param.remote("lost_recheck_min_s"), timeout=60) == 0.5
        assert c.config["system"]["gcs_write_behind_s"] == 0.0
        assert c.config["system"]["lost_recheck_min_s"] == 0.5
        assert c.config["system"]["start_timeout_s"] == params.RUNTIME["start_timeout_s"].default
