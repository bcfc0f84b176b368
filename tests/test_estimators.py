"""Estimators: exact values on given streams, cold start, validation, keyed sharing, registry."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.core.errors import ConfigError
from testbed.policy.base import Estimator, KeyedEstimator
from testbed.policy.estimators import (CumulativeMean, ExponentialAverage, Holt, LastValue,
                                       MeanPlusDeviation, Oracle, Quantile, SlidingMean,
                                       SlidingMedian, TimeDecayedAverage)
from testbed.policy.placement import PaperWaitTime
from testbed.policy.registry import build, builtins


def feed(est: Estimator, xs, times=None) -> Estimator:
    """Feed samples (at times 0, 1, 2, ... unless given) and return the estimator."""
    for i, x in enumerate(xs):
        est.update(x, float(i) if times is None else times[i])
    return est


def bind(policy, factory=lambda: ExponentialAverage(0.5), keying="node", bw_keying=None):
    """Bind keyed estimators of one kind to a placement policy; return the policy."""
    policy.bind_estimators(KeyedEstimator(factory, keying),
                           KeyedEstimator(factory, bw_keying or keying, "bandwidth"))
    return policy


# --- exact values -------------------------------------------------------------------

@pytest.mark.parametrize("est, xs, expected", [
    (ExponentialAverage(0.5), [1, 3], 2.0),
    (ExponentialAverage(0.1), [10, 20], 11.0),
    (ExponentialAverage(1.0), [10, 20, 7], 7.0),
    (ExponentialAverage(0.5), [4], 4.0),                    # first sample sets the value
    (CumulativeMean(), [1, 2, 6], 3.0),
    (SlidingMean(window=2), [1, 2, 6], 4.0),
    (SlidingMean(window=3), [1, 2, 6, 10], 6.0),
    (SlidingMedian(window=3), [5, 1, 3], 3.0),
    (SlidingMedian(window=3), [5, 1, 3, 10, 2], 3.0),       # window [3, 10, 2]
    (SlidingMedian(window=4), [1, 10, 3, 2], 2.5),          # even: mean of middle two
    (Quantile(q=0.9), list(range(1, 12)), 10.0),            # pos 0.9 * 10 = 9
    (Quantile(q=0.75), [4, 1, 3, 2], 3.25),                 # pos 2.25 between 3 and 4
    (Quantile(q=0.0, window=2), [1, 5, 9], 5.0),
    (Quantile(q=1.0), [1, 5, 9], 9.0),
    (LastValue(), [3, 1, 4], 4.0),
    (Holt(alpha=0.5, beta=0.5), [1, 3], 2.5),               # level 2, trend 0.5
    (Holt(alpha=0.5, beta=0.5), [1, 3, 5], 4.875),          # level 3.75, trend 1.125
    (Holt(alpha=1.0, beta=1.0), [10, 0], 0.0),              # level 0 + trend -10, clamped
    (MeanPlusDeviation(), [1.0], 3.0),                      # srtt 1 + 4 * rttvar 0.5
    (MeanPlusDeviation(), [1.0, 2.0], 3.625),               # rttvar 0.625 then srtt 1.125
    (MeanPlusDeviation(k=0), [1.0, 2.0], 1.125),
])
def test_exact_values(est, xs, expected):
    """Each estimator's rule, hand-computed on a short stream."""
    assert feed(est, xs).estimate() == pytest.approx(expected, rel=1e-12)


def test_rfc6298_updates_rttvar_before_srtt():
    """RTTVAR uses the old SRTT: |1 - 2| = 1, not |1.125 - 2| = 0.875."""
    est = feed(MeanPlusDeviation(alpha=0.125, beta=0.25, k=1.0), [1.0, 2.0])
    assert est.estimate() == pytest.approx(1.125 + 0.625)
    assert est.estimate() != pytest.approx(1.125 + 0.59375)


def test_time_decayed_average_weights_by_elapsed_time():
    """A sample one half-life old weighs half as much, however few samples came between."""
    est = feed(TimeDecayedAverage(half_life_s=10.0), [2.0, 4.0], times=[0.0, 10.0])
    assert est.estimate() == pytest.approx((2 * 0.5 + 4) / 1.5)
    assert est.estimate(now=1000.0) == pytest.approx(10 / 3)      # no decay between samples
    est.update(6.0, 5.0)                                           # out of order: counts as now
    assert est.estimate() == pytest.approx((5 + 6) / 2.5)
    same_time = feed(TimeDecayedAverage(half_life_s=1.0), [1.0, 2.0, 6.0], times=[3.0] * 3)
    assert same_time.estimate() == pytest.approx(3.0)


