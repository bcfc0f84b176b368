"""Spillover policies: keep a task on its node or forward it to the global scheduler."""
from __future__ import annotations

import numpy as np
import pytest

from testbed.core.errors import ConfigError
from testbed.core.views import InputView, LocalView, TaskView, make_cluster_view
from testbed.policy.base import KeyedEstimator
from testbed.policy.estimators import ExponentialAverage
from testbed.policy.placement import PaperWaitTime
from testbed.policy.registry import build, builtins
from testbed.policy.spillover import (AlwaysGlobal, AlwaysLocal, IdleWorkerAndLocalInputs,
                                      QueueThreshold)

RNG = np.random.default_rng(0)


def bind(policy, keying="node"):
    """Bind EWMA estimators to a placement policy (for the end-to-end test below)."""
    policy.bind_estimators(KeyedEstimator(lambda: ExponentialAverage(0.5), keying),
                           KeyedEstimator(lambda: ExponentialAverage(0.5), keying, "bandwidth"))
    return policy


def local(queue=0, idle=1, total=None, available=None, node=0):
    total = {"CPU": 4.0} if total is None else total
    available = dict(total) if available is None else available
    return LocalView(node=node, total=total, available=available, queue_length=queue,
                     running=0, idle_workers=idle)


def task(demand=None, locations=()):
    return TaskView(task_id=1, function="f", demand={"CPU": 1.0} if demand is None else demand,
                    inputs=tuple(InputView(10, tuple(l)) for l in locations))


def fwd(policy, t, lv):
    return policy.should_forward(t, lv, 0.0, RNG)


def test_queue_threshold_forwards_at_threshold():
    p = QueueThreshold(threshold=3)
    assert [fwd(p, task(), local(queue=q)) for q in range(5)] == [False, False, False, True, True]
    assert fwd(QueueThreshold(threshold=0), task(), local(queue=0))


def test_queue_threshold_forwards_what_the_node_can_never_hold():
    """A GPU task on a CPU-only node is forwarded even with an empty queue; a busy node
    (nothing available) keeps it below the threshold."""
    p = QueueThreshold()
    assert fwd(p, task({"GPU": 1}), local())
    assert fwd(p, task({"CPU": 8}), local())
    assert not fwd(p, task(), local(queue=7, available={"CPU": 0.0}))


def test_idle_worker_and_local_inputs_keeps_only_when_all_hold():
    p = IdleWorkerAndLocalInputs()
    assert not fwd(p, task(locations=[[0, 2], [0]]), local())
    assert fwd(p, task(locations=[[0], [1]]), local())                 # an input is remote
    assert fwd(p, task(), local(idle=0))                                # no idle worker
    assert fwd(p, task(), local(available={"CPU": 0.5}))                # not available now
    assert fwd(p, task({"GPU": 1}), local())
    assert not fwd(p, task(locations=[[3]]), local(node=3))


def test_always_local_forwards_only_the_impossible():
    p = AlwaysLocal()
    assert not fwd(p, task(), local(queue=1000, idle=0, available={"CPU": 0.0}))
    assert fwd(p, task({"CPU": 1, "GPU": 1}), local())


def test_always_global_forwards_everything():
    assert fwd(AlwaysGlobal(), task(), local())


@pytest.mark.parametrize("bad", [-1, 2.5, True, "8"])
def test_queue_threshold_validation(bad):
    with pytest.raises(ValueError, match="threshold"):
        QueueThreshold(threshold=bad)


def test_registry_builds_spillover_and_names_key_on_error():
    assert list(builtins("spillover")) == ["QueueThreshold", "ResourceAware", "IdleWorkerAndLocalInputs",
                                           "AlwaysLocal", "AlwaysGlobal"]
    assert build("spillover", {"name": "QueueThreshold", "threshold": 2}, key="s").threshold == 2
    with pytest.raises(ConfigError, match="scheduler.spillover") as exc:
        build("spillover", {"name": "QueueThreshold", "threshold": -1}, key="scheduler.spillover")
    assert "threshold" in str(exc.value)
    with pytest.raises(ConfigError, match="scheduler.spillover"):
        build("spillover", "testbed.policy.placement:Random", key="scheduler.spillover")


def test_forwarded_task_is_placed_where_it_fits():
    """Bottom-up: node 0 cannot hold a GPU task, so it forwards; placement picks the GPU node."""
    t = task({"CPU": 1, "GPU": 1})
    assert fwd(QueueThreshold(), t, local())
    v = make_cluster_view([{"total": {"CPU": 4}, "queue_length": 0},
                           {"total": {"CPU": 4, "GPU": 1}, "queue_length": 3}])
    assert bind(PaperWaitTime()).place(t, v, 0.0, RNG).node == 1
