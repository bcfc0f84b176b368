"""The runtime's global scheduler draws from the run's seeded placement stream
(testbed.core.seeding), so a Random placement sequence repeats with the seed and equals
the draws the simulator's placement stream gives for the same seed."""
from __future__ import annotations

import pytest

import testbed as tb
from conftest import assert_cluster_gone
from testbed.core.seeding import policy_rng

N_TASKS = 12
N_NODES = 3


@tb.remote
def where(i):
    from testbed.real import api
    return api._worker_core.node


def _placements(seed: int) -> list[int]:
    # every task goes to the global scheduler (AlwaysGlobal) one at a time (each get before
    # the next submit), so the scheduler's k-th decision is the k-th task's node
    with tb.init(num_cpus=1, num_nodes=N_NODES, placement="Random", spillover="AlwaysGlobal", seed=seed) as c:
        out = [tb.get(where.remote(i), timeout=60) for i in range(N_TASKS)]
    assert_cluster_gone(c)
    return out


@pytest.mark.timeout(180)
def test_same_seed_same_random_placements_as_the_simulators_stream():
    first, again, other = _placements(4), _placements(4), _placements(5)
    assert first == again
    assert first != other
    rng = policy_rng(4, "placement")          # what the simulator's placement policy draws from
    assert first == [int(rng.integers(N_NODES)) for _ in range(N_TASKS)]