def test_sliding_mean_survives_a_huge_eviction():
    """A running sum would cancel 1e300 to 0; the window mean stays exact."""
    est = feed(SlidingMean(window=2), [1e300, 1.0, 1.0])
    assert est.estimate() == 1.0


# --- cold start ---------------------------------------------------------------------

ALL = [ExponentialAverage, CumulativeMean, SlidingMean, SlidingMedian, Quantile, LastValue,
       Holt, MeanPlusDeviation, TimeDecayedAverage, Oracle]


@pytest.mark.parametrize("cls", ALL)
def test_cold_start_returns_prior(cls):
    """Before the first sample, estimate() is the prior (None by default)."""
    assert cls().estimate() is None
    assert cls(prior=0.7).estimate(now=5.0) == 0.7


def test_oracle_ignores_samples():
    assert feed(Oracle(prior=2.0), [1.0, 9.0]).estimate() == 2.0
    assert Oracle.wants_truth and not ExponentialAverage.wants_truth


# --- validation ---------------------------------------------------------------------

@pytest.mark.parametrize("make, words", [
    (lambda: ExponentialAverage(alpha=1.5), ["alpha", "(0, 1]", "1.5"]),
    (lambda: ExponentialAverage(alpha=0), ["alpha", "0"]),
    (lambda: ExponentialAverage(alpha="x"), ["alpha", "number"]),
    (lambda: ExponentialAverage(alpha=True), ["alpha"]),
    (lambda: SlidingMean(window=0), ["window", ">= 1"]),
    (lambda: SlidingMedian(window=2.5), ["window"]),
    (lambda: Quantile(q=1.1), ["q", "[0, 1]"]),
    (lambda: Quantile(q=-0.1), ["q"]),
    (lambda: Quantile(window=0), ["window"]),
    (lambda: Holt(alpha=0.0), ["alpha"]),
    (lambda: Holt(beta=1.5), ["beta"]),
    (lambda: MeanPlusDeviation(k=-1), ["k", "-1"]),
    (lambda: MeanPlusDeviation(beta=0), ["beta"]),
    (lambda: TimeDecayedAverage(half_life_s=0), ["half_life_s"]),
    (lambda: TimeDecayedAverage(half_life_s=math.inf), ["half_life_s", "finite"]),
])
def test_constructor_validation(make, words):
    with pytest.raises(ValueError) as exc:
        make()
    for w in words:
        assert w in str(exc.value)


# --- properties ---------------------------------------------------------------------

samples = st.lists(st.floats(min_value=1e-6, max_value=1e6, allow_nan=False), min_size=1,
                   max_size=80)
gaps = st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=80, max_size=80)
MEAN_LIKE = [lambda: ExponentialAverage(0.3), CumulativeMean, lambda: SlidingMean(window=5),
             lambda: SlidingMedian(window=4), lambda: Quantile(q=0.9, window=7), LastValue,
             lambda: TimeDecayedAverage(half_life_s=3.0)]
OTHERS = [lambda: Holt(0.5, 0.5), MeanPlusDeviation, lambda: MeanPlusDeviation(k=0)]


@settings(max_examples=60, deadline=None)
@given(xs=samples, dts=gaps)
def test_estimates_finite_and_mean_like_within_range(xs, dts):
    """Finite positive inputs give finite estimates; mean-like ones stay in [min, max]."""
    times = np.cumsum(dts[:len(xs)]).tolist()
    lo, hi = min(xs), max(xs)
    for make in MEAN_LIKE:
        v = feed(make(), xs, times).estimate()
        assert math.isfinite(v)
        assert lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9), (make, v)
    for make in OTHERS:
        v = feed(make(), xs, times).estimate()
        assert math.isfinite(v) and v >= 0


# --- keyed estimators ---------------------------------------------------------------

def keyed(keying, quantity="task_time"):
    ke = KeyedEstimator(lambda: ExponentialAverage(0.5), keying, quantity)
    ke.update("f", 0, 1.0, 0.0)
    ke.update("f", 1, 3.0, 1.0)
    ke.update("g", 1, 5.0, 2.0)
    return ke


