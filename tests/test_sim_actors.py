"""Actors in the simulator (workload shape "actors"): each test states one rule of the
rebuild-by-replay model (testbed/sim/actors.py) and checks it on the Trace.

Constant method times, no scheduling or GCS overheads unless a test says otherwise, so
times are exact. The kill at KILL_S is declared after num_heartbeats_timeout x
heartbeat_interval_s = DETECT_S.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from testbed.core.errors import ConfigError
from testbed.sim.actors import ActorSimulation
from testbed.studies.execute import make_simulation
from testbed.studies.experiment import resolve

pytestmark = pytest.mark.timeout(60)

NO_OVERHEADS = {"latency_s": 0.0, "gcs_write_s": 0.0, "gcs_read_s": 0.0, "local_decision_s": 0.0,
                "global_decision_s": 0.0}
KILL_S = 5.05
DETECT_S = 0.5
EPS = 1e-9
JOBS = 1200


def run(actors=12, jobs=JOBS, nodes=3, ckpt=0, max_restarts=-1, kills=((KILL_S, 1),), seed=0, cluster=None,
        scheduler=None, **workload):
    cfg = resolve({
        "cluster": {"nodes": nodes, "heartbeat_interval_s": 0.1, "num_heartbeats_timeout": 5, **NO_OVERHEADS,
                    **(cluster or {})},
        "workload": {"shape": "actors", "actors": actors, "jobs": jobs, "in_flight": actors, "drivers": 1,
                     "driver_nodes": [0], "duration": {"dist": "constant", "value": 0.1},
                     "actor_checkpoint_interval": ckpt, "actor_checkpoint_s": 0.01,
                     "actor_max_restarts": max_restarts, **workload},
        "faults": {"node_failures": [{"at_s": t, "node": m} for t, m in kills]},
        "scheduler": scheduler or {},
        "run": {"trace": "rows"}})
    sim = make_simulation(cfg, seed, keep_rows=True)
    return sim, sim.run()


def steps(tr: pd.DataFrame) -> pd.DataFrame:
    return tr[tr.function == "Actor.step"]


def _finished_steps(tr: pd.DataFrame) -> pd.DataFrame:
    """Finished Actor.step rows in the order they finished."""
    s = steps(tr)
    return s[s.state == "finished"].sort_values(["finished_s", "attempt"], kind="stable")


def delivered(tr: pd.DataFrame) -> pd.DataFrame:
    """Each call's first finished row: the one whose result its caller received."""
    done = _finished_steps(tr)
    return done[~done.duplicated("task_id")]


def replays(tr: pd.DataFrame) -> pd.DataFrame:
    """Finished rows of calls that had been delivered already: replays while rebuilding."""
    done = _finished_steps(tr)
    return done[done.duplicated("task_id")]


def test_the_actors_shape_builds_the_actor_engine_and_runs_every_call_once_without_faults():
    """Without failures: one Actor.__init__ row per actor (attempt 1, on node a % nodes), one
    finished Actor.step row per call, nothing replayed, the run complete."""
    sim, res = run(kills=())
    tr = res.trace
    assert isinstance(sim, ActorSimulation) and res.info["complete"]
    init = tr[tr.function == "Actor.__init__"].sort_values("task_id")
    assert list(init.node) == [a % 3 for a in range(12)] and (init.attempt == 1).all()
    assert len(steps(tr)) == JOBS and (steps(tr).state == "finished").all() and (steps(tr).attempt == 1).all()
    assert res.info["actors_rebuilt"] == 0 and res.info["actor_calls_replayed"] == 0


def test_calls_on_one_actor_run_one_at_a_time_in_submission_order():
    """Per actor, delivered calls never overlap and start in job (submission) order, even across
    a failure and a rebuild."""
    _, res = run()
    d = delivered(res.trace)
    d = d.assign(actor=d.task_id % 12)
    for _, g in d.groupby("actor"):
        g = g.sort_values("started_s")
        assert g.task_id.is_monotonic_increasing
        assert (g.started_s.values[1:] >= g.finished_s.values[:-1] - EPS).all()


