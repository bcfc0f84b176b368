"""tb.init's defaults are the config schema's: one default per knob (no processes started)."""
from __future__ import annotations

import inspect

import pytest

from testbed.core import config as C
from testbed.real import api


@pytest.fixture
def captured(monkeypatch):
    """tb.init with the cluster start replaced: returns the config the processes would get."""
    seen = {}

    class FakeCluster:
        def __init__(self, config, preload=None):
            seen["config"] = config

    monkeypatch.setattr(api, "Cluster", FakeCluster)
    monkeypatch.setattr(api, "_cluster", None)

    def run(**kw):
        api.init(**kw)
        api._cluster = None
        return seen["config"]
    return run


def test_every_schema_backed_keyword_defaults_to_none():
    """A keyword the schema also defines carries no default of its own in the signature."""
    params = inspect.signature(api.init).parameters
    assert set(api.INIT_DEFAULTS) <= set(params)
    assert {k: params[k].default for k in api.INIT_DEFAULTS} == {k: None for k in api.INIT_DEFAULTS}


def test_init_resolves_to_the_schema_defaults(captured):
    """The config tb.init() hands every process holds the schema's value for each key."""
    cfg = captured(num_cpus=1)
    for kw, (section, key) in api.INIT_DEFAULTS.items():
        want = C.SECTIONS[section][key].default
        got = cfg["scheduler"][kw] if section == "scheduler" else cfg[kw]
        assert got == want, kw
    assert cfg["num_heartbeats_timeout"] == 100          # the paper's code: 100 x 100 ms
    assert cfg["seed"] == C.SECTIONS["run"]["seeds"].default[0]


def test_an_explicit_value_wins(captured):
    cfg = captured(num_cpus=1, num_heartbeats_timeout=7, placement="Random")
    assert cfg["num_heartbeats_timeout"] == 7 and cfg["scheduler"]["placement"] == "Random"


def test_seed_is_checked_and_carried(captured):
    assert captured(num_cpus=1, seed=7)["seed"] == 7
    with pytest.raises(ValueError, match="seed"):
        captured(num_cpus=1, seed=-1)
