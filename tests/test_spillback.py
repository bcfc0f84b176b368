"""No stranded work (issue 10): the default spillover policy keeps what can start here, forwards
what another node has room for, and queued work goes back to the global scheduler at a
heartbeat while other nodes have free slots — the same rule in both engines (policy layer:
ResourceAware, ClusterView.elsewhere, placement_view)."""
from __future__ import annotations

import numpy as np
import pytest

from testbed.core.config import default
from testbed.core.views import LocalView, TaskView, make_cluster_view
from testbed.policy.base import placement_view
from testbed.policy.spillover import QueueThreshold, ResourceAware
from testbed.studies.execute import make_simulation
from testbed.studies.experiment import resolve

CPU1 = {"CPU": 1.0}


def _view(avail, total=2.0, alive=None):
    return make_cluster_view([{"total": {"CPU": total}, "available": {"CPU": a}, "queue_length": 0, "running": 0,
                               "alive": True if alive is None else alive[i]} for i, a in enumerate(avail)])


def test_elsewhere_is_the_most_free_on_one_other_live_node_and_the_free_slots_of_the_rest():
    v = _view([2.0, 1.0, 1.5, 2.0], alive=[True, True, True, False])
    assert v.elsewhere(0) == ({"CPU": 1.5}, 2)          # node 3 is dead; node 0 itself left out
    assert v.elsewhere(2) == ({"CPU": 2.0}, 3)
    assert _view([0.0, 0.0]).elsewhere(0) == ({}, 0)


def test_resource_aware_keeps_what_starts_here_and_forwards_what_fits_elsewhere():
    p = ResourceAware(threshold=8)
    t = TaskView(1, "f", CPU1, (), 0)
    here = LocalView(0, {"CPU": 2.0}, {"CPU": 1.0}, 0, 1, 1, {"CPU": 2.0}, 2)
    full = LocalView(0, {"CPU": 2.0}, {"CPU": 0.0}, 3, 2, 0, {"CPU": 2.0}, 2)
    none = LocalView(0, {"CPU": 2.0}, {"CPU": 0.0}, 3, 2, 0, {}, 0)
    assert not p.forwards(t, here, 0.0, None)
    assert p.forwards(t, full, 0.0, None)
    assert not p.forwards(t, none, 0.0, None)                       # nowhere has room: queue here
    assert p.forwards(t, none._replace(queue_length=8), 0.0, None)  # ... up to the paper's threshold
    assert p.spillback(full, 0.0) == 2 and p.spillback(none, 0.0) == 0
    assert QueueThreshold().spillback(full, 0.0) == 0               # the paper's rule never takes work back


def test_an_actor_is_placed_where_its_resources_are_free_now():
    v = _view([0.0, 0.0, 1.0, 2.0])
    only = placement_view(v, CPU1, where_free=True)
    assert only.alive.tolist() == [False, False, True, True]
    assert placement_view(v, CPU1, where_free=True) is only          # cached per demand
    assert placement_view(v, CPU1, where_free=False) is v
    assert placement_view(_view([0.0, 0.0]), CPU1, True).alive.all()     # no room anywhere: wait somewhere


def test_the_default_is_resource_aware():
    assert default("scheduler", "spillover")["name"] == "ResourceAware"


def _burst(spillover, tasks=8):
    """tasks one-second tasks submitted at once by one driver on node 0 of 4 nodes x 2 CPUs."""
    cfg = resolve({"cluster": {"nodes": 4, "cpus_per_node": 2, "heartbeat_interval_s": 0.1},
                   "scheduler": {"spillover": spillover},
                   "workload": {"jobs": tasks, "arrival": "closed", "in_flight": tasks, "drivers": 1,
                                "driver_nodes": [0], "duration": {"dist": "constant", "value": 1.0}},
                   "run": {"trace": "rows", "validate": True}})
    return make_simulation(cfg, seed=0).run()


def test_a_burst_on_one_node_spreads_over_the_idle_nodes():
    """Eight 1 s tasks on a 4 x 2-CPU cluster: with the paper's QueueThreshold(8) they queue on
    the driver's node (4 s); the default spreads them at once (about 1 s)."""
    paper = _burst({"name": "QueueThreshold", "threshold": 8})
    assert paper.metrics["makespan_s"] == pytest.approx(4.0, abs=0.01)
    res = _burst({"name": "ResourceAware"})
    tr = res.trace
    assert res.metrics["makespan_s"] < 1.2 and tr.node.nunique() == 4
    assert (tr.started_s < 0.2).all()


def test_work_queued_where_it_cannot_start_spills_back_at_the_next_heartbeat():
    """Two 1-CPU nodes, four 0.5 s tasks submitted at once on node 0. Task 0 starts there; the
    others are forwarded, and the global scheduler, whose view (the first heartbeat's) shows
    both nodes free, spreads them: 2 to node 1, 1 and 3 to node 0, queued behind task 0.
    Node 1 is free from 0.5 s; at the next heartbeat (0.6 s) task 3, still queued on node 0,
    spills back and runs on node 1 — without spillback it would start at 1.0 s."""
    cfg = resolve({"cluster": {"nodes": 2, "cpus_per_node": 1, "heartbeat_interval_s": 0.1,
                               "global_decision_s": 0.0},
                   "workload": {"jobs": 4, "arrival": "closed", "in_flight": 4, "drivers": 1, "driver_nodes": [0],
                                "duration": {"dist": "constant", "value": 0.5}},
                   "run": {"trace": "rows", "validate": True}})
    res = make_simulation(cfg, seed=0).run()
    tr = res.trace.sort_values("task_id").set_index("task_id")
    assert tr.node.tolist() == [0, 0, 1, 1]
    three = tr.loc[3]
    assert three.placed_s == pytest.approx(0.6, abs=1e-3) and 0.5 < three.started_s <= 0.6 + 1e-3
    assert res.metrics["makespan_s"] < 1.2
