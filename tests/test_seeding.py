"""One seeding rule for both engines (testbed.core.seeding): the same seed gives the
placement policy the same stream in the simulator and in the runtime's global scheduler."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from testbed.core.seeding import policy_rng
from testbed.core.views import ClusterView, TaskView
from testbed.policy.build import build_policies
from testbed.real import gsched
from testbed.studies.execute import make_simulation
from testbed.studies.experiment import resolve


def _cfg():
    return resolve({"cluster": {"nodes": 8, "cpus_per_node": 2},
                    "scheduler": {"placement": "Random", "spillover": "AlwaysGlobal"},
                    "workload": {"jobs": 10}})


def _global_scheduler(cfg, seed, monkeypatch):
    """A GlobalScheduler built with its sockets and GCS client stubbed (no processes)."""
    class Stub:
        def __init__(self, *a, **k):
            pass

        def __getattr__(self, name):
            return lambda *a, **k: None
    monkeypatch.setattr(gsched, "Loop", Stub)
    monkeypatch.setattr(gsched, "GcsClient", Stub)
    ctx = SimpleNamespace(config={"scheduler": cfg["scheduler"], "seed": seed, "heartbeat_interval_s": 0.1,
                                  "num_heartbeats_timeout": 100, "nodes": []},
                          secret=b"x", global_scheduler=lambda: None)
    return gsched.GlobalScheduler(ctx)


def _random_choices(rng, k=50, n=8):
    placement, _ = build_policies(_cfg()["scheduler"])
    view = ClusterView(version=1, as_of=0.0, resource_names=["CPU"], total=np.full((n, 1), 2.0),
                       available=np.full((n, 1), 2.0), queue_length=np.zeros(n), running=np.zeros(n))
    task = TaskView(0, "f", {"CPU": 1.0}, (), 0)
    return [int(placement.place(task, view, 0.0, rng).node) for _ in range(k)]


@pytest.mark.parametrize("seed", [0, 3])
def test_both_engines_place_the_first_random_decisions_identically(seed, monkeypatch):
    cfg = _cfg()
    sim_rng = make_simulation(cfg, seed).rng
    real_rng = _global_scheduler(cfg, seed, monkeypatch).rng
    sim, real = _random_choices(sim_rng), _random_choices(real_rng)
    assert sim == real
    assert len(set(sim)) > 1                       # they are draws, not a constant
    other = _random_choices(_global_scheduler(cfg, seed + 1, monkeypatch).rng)
    assert other != real                           # and the seed matters


def test_streams_differ_by_role_and_node_and_bad_input_is_named():
    a = policy_rng(1, "placement").integers(1 << 30, size=4).tolist()
    b = policy_rng(1, "spillover", 0).integers(1 << 30, size=4).tolist()
    c = policy_rng(1, "spillover", 1).integers(1 << 30, size=4).tolist()
    assert len({tuple(a), tuple(b), tuple(c)}) == 3
    assert a == np.random.default_rng(np.random.SeedSequence([1, 0x5C4ED])).integers(1 << 30, size=4).tolist()
    with pytest.raises(ValueError, match="role"):
        policy_rng(1, "nope")
    with pytest.raises(ValueError, match="node index"):
        policy_rng(1, "spillover")
    with pytest.raises(ValueError, match="seed"):
        policy_rng(-1, "placement")
