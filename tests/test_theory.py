"""The simulator configured as textbook queueing systems, against closed forms
(testbed/studies/theory.py), and the closed forms against textbook values."""
from __future__ import annotations

import numpy as np
import pytest

from testbed.sim.engine import FifoServers, _serve
from testbed.studies.execute import make_simulation
from testbed.studies.experiment import resolve


def _sim(cluster: dict, scheduler: dict, workload: dict, seed: int = 0):
    raw = {"cluster": cluster, "scheduler": scheduler, "workload": workload, "run": {"trace": "rows"}}
    return make_simulation(resolve(raw), seed=seed).run()


def test_server_reached_over_a_link_adds_latency_wait_and_service():
    """A global scheduler replica at load 0.8 reached over a 0.1 ms link: every decision
    completes exactly when the Lindley recursion says (arrival = submission + latency),
    so the mean is latency + M/D/1 wait + service, not service + max(wait, latency)."""
    d, lat, rho = 1e-4, 1e-4, 0.8
    res = _sim({"nodes": 1, "cpus_per_node": 1e4, "latency_s": lat, "global_decision_s": d,
                "gcs_write_s": 0.0, "gcs_read_s": 0.0},
               {"placement": "Random", "spillover": "AlwaysGlobal"},
               {"shape": "independent", "jobs": 20000, "arrival": "poisson", "drivers": 1,
                "rate_per_s": rho / d, "duration": {"dist": "constant", "value": 0.0}}, seed=1)
    df = res.trace.sort_values("submitted_s", kind="stable")
    sub = df.submitted_s.to_numpy()
    end, prev = np.empty_like(sub), -1.0
    for k, a in enumerate(sub + lat):
        prev = max(prev, a) + d
        end[k] = prev
    np.testing.assert_allclose(df.placed_s.to_numpy(), end, rtol=0, atol=1e-12)
    md1 = lat + d + rho * d / (2 * (1 - rho))
    assert abs((end - sub).mean() / md1 - 1) < 0.03


def test_server_serves_in_issue_order_once_arrived():
    """Requests wait for the server and for their own arrival; a request that arrives
    before an earlier-issued one still in flight uses the idle time before it."""
    s = FifoServers(1)
    assert _serve(s, 0, 0.0, 0.0, 1.0) == 1.0          # idle: arrival + service
    assert _serve(s, 0, 0.0, 0.5, 1.0) == 2.0          # busy until 1: waits, then served
    assert _serve(s, 0, 0.5, 2.0, 1.0) == 3.0          # its own wait (chained) is not counted twice
    assert _serve(s, 0, 0.5, 10.0, 1.0) == 11.0        # due later: starts when it arrives
    assert _serve(s, 0, 1.0, 4.0, 1.0) == 5.0          # arrives before it: fits in [3, 10)
    assert _serve(s, 0, 1.0, 9.5, 1.0) == 11.5         # [9.5, 10) idle: half there, the rest after 11
    assert _serve(s, 0, 1.0, 5.0, 1.0) == 6.0          # fills [5, 6), the rest of that gap
    assert s.starts[0] == [0.0, 4.0, 9.5] and s.ends[0] == [3.0, 6.0, 11.5]


def test_server_matches_a_unit_grid_model_of_idle_time_filling():
    """Random request sequences (issue time, arrival >= issue, whole-unit services): every
    completion equals a brute-force model that takes the server's free unit slots at or
    after the arrival, in issue order — no idle time lost, no overlap. (The gap-only rule
    before it, which queued a request no single gap held at the end, fails this.)"""
    import random
    rnd = random.Random(2)
    for _ in range(500):
        s, busy, now = FifoServers(1), set(), 0
        for _ in range(60):
            now += rnd.randint(0, 3)
            t, svc = now + rnd.randint(0, 8), rnd.randint(1, 4)
            x, left = t, svc
            while left:
                if x not in busy:
                    busy.add(x)
                    left -= 1
                x += 1
            assert _serve(s, 0, float(now), float(t), float(svc)) == x


# -- the closed forms against textbook values ----------------------------------------------