def test_keyed_global_shares_one_estimate():
    ke = keyed("global")
    # EWMA 0.5 over 1, 3, 5 -> 2, 3.5
    assert ke.estimate("anything", 7) == 3.5
    assert ke.estimate_nodes("f", 3).tolist() == [3.5] * 3


def test_keyed_node():
    ke = keyed("node")
    assert ke.estimate(None, 0) == 1.0
    assert ke.estimate(None, 1) == 4.0                   # 3, then 5 -> 4
    assert ke.estimate(None, 2) == 3.5                   # falls back to the overall estimate
    assert ke.estimate(None, 2, fallback=False) is None
    assert ke.estimate_nodes("ignored", 3).tolist() == [1.0, 4.0, 3.5]


def test_keyed_function():
    ke = keyed("function")
    assert ke.estimate("f", None) == 2.0
    assert ke.estimate("g", 0) == 5.0
    assert ke.estimate("h", 0) == 3.5
    assert ke.estimate_nodes("f", 2).tolist() == [2.0, 2.0]


def test_keyed_function_node():
    ke = keyed("function_node")
    assert ke.estimate("f", 1) == 3.0
    assert ke.estimate("g", 1) == 5.0
    assert ke.estimate("g", 0) == 3.5
    assert ke.estimate_nodes("f", 4).tolist() == [1.0, 3.0, 3.5, 3.5]
    assert ke.estimate_nodes("g", 2).tolist() == [3.5, 5.0]
    assert ke.estimate_nodes("h", 2).tolist() == [3.5, 3.5]


def test_keyed_fallback_default_then_nan():
    ke = KeyedEstimator(ExponentialAverage, "function_node")
    assert np.isnan(ke.estimate_nodes("f", 2)).all()
    assert ke.estimate_nodes("f", 2, default=9.0).tolist() == [9.0, 9.0]
    assert ke.estimate("f", 0) is None


class NowDependent(ExponentialAverage):
    """A plug-in whose estimate may read ``now``: never cached per node."""
    estimate_uses_now = True


@pytest.mark.parametrize("cold", [{}, {"min_samples": 4}, {"min_samples": 6, "fallback": "coarser"},
                                  {"floor": 0.3, "reset_factor": 1.5, "min_samples": 2}])
@pytest.mark.parametrize("keying", ["node", "function_node"])
def test_cached_per_node_estimates_match_the_uncached_path(keying, cold):
    """The per-node cache (built-in estimators) gives what asking each key gives, with and
    without cold-start options."""
    rng = np.random.default_rng(3)
    fast = KeyedEstimator(lambda: ExponentialAverage(0.3), keying, **cold)
    slow = KeyedEstimator(lambda: NowDependent(0.3), keying, **cold)
    assert fast._cached and not slow._cached
    for i in range(300):
        f, node, x = ("f", "g")[i % 2], int(rng.integers(40)), float(rng.random())
        fast.update(f, node, x, float(i))
        slow.update(f, node, x, float(i))
        if i in (20, 299):
            for f in ("f", "g", "h"):
                for n in (10, 40, 60):
                    np.testing.assert_array_equal(fast.estimate_nodes(f, n), slow.estimate_nodes(f, n))
                    assert fast.estimate_nodes(f, n).tolist() == [fast.estimate(f, m) for m in range(n)]


class DoubledEWMA(ExponentialAverage):
    """A plug-in that changes ``update`` alone: a batch must still go through it."""

    def update(self, x, now):
        super().update(2.0 * x, now)


@pytest.mark.parametrize("cold", [{}, {"min_samples": 3}, {"min_samples": 2, "fallback": "coarser"},
                                  {"floor": 0.3, "reset_factor": 1.5, "min_samples": 2}])
@pytest.mark.parametrize("keying", ["global", "node", "function", "function_node"])
@pytest.mark.parametrize("factory", [lambda: ExponentialAverage(0.3), lambda: NowDependent(0.3),
                                     lambda: SlidingMedian(5), lambda: DoubledEWMA(0.3)],
                         ids=["ewma", "now-dependent", "median", "plugin"])
