"""No stranded work on the runtime (issue 10), with tb.init's defaults (ResourceAware):
actors beyond the driver's node start elsewhere, and a burst of tasks runs side by side on
every node instead of queueing behind the driver's."""
from __future__ import annotations

import pytest

import testbed as tb
from conftest import assert_cluster_gone
from testbed.real.api import RECORD_COLUMNS, task_records


@tb.remote(num_cpus=1)
class Counter:
    def __init__(self):
        self.n = 0

    def where(self):
        from testbed.real import api
        return api._worker_core.node


@tb.remote(num_cpus=1)
def hold(s):
    import time
    time.sleep(s)
    from testbed.real import api
    return api._worker_core.node


@pytest.mark.timeout(120)
def test_five_actors_on_four_two_cpu_nodes_all_start():
    with tb.init(num_nodes=4, num_cpus=2) as c:
        actors = [Counter.remote() for _ in range(5)]
        nodes = tb.get([a.where.remote() for a in actors], timeout=60)
    assert_cluster_gone(c)
    assert len(nodes) == 5 and len(set(nodes)) >= 3          # at most 2 fit on any one node


@pytest.mark.timeout(120)
def test_a_burst_runs_side_by_side_on_the_idle_nodes():
    """Eight 1 s tasks on 4 x 2 CPUs: every task starts before the first one ends (they used to
    queue four deep on the driver's node: 4 s instead of 1 s)."""
    with tb.init(num_nodes=4, num_cpus=2) as c:
        nodes = tb.get([hold.remote(1.0) for _ in range(8)], timeout=60)
        rows = [dict(zip(RECORD_COLUMNS, r)) for r in task_records()]
    assert_cluster_gone(c)
    done = [r for r in rows if r["state"] == "finished" and r["function"].endswith("hold")]
    assert len(done) == 8 and len(set(nodes)) == 4
    assert max(r["started_s"] for r in done) < min(r["finished_s"] for r in done)