def test_erlang_c_by_hand():
    """Erlang C for small c, worked by hand: c=1 is rho; c=2, a=1: P0 = 1/3, C = 1/3."""
    from testbed.studies import theory as T
    assert T.erlang_c(1, 0.5) == pytest.approx(0.5)
    assert T.erlang_c(2, 1.0) == pytest.approx(1 / 3)
    # c=3, a=2: sum_{k<3} a^k/k! = 1 + 2 + 2 = 5; a^3/3! / (1 - 2/3) = 4; C = 4 / 9
    assert T.erlang_c(3, 2.0) == pytest.approx(4 / 9)
    assert T.mmc_wait(0.8, 1.0, 1) == pytest.approx(4.0)          # M/M/1: rho / (mu - lam)
    assert T.mmc_response(1.0, 1.0, 2) == pytest.approx(1 / 3 / 1.0 + 1.0)
    with pytest.raises(ValueError):
        T.erlang_c(2, 2.0)


def test_pollaczek_khinchine_and_lognormal_moment():
    from testbed.studies import theory as T
    # M/D/1 wait is half the M/M/1 wait at the same load
    assert T.pk_wait(0.8, 1.0, 1.0) == pytest.approx(T.mmc_wait(0.8, 1.0, 1) / 2)
    assert T.pk_wait(0.8, 1.0, 2.0) == pytest.approx(T.mmc_wait(0.8, 1.0, 1))
    x = np.random.default_rng(0).lognormal(np.log(2.0) - 0.5 * 0.7 ** 2, 0.7, 2_000_000)
    assert T.lognormal_second_moment(2.0, 0.7) == pytest.approx(np.mean(x * x), rel=0.01)
    assert T.md1_over_link(8000.0, 1e-4, 1e-4) == pytest.approx(4e-4)


def test_power_of_d_mean_field():
    """s_i = rho^((d^i - 1)/(d - 1)); d = 1 gives M/M/1; d = 2 at rho = 0.9 is sum of
    0.9, 0.9^3, 0.9^7, ... ≈ 2.352 tasks per queue."""
    from testbed.studies import theory as T
    s = T.power_of_d_tail(0.9, 2, 5)
    np.testing.assert_allclose(s, [1, 0.9, 0.9 ** 3, 0.9 ** 7, 0.9 ** 15, 0.9 ** 31])
    assert T.power_of_d_queue_length(0.5, 1) == pytest.approx(1.0)
    assert T.power_of_d_response(0.8, 1, 1.0) == pytest.approx(5.0)
    assert T.power_of_d_queue_length(0.9, 2) == pytest.approx(2.3523, abs=1e-3)


def test_lindley_reference():
    from testbed.studies import theory as T
    np.testing.assert_allclose(T.lindley(np.array([0.0, 0.5, 3.0, 3.2]), 1.0), [1.0, 2.0, 4.0, 5.0])


# -- the simulator configured as the textbook system ----------------------------------------

ZERO = {"latency_s": 0.0, "local_decision_s": 0.0, "global_decision_s": 0.0, "gcs_write_s": 0.0,
        "gcs_read_s": 0.0, "heartbeat_interval_s": 1.0}


def _theory_check(cluster, scheduler, workload, seeds=(0, 1, 2)):
    """Run the case over seeds; returns (the study's per-run rows, the CI of the simulated
    mean, the theory), as the study `theory` computes them."""
    from testbed.studies.stats import mean_ci
    from testbed.studies.studies import Theory
    rows = []
    for seed in seeds:
        raw = {"cluster": {**ZERO, **cluster}, "scheduler": scheduler,
               "workload": {"shape": "independent", "arrival": "poisson", "drivers": 1,
                            "duration": {"dist": "exponential", "mean": 0.1}, **workload},
               "run": {"trace": "rows", "study": "theory"}}
        cfg = resolve(raw)
        res = make_simulation(cfg, seed=seed).run()
        rows.append(Theory().run_metrics(res.trace, res.info, cfg))
    ci = mean_ci([r["sim_value"] for r in rows])
    return rows, ci, rows[0]["theory"]