def test_without_checkpoints_a_rebuild_replays_every_call_since_creation():
    """Each actor of the dead node is rebuilt once, after the heartbeat timeout, and replays
    exactly the calls it had completed before the failure, in order, as attempt > 1 rows."""
    _, res = run()
    tr = res.trace
    d = delivered(tr)
    lost_actors = {a for a in range(12) if a % 3 == 1}
    rebuilt = tr[(tr.function == "Actor.__init__") & (tr.attempt > 1)]
    assert sorted(rebuilt.task_id - JOBS) == sorted(lost_actors) and (rebuilt.attempt == 2).all()
    # declared dead at the timeout-th heartbeat after the failure
    assert (rebuilt.submitted_s > KILL_S + DETECT_S - 0.1).all() and (rebuilt.submitted_s <= KILL_S + DETECT_S).all()
    r = replays(tr)
    assert (r.attempt > 1).all()
    for a in lost_actors:
        before = d[(d.task_id % 12 == a) & (d.finished_s <= KILL_S)].sort_values("finished_s")
        mine = r[r.task_id % 12 == a].sort_values("started_s")
        assert list(mine.task_id) == list(before.task_id)
    assert res.info["actor_calls_replayed"] == len(r)
    assert res.info["reexecuted"] == int((tr.attempt > 1).sum())


