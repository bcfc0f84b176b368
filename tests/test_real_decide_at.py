"""scheduler.decide_at in the runtime (testbed.policy.base.decides_now): a task whose input
does not exist yet is placed at its submission ("submit", the default, as Ray's raylet) or
once the input exists ("inputs_ready"); either way it runs after its input."""
from __future__ import annotations

import pytest

import testbed as tb
from conftest import assert_cluster_gone
from testbed.real.api import RECORD_COLUMNS, task_records


@tb.remote
def slow(x):
    import time
    time.sleep(0.3)
    return x


@tb.remote
def add_one(x):
    return x + 1


def _chain(decide_at: str | None) -> dict[str, dict]:
    """Submit slow -> add_one at once; the two Trace rows by function name."""
    kw = {} if decide_at is None else {"decide_at": decide_at}
    with tb.init(num_cpus=1, num_nodes=2, **kw) as c:
        assert tb.get(add_one.remote(slow.remote(1)), timeout=60) == 2
        rows = [dict(zip(RECORD_COLUMNS, r)) for r in task_records()]
    assert_cluster_gone(c)
    return {r["function"].rsplit(".", 1)[-1]: r for r in rows if r["state"] == "finished"}


@pytest.mark.timeout(120)
def test_by_default_a_reader_is_placed_at_submission_before_its_input_exists():
    rows = _chain(None)
    producer, reader = rows["slow"], rows["add_one"]
    assert reader["placed_s"] < producer["finished_s"]
    assert reader["started_s"] >= producer["finished_s"]


@pytest.mark.timeout(120)
def test_inputs_ready_places_a_reader_once_its_input_exists():
    rows = _chain("inputs_ready")
    producer, reader = rows["slow"], rows["add_one"]
    assert reader["placed_s"] >= producer["finished_s"]
    assert reader["started_s"] >= reader["placed_s"]


def test_a_bad_decide_at_is_refused_naming_it():
    with pytest.raises(ValueError, match="decide_at"):
        tb.init(num_cpus=1, decide_at="later")