def _assert_matches(ci, theory):
    """The study's pass rule: theory inside the 95% CI, or within 2% when the CI is tighter."""
    err = abs(ci.mean / theory - 1)
    assert ci.contains(theory) or (ci.half_width <= 0.02 * theory and err <= 0.02), (ci, theory)


LOCAL = {"placement": "Random", "spillover": "AlwaysLocal"}


@pytest.mark.parametrize("c,rho", [(1, 0.5), (1, 0.8), (4, 0.8), (8, 0.9)])
def test_one_node_is_mmc(c, rho):
    """One node with c slots, Poisson arrivals, exponential service: Erlang C response;
    throughput = arrival rate; Little's law; every task finishes exactly once."""
    rows, ci, th = _theory_check({"nodes": 1, "cpus_per_node": float(c)}, LOCAL,
                                 {"jobs": 20000, "rate_per_s": rho * c / 0.1})
    _assert_matches(ci, th)
    from testbed.studies.stats import mean_ci
    for r in rows:     # below saturation what arrives leaves (the backlog moves by a few tasks)
        assert abs(r["throughput_per_s"] / r["arrivals_per_s"] - 1) < 0.005
        assert abs(r["arrivals_per_s"] / r["arrival_rate_per_s"] - 1) < 0.03   # Poisson: ~4 sd
    _assert_matches(mean_ci([r["L_sim"] for r in rows]), rows[0]["L_theory"])
    assert all(r["finished_once"] for r in rows)


@pytest.mark.parametrize("dist", [{"dist": "constant", "value": 0.1},
                                  {"dist": "lognormal", "mean": 0.1, "sigma": 1.0}])
def test_one_slot_is_mg1(dist):
    """Constant and lognormal service: Pollaczek–Khinchine (M/D/1, M/G/1)."""
    rows, ci, th = _theory_check({"nodes": 1, "cpus_per_node": 1.0}, LOCAL,
                                 {"jobs": 20000, "rate_per_s": 5.0, "duration": dist})
    _assert_matches(ci, th)


def test_random_routing_is_independent_queues():
    """N nodes under Random placement: N independent M/M/1 queues at the per-node load."""
    rows, ci, th = _theory_check({"nodes": 10, "cpus_per_node": 1.0},
                                 {"placement": "Random", "spillover": "AlwaysGlobal"},
                                 {"jobs": 20000, "rate_per_s": 70.0})
    assert rows[0]["system"].startswith("M/M/1 x 10")
    _assert_matches(ci, th)


def test_power_of_two_fresh_matches_mean_field_and_stale_view_herds():
    """PowerOfTwoChoices with a fresh view per decision lands on the mean-field response;
    with the 100 ms heartbeat view (one service time old) it herds: measurably slower."""
    p2c = {"placement": "PowerOfTwoChoices", "spillover": "AlwaysGlobal"}
    wl = {"jobs": 15000, "rate_per_s": 400.0}
    _, fresh, th = _theory_check({"nodes": 50, "cpus_per_node": 1.0, "view_fresh_per_decision": True}, p2c, wl)
    _assert_matches(fresh, th)
    _, stale, _ = _theory_check({"nodes": 50, "cpus_per_node": 1.0, "heartbeat_interval_s": 0.1}, p2c, wl)
    assert stale.lo > fresh.hi and stale.mean > 1.1 * th


def test_finite_n_reference_is_taken_at_the_cases_d():
    """The study's finite-N reference of a power-of-d case simulates that d (a d = 3 case is
    not compared with power-of-two)."""
    from testbed.studies import theory
    from testbed.studies.studies import Theory
    raw = {"cluster": {**ZERO, "nodes": 20, "cpus_per_node": 1.0, "view_fresh_per_decision": True},
           "scheduler": {"placement": {"name": "PowerOfTwoChoices", "d": 3}, "spillover": "AlwaysGlobal"},
           "workload": {"shape": "independent", "arrival": "poisson", "drivers": 1, "jobs": 2000,
                        "rate_per_s": 160.0, "duration": {"dist": "exponential", "mean": 0.1}},
           "run": {"study": "theory"}}
    cfg = resolve(raw)
    want = np.mean([theory.power_of_d_reference(20, 160.0, 0.1, 2000, k, d=3, warmup_fraction=0.1)
                    for k in range(Theory.REFERENCE_REPS)])
    assert Theory._reference(cfg) == pytest.approx(want)
    assert Theory._reference(cfg) != pytest.approx(np.mean(
        [theory.power_of_d_reference(20, 160.0, 0.1, 2000, k, d=2, warmup_fraction=0.1)
         for k in range(Theory.REFERENCE_REPS)]))