def test_a_batch_of_one_nodes_samples_updates_as_one_sample_at_a_time(keying, cold, factory):
    """KeyedEstimator.update_many (a node's heartbeat report) leaves every estimate exactly as
    update() on each sample in order does: per key, per function, global, and the per-node
    vectors; with cold-start options, and for an estimator that only overrides update."""
    rng = np.random.default_rng(5)
    batched = KeyedEstimator(factory, keying, **cold)
    single = KeyedEstimator(factory, keying, **cold)
    for r in range(40):
        node = int(rng.integers(12))
        samples = [(("f", "g", "h")[int(rng.integers(3))], float(rng.exponential(1.0)))
                   for _ in range(int(rng.integers(0, 6)))]
        batched.update_many(node, samples, float(r))
        for f, x in samples:
            single.update(f, node, x, float(r))
        for f in ("f", "g", "h", "unseen"):
            assert batched.estimate_nodes(f, 12).tolist() == single.estimate_nodes(f, 12).tolist()
            for m in range(12):
                assert batched.estimate(f, m) == single.estimate(f, m)


def test_a_heartbeat_report_reaches_a_policy_that_hooks_observe_task_sample_by_sample():
    """deliver_reports batches a report only for a policy whose observe_task is the built-in
    one; a plug-in that overrides it sees every sample, in order."""
    from testbed.policy.base import deliver_reports

    class Logs(PaperWaitTime):
        def __init__(self):
            super().__init__()
            self.seen = []

        def observe_task(self, function, node, duration_s, now):
            self.seen.append((function, node, duration_s))
            super().observe_task(function, node, duration_s, now)

    p, ref = Logs(), PaperWaitTime()
    report = [("f", 0.1), ("g", 0.2), ("f", 0.3)]
    for q in (p, ref):
        deliver_reports(q, 4, report, [], 1.0)
    assert p.seen == [("f", 4, 0.1), ("g", 4, 0.2), ("f", 4, 0.3)]
    assert p.task_time.estimate("f", 4) == ref.task_time.estimate("f", 4)


def test_keyed_rejects_unknown_keying():
    with pytest.raises(ValueError, match="keying"):
        KeyedEstimator(ExponentialAverage, "per_rack")


def test_oracle_reads_truth_set_on_the_policy():
    """With Oracle estimators, the KeyedEstimator asks the engine's truth, keyed as configured."""
    calls = []

    def truth(quantity, function, node, now):
        calls.append((quantity, function, node, now))
        return {"task_time": 2.0, "bandwidth": 1e6}[quantity] * (1 + (node or 0))

    p = bind(PaperWaitTime(), Oracle, "function_node", "global")
    assert p.task_time.estimate("f", 1, 4.0) is None            # no truth yet
    p.set_truth(truth)
    p.observe_task("f", 1, 99.0, 1.0)                           # ignored
    assert p.task_time.estimate("f", 1, 4.0) == 4.0
    assert calls[-1] == ("task_time", "f", 1, 4.0)
    assert p.bandwidth.estimate("f", 1, 5.0) == 1e6
    assert calls[-1] == ("bandwidth", None, None, 5.0)
    assert p.task_time.estimate_nodes("f", 3, 6.0).tolist() == [2.0, 4.0, 6.0]


# --- registry -----------------------------------------------------------------------

def test_build_estimator_from_spec():
    est = build("estimator", {"name": "Quantile", "q": 0.5, "window": 3}, key="scheduler.task_time")
    assert isinstance(est, Quantile) and est.q == 0.5 and est.window == 3
    assert list(builtins("estimator")) == [c.__name__ for c in ALL]


def test_build_bad_argument_names_key_and_argument():
    with pytest.raises(ConfigError) as exc:
        build("estimator", {"name": "ExponentialAverage", "alpha": 1.5}, key="scheduler.task_time")
    assert "scheduler.task_time" in str(exc.value) and "alpha" in str(exc.value)


@pytest.mark.parametrize("spec", [
    "NoSuchEstimator", "nosuchmod:X", "testbed.policy.estimators:NoSuch",
    "testbed.core.views:ClusterView", {"name": "ExponentialAverage", "beta": 1},
])
def test_build_bad_spec_names_key(spec):
    with pytest.raises(ConfigError) as exc:
        build("estimator", spec, key="scheduler.bandwidth")
    assert "scheduler.bandwidth" in str(exc.value)


def test_build_plugin_by_module_path():
    est = build("estimator", "testbed.policy.estimators:Holt", key="k")
    assert isinstance(est, Holt)