def test_checkpoints_bound_the_replay():
    """With a checkpoint every K calls a rebuild replays at most K calls per actor (only the
    ones since its last checkpoint), far fewer than without; checkpoints are their own rows."""
    _, plain = run()
    _, ck = run(ckpt=4)
    n_plain, n_ck = len(replays(plain.trace)), len(replays(ck.trace))
    assert n_ck < n_plain / 5
    r = replays(ck.trace)
    per_actor = r.groupby(r.task_id % 12).size()
    assert (per_actor <= 4).all()
    cps = ck.trace[ck.trace.function == "Actor.__checkpoint__"]
    assert ck.info["actor_checkpoints"] == int((cps.state == "finished").sum()) > 0
    # one checkpoint per 4 calls applied (originals and replays of a lost actor alike)
    assert abs(len(cps) - JOBS // 4) <= 12


def test_the_same_seed_gives_the_same_replays():
    """Rebuilds are deterministic: same config and seed -> the identical Trace."""
    kw = dict(duration={"dist": "exponential", "mean": 0.1}, ckpt=3, kills=((KILL_S, 1), (8.0, 2)))
    _, a = run(seed=5, **kw)
    _, b = run(seed=5, **kw)
    assert a.trace.equals(b.trace) and a.info["actor_calls_replayed"] > 0


def test_calls_made_during_a_rebuild_wait_and_then_run_after_the_replay():
    """A call to a lost actor made between the failure and the end of its rebuild runs (as
    attempt 1: it never reached a node) only after the actor's creation and replay."""
    _, res = run()
    tr = res.trace
    d = delivered(tr)
    r = replays(tr)
    late = d[(d.task_id % 3 == 1) & (d.submitted_s > KILL_S) & (d.attempt == 1)]
    assert len(late) > 0
    for _, c in late.iterrows():
        a = c.task_id % 12
        last_replay = r[r.task_id % 12 == a].finished_s.max()
        assert c.started_s >= last_replay - EPS
    # the calls lost with the node: a "lost" row, then delivered once as attempt 2
    lost = steps(tr)[steps(tr).state == "lost"]
    assert len(lost) > 0 and (lost.finished_s == KILL_S).all()
    assert set(lost.task_id) <= set(d[d.attempt == 2].task_id)
    assert d.task_id.is_unique and len(d) == JOBS and res.info["jobs_done"] == JOBS


def test_exhausted_restarts_fail_the_calls_without_a_hang():
    """With actor_max_restarts = 0 a lost actor is gone: the calls sent to it and every later
    call end "failed"; the other actors go on and the run completes."""
    sim, res = run(max_restarts=0)
    tr = res.trace
    assert res.info["complete"] and not res.info["stuck"] and res.info["actors_rebuilt"] == 0
    failed = steps(tr)[steps(tr).state == "failed"]
    assert len(failed) == res.info["actor_calls_failed"] > 0
    assert set(failed.task_id % 12) == {1, 4, 7, 10}
    assert (failed.finished_s >= KILL_S).all()
    ok = delivered(tr)
    assert len(ok) + len(failed) == JOBS and not set(ok.task_id) & set(failed.task_id)
    assert (ok[ok.finished_s > KILL_S].task_id % 3 != 1).all()


def test_max_restarts_counts_rebuilds():
    """actor_max_restarts = 1: the first loss rebuilds the actor, the second one fails its calls."""
    # actors 0..3 on nodes 0, 1, 2, 0; actor 1 is rebuilt on node 0 (PaperWaitTime: no queues,
    # the lowest index), which dies next with actors 0 and 3 (never rebuilt yet: rebuilt on
    # node 2, the only one left) and actor 1 (rebuilt once: gone)
    sim, res = run(nodes=3, actors=4, max_restarts=1, kills=((KILL_S, 1), (9.0, 0)), driver_nodes=[2])
    tr = res.trace
    assert res.info["complete"] and res.info["actors_rebuilt"] == 3
    failed = steps(tr)[steps(tr).state == "failed"]
    assert len(failed) > 0 and (failed.task_id % 4 == 1).all() and (failed.finished_s >= 9.0).all()
    assert sim.actors[1].status == "gone" and sim.actors[0].node == sim.actors[3].node == 2


@pytest.mark.parametrize("placement, want", [("PaperWaitTime", [1, 2, 3]),
                                              ("tests.report_plugins:HighestLiveNode", [3, 3, 3])])
def test_a_rebuilt_actor_goes_where_the_placement_policy_puts_it(placement, want):
    """Placement of rebuilds: the global scheduler's policy, as in the runtime
    (policy.base.place_rebuild), one actor after another. PaperWaitTime (no queues: actors
    hold no CPU) spreads them by its recent-assignment counts, ties to the lowest index."""
    sim, res = run(nodes=4, actors=10, kills=((KILL_S, 0),), driver_nodes=[1], scheduler={"placement": placement})
    tr = res.trace
    rebuilt = tr[(tr.function == "Actor.__init__") & (tr.attempt > 1)].sort_values("task_id")
    # at start: node 0 holds actors 0, 4, 8; node 1: 1, 5, 9; node 2: 2, 6; node 3: 3, 7
    assert list(rebuilt.node) == want
    assert res.info["complete"] and res.info["actors_rebuilt"] == 3


def test_checkpoint_and_restore_cost_is_charged_on_the_actor():
    """A checkpoint occupies the actor for actor_checkpoint_s; a rebuild from a checkpoint
    spends it again to restore (its Actor.__init__ row)."""
    _, res = run(ckpt=2)
    tr = res.trace
    cps = tr[(tr.function == "Actor.__checkpoint__") & (tr.state == "finished")]
    assert ((cps.finished_s - cps.started_s) - 0.01).abs().max() < EPS
    rebuilt = tr[(tr.function == "Actor.__init__") & (tr.attempt > 1)]
    assert ((rebuilt.finished_s - rebuilt.started_s) - 0.01).abs().max() < EPS


def test_actors_must_be_given_for_the_actors_shape():
    with pytest.raises(ConfigError, match=r"workload\.actors"):
        resolve({"workload": {"shape": "actors"}})
    with pytest.raises(ConfigError, match=r"workload\.actor_max_restarts"):
        resolve({"workload": {"shape": "actors", "actors": 2, "actor_max_restarts": -2}})
    with pytest.raises(ConfigError, match=r"workload\.actor_checkpoint_interval"):
        resolve({"workload": {"shape": "actors", "actors": 2, "actor_checkpoint_interval": -1}})


def test_gcs_memory_counts_the_calls():
    """The GCS memory model holds one entry per call made."""
    _, res = run(kills=())
    t, b = res.info["gcs_memory"][-1]
    assert math.isclose(b, JOBS * resolve({})["cluster"]["gcs_entry_bytes"])


def test_the_runtime_overheads_apply_to_actor_calls_and_replays():
    """task_overhead_s, duration_inflation_s and result_return_s cost an actor call what they
    cost a task (the runtime dispatches each call to the actor's worker): the actor is held
    task_overhead_s before each call starts, it runs duration + duration_inflation_s, and its
    caller sees the result result_return_s after its finish (one actor, one caller, closed
    loop: the next call is made then). A replay pays the overhead and the inflation too."""
    ov, inf, ret, dur = 0.003, 0.002, 0.005, 0.1
    over = {"task_overhead_s": ov, "duration_inflation_s": inf, "result_return_s": ret}
    _, res = run(actors=1, jobs=20, nodes=1, kills=(), cluster=over)
    calls = steps(res.trace).sort_values("task_id")
    assert len(calls) == 20 and (calls.state == "finished").all()
    np.testing.assert_allclose(calls.started_s - calls.placed_s, ov, atol=EPS)
    np.testing.assert_allclose(calls.finished_s - calls.started_s, dur + inf, atol=EPS)
    np.testing.assert_allclose(calls.submitted_s.iloc[1:].to_numpy() - calls.finished_s.iloc[:-1].to_numpy(),
                               ret, atol=EPS)
    _, base = run(actors=1, jobs=20, nodes=1, kills=())
    assert res.info["sim_end_s"] == pytest.approx(base.info["sim_end_s"] + 20 * (ov + inf) + 19 * ret, abs=EPS)
    # replays after a rebuild: the calls since creation, one after another, each held ov first
    _, res = run(actors=2, jobs=200, nodes=2, cluster=over)
    tr = res.trace
    rep = replays(tr)
    assert len(rep) > 0
    np.testing.assert_allclose(rep.finished_s - rep.started_s, dur + inf, atol=EPS)
    init = tr[(tr.function == "Actor.__init__") & (tr.attempt == 2)]
    starts = np.sort(rep.started_s.to_numpy())
    assert starts[0] == pytest.approx(float(init.finished_s.iloc[0]) + ov, abs=EPS)
    np.testing.assert_allclose(np.diff(starts), dur + inf + ov, atol=EPS)


def test_a_lost_actor_with_no_live_node_waits_and_is_placed_by_the_policy_when_nodes_join():
    """One rule in both engines (policy.base.place_rebuild; test_real_faults checks the
    runtime): an actor whose rebuild finds no live node waits — it is not given up, and its
    restarts are not spent — and is placed again, by the placement policy, at the first view
    whose membership changes (here: the heartbeat after two nodes join; HighestLiveNode puts
    every actor on the highest)."""
    hb = 0.1
    cfg = resolve({
        "cluster": {"nodes": 2, "heartbeat_interval_s": hb, "num_heartbeats_timeout": 2, **NO_OVERHEADS},
        "workload": {"shape": "actors", "actors": 4, "jobs": 200, "in_flight": 4, "drivers": 1,
                     "duration": {"dist": "constant", "value": 0.02}, "actor_max_restarts": 1},
        "faults": {"node_failures": [{"at_s": 0.505, "node": 0}, {"at_s": 0.505, "node": 1}],
                   "node_additions": [{"at_s": 1.03}, {"at_s": 1.03}]},
        "scheduler": {"placement": "tests.report_plugins:HighestLiveNode"},
        "run": {"trace": "rows", "validate": True}})
    sim = make_simulation(cfg, 0, keep_rows=True)
    res = sim.run()
    tr = res.trace
    assert res.info["complete"] and res.info["actors_rebuilt"] == 4 and res.info["actor_calls_failed"] == 0
    rebuilt = tr[(tr.function == "Actor.__init__") & (tr.attempt == 2)]
    assert len(rebuilt) == 4
    assert (rebuilt.node == 3).all()                              # where the policy puts them
    np.testing.assert_allclose(rebuilt.submitted_s, 1.1, atol=EPS)  # the first view showing the joins
    assert len(delivered(tr)) == 200