def test_the_mean_is_also_compared_with_the_theory_at_the_realized_arrival_rate():
    """Each run also gives the closed form at the arrival rate it realized (arrivals between
    the end of the warm-up and the last arrival, as throughput uses), and the summary shows the
    mean's paired error against it beside the nominal one; the pass rule stays the nominal one."""
    from testbed.studies import theory
    from testbed.studies.studies import Theory
    rows, ci, th = _theory_check({"nodes": 1, "cpus_per_node": 1.0}, LOCAL, {"jobs": 5000, "rate_per_s": 8.0})
    for r in rows:
        lam = r["arrivals_per_s"]
        assert lam != r["arrival_rate_per_s"]
        assert r["theory_realized"] == pytest.approx(1 / (10.0 - lam))          # M/M/1: 1 / (mu - lam)
    cfg = resolve({"cluster": {"nodes": 1, "cpus_per_node": 1.0},
                   "workload": {"arrival": "poisson", "rate_per_s": 8.0, "duration": {"dist": "exponential", "mean": 0.1}}})
    assert np.isnan(theory.theory_at_rate(cfg, 10.5))                      # unstable at that rate: no value
    import pandas as pd

    class _Exp:
        resolved = {"run": {"warmup_fraction": 0.1}}
        points = []
    runs = pd.DataFrame([{**r, "point": 0, "label": "M/M/1, load 0.8"} for r in rows])
    out = Theory()._rows(runs, _Exp())
    mean_row = next(x for x in out if x["check"].startswith("mean"))
    want = np.mean([(r["sim_value"] - r["theory_realized"]) / r["theory_realized"] for r in rows])
    assert mean_row["rel_realized"] == pytest.approx(want)
    assert mean_row["theory_realized"] == pytest.approx(1e3 * np.mean([r["theory_realized"] for r in rows]))
    assert mean_row["status"] == ("pass" if ci.contains(th) or (ci.half_width <= 0.02 * th and
                                                               abs(ci.mean / th - 1) <= 0.02) else "FAIL")
    text = Theory().summary(runs, _Exp())
    assert "rel. error at realized λ" in text and f"{want:+.2%}" in text
    assert all(np.isnan(x["rel_realized"]) for x in out if not x["check"].startswith("mean"))


@pytest.mark.parametrize("override, words", [
    (["workload.shape=chains"], "needs Poisson arrivals of independent tasks"),
    (["workload.arrival=closed"], "needs Poisson arrivals of independent tasks"),
    (['workload.functions=[{name="a", weight=1.0}, {name="b", weight=1.0}]'], "mix of functions"),
    (["workload.shift={at_s=1.0, scale=2.0}"], "workload.shift"),
    (["cluster.slow_nodes=1", "cluster.slow_factor=3.0"], "identical nodes"),
    (['faults.node_failures=[{at_s=1.0, node=0}]'], "[faults]"),
])
def test_a_config_the_theory_study_cannot_read_is_refused_before_any_run(override, words):
    """study = "theory" on a workload without a closed form is a ConfigError at load time
    (it used to fail after every run had finished)."""
    from testbed.core.errors import ConfigError
    from testbed.studies.experiment import load_experiment
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "experiments" / "theory.toml"
    load_experiment(path)                                         # the shipped config is fine
    with pytest.raises(ConfigError, match=r"theory\.toml: run\.study: at sweep point \[.*\]: study 'theory' ") as e:
        load_experiment(path, override)
    assert words in str(e.value) and "\n" not in str(e.value)