# --- cold start options (KeyedEstimator: min_samples, fallback, floor, reset_factor) --

def ewma_keyed(keying="function_node", **cold):
    return KeyedEstimator(lambda: ExponentialAverage(0.5), keying, **cold)


def test_cold_start_defaults_trust_a_key_from_its_first_sample():
    """Defaults keep the plain rule: one sample and the key's estimate is its own."""
    ke = ewma_keyed()
    assert (ke.min_samples, ke.fallback, ke.floor, ke.reset_factor) == (1, "global", 0.0, 0.0)
    ke.update("f", 0, 0.001, 0.0)
    ke.update("f", 1, 1.0, 0.0)
    assert ke.estimate_nodes("f", 3).tolist() == [0.001, 1.0, 0.5005]


@pytest.mark.parametrize("estimator", [ExponentialAverage, NowDependent])
def test_min_samples_falls_back_until_a_key_has_enough(estimator):
    """min_samples=3: a node with fewer samples takes the global estimate (cached and
    uncached paths alike); its third sample makes its own estimate count."""
    ke = KeyedEstimator(lambda: estimator(0.5), "node", min_samples=3)
    for x in (0.001, 1.0):
        ke.update("f", 0, x, 0.0)
    ke.update("f", 1, 3.0, 0.0)           # global EWMA: 0.001 -> 0.5005 -> 1.75025
    assert ke.estimate("f", 0) == pytest.approx(1.75025) and ke.estimate("f", 0, fallback=False) is None
    assert ke.estimate_nodes("f", 3).tolist() == pytest.approx([1.75025] * 3)
    ke.update("f", 0, 2.0, 0.0)           # node 0: 0.001 -> 0.5005 -> 1.25025 (3 samples)
    assert ke.estimate("f", 0) == pytest.approx(1.25025)
    assert ke.estimate_nodes("f", 3).tolist() == pytest.approx([1.25025, 1.875125, 1.875125])


@pytest.mark.parametrize("estimator", [ExponentialAverage, NowDependent])
def test_coarser_fallback_goes_function_node_to_function_to_global(estimator):
    """fallback="coarser", min_samples=2: an untrusted (function, node) key takes its
    function's estimate once the function has 2 samples, else the global one."""
    ke = KeyedEstimator(lambda: estimator(0.5), "function_node", min_samples=2, fallback="coarser")
    ke.update("f", 0, 1.0, 0.0)
    ke.update("f", 1, 3.0, 0.0)           # function f: 1 -> 2 (2 samples: trusted)
    ke.update("g", 0, 10.0, 0.0)          # function g: 1 sample; global: 1 -> 2 -> 6
    assert ke.estimate("f", 2) == 2.0 and ke.estimate("f", 0) == 2.0
    assert ke.estimate("g", 2) == 6.0 and ke.estimate("h", 0) == 6.0
    assert ke.estimate_nodes("f", 3).tolist() == [2.0, 2.0, 2.0]
    assert ke.estimate_nodes("g", 2).tolist() == [6.0, 6.0]
    ke.update("f", 0, 5.0, 0.0)           # (f, 0): 1 -> 3 (trusted); f: 2 -> 3.5
    assert ke.estimate_nodes("f", 3).tolist() == [3.0, 3.5, 3.5]
    # the same stream with the global fallback: untrusted keys take the global EWMA
    glob = KeyedEstimator(lambda: estimator(0.5), "function_node", min_samples=2)
    for f, m, x in (("f", 0, 1.0), ("f", 1, 3.0), ("g", 0, 10.0), ("f", 0, 5.0)):
        glob.update(f, m, x, 0.0)         # global: 1 -> 2 -> 6 -> 5.5
    assert glob.estimate_nodes("f", 3).tolist() == [3.0, 5.5, 5.5]


def test_floor_bounds_every_value_returned():
    """floor=0.5: a near-zero sample, the fallback and the policy's default all read >= 0.5."""
    ke = ewma_keyed("node", floor=0.5)
    assert ke.estimate_nodes("f", 2, default=0.1).tolist() == [0.5, 0.5]
    ke.update("f", 0, 0.001, 0.0)
    ke.update("f", 1, 2.0, 0.0)
    assert ke.estimate("f", 0) == 0.5 and ke.estimate("f", 1) == 2.0
    assert ke.estimate_nodes("f", 3).tolist() == [0.5, 2.0, 1.0005]
    assert np.isnan(ewma_keyed("node", floor=0.5).estimate_nodes("f", 1)).all()  # no value: NaN


def test_reset_factor_restarts_a_key_from_a_sample_far_above_its_estimate():
    """reset_factor=2 (Dask's factor): 0.01 then 1.0 (> 2 x 0.01) restarts the key and
    the global estimator from 1.0; 1.5 (< 2 x 1.0) is an ordinary update. The key keeps
    its sample count (min_samples=2 trusts it after the reset)."""
    ke = KeyedEstimator(lambda: ExponentialAverage(0.1), "node", min_samples=2, reset_factor=2.0)
    ke.update("f", 0, 0.01, 0.0)
    ke.update("f", 0, 1.0, 0.1)
    assert ke.estimate("f", 0) == 1.0 and ke.estimate_nodes("f", 2).tolist() == [1.0, 1.0]
    ke.update("f", 0, 1.5, 0.2)
    assert ke.estimate("f", 0) == pytest.approx(1.05, rel=1e-12)
    plain = KeyedEstimator(lambda: ExponentialAverage(0.1), "node")
    for x in (0.01, 1.0):
        plain.update("f", 0, x, 0.0)
    assert plain.estimate("f", 0) == pytest.approx(0.109, rel=1e-12)


@pytest.mark.parametrize("kw, word", [
    ({"min_samples": 0}, "min_samples"), ({"min_samples": 1.5}, "min_samples"),
    ({"fallback": "parent"}, "fallback"), ({"floor": -1.0}, "floor"),
    ({"floor": math.inf}, "floor"), ({"reset_factor": 1.0}, "reset_factor"),
    ({"reset_factor": -2}, "reset_factor"),
])
def test_cold_start_options_are_validated(kw, word):
    with pytest.raises(ValueError, match=word):
        ewma_keyed(**kw)


def test_cold_start_options_come_from_the_estimator_table():
    """scheduler.task_time's table carries the options; the estimator gets the rest
    (its own prior included); a bad option is a ConfigError naming the key."""
    from testbed.studies.experiment import resolve
    from testbed.policy.build import build_policies
    sched = resolve({"scheduler": {"task_time": {"name": "ExponentialAverage", "alpha": 0.2, "prior": 0.05,
                                                 "min_samples": 3, "fallback": "coarser", "floor": 0.001,
                                                 "reset_factor": 2.0},
                                   "bandwidth": {"name": "ExponentialAverage", "min_samples": 2}}})["scheduler"]
    pl, _ = build_policies(sched)
    tt = pl.task_time
    assert (tt.min_samples, tt.fallback, tt.floor, tt.reset_factor) == (3, "coarser", 0.001, 2.0)
    assert tt.keying == "function_node" and tt.factory().alpha == 0.2
    assert tt.estimate("f", 0) == 0.05                       # the estimator's prior
    assert pl.bandwidth.min_samples == 2 and pl.bandwidth.floor == 0.0
    bad = dict(sched, task_time={"name": "ExponentialAverage", "min_samples": 0})
    with pytest.raises(ConfigError, match=r"scheduler\.task_time.*min_samples"):
        build_policies(bad)


def test_oracle_uses_the_engines_vectorised_truth_once_per_decision():
    """set_truth(truth, nodes): estimate_nodes makes one call of ``nodes`` (not one truth
    call per node) and gives what the scalar truth gives node by node."""
    scalar, vector = [], []

    def truth(quantity, function, node, now):
        scalar.append(node)
        return 0.1 * (1 + node)

    def truth_nodes(quantity, function, n_nodes, now):
        vector.append((quantity, function, n_nodes, now))
        return 0.1 * (1 + np.arange(n_nodes, dtype=float))

    p = bind(PaperWaitTime(), Oracle, "function_node", "global")
    p.set_truth(truth, truth_nodes)
    got = p.task_time.estimate_nodes("f", 5, 2.0)
    assert vector == [("task_time", "f", 5, 2.0)] and scalar == []
    q = bind(PaperWaitTime(), Oracle, "function_node", "global")
    q.set_truth(truth)                                        # no vectorised form: per node
    np.testing.assert_array_equal(q.task_time.estimate_nodes("f", 5, 2.0), got)
    assert scalar == [0, 1, 2, 3, 4]
