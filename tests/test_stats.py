"""The shared statistics: intervals over seeds and paired differences."""
import math

import numpy as np
import pytest

from testbed.studies.stats import mean_ci, paired_diff_ci, paired_rel_error_ci


def test_interval_of_a_normal_sample_covers_its_mean_at_about_the_level():
    """Over many samples of 5 seeds, the 95% t-interval covers the true mean ~95% of the time."""
    rng = np.random.default_rng(1)
    hits = sum(mean_ci(rng.normal(3.0, 2.0, 5)).contains(3.0) for _ in range(2000))
    assert 0.93 < hits / 2000 < 0.97


def test_one_value_or_no_spread_is_a_point_and_empty_is_nan():
    assert (mean_ci([2.0]).lo, mean_ci([2.0]).hi) == (2.0, 2.0)
    assert mean_ci([1.0, 1.0, 1.0]).half_width == 0.0
    assert math.isnan(mean_ci([]).mean) and mean_ci([]).n == 0
    assert mean_ci([1.0, math.nan, 3.0]).n == 2


def test_paired_difference_cancels_what_both_share():
    """A shared per-seed offset much larger than the effect: the paired interval excludes 0."""
    rng = np.random.default_rng(2)
    common = rng.normal(0, 10, 8)
    a, b = common + 1.0 + rng.normal(0, 0.1, 8), common + rng.normal(0, 0.1, 8)
    d = paired_diff_ci(a, b)
    assert d.lo > 0.5 and d.hi < 1.5
    assert mean_ci(a).lo < mean_ci(b).hi        # unpaired, the two intervals overlap
    with pytest.raises(ValueError, match="same length"):
        paired_diff_ci([1, 2], [1])


def test_relative_error_is_per_pair():
    r = paired_rel_error_ci([1.1, 2.2, 3.3], [1.0, 2.0, 3.0])
    assert r.mean == pytest.approx(0.1) and r.half_width == pytest.approx(0.0, abs=1e-12)


# --- bootstrap -----------------------------------------------------------------------------

from scipy import stats as st

from testbed.studies import stats as S


def _shared_offset_pairs(n=10, effect=1.0, seed=3):
    rng = np.random.default_rng(seed)
    common = rng.normal(0, 10, n)
    return common + 20 + effect + rng.normal(0, 0.3, n), common + 20 + rng.normal(0, 0.3, n)


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_paired_bootstrap_is_scipys_with_pairs_resampled_together(method):
    a, b = _shared_offset_pairs()
    ours = S.paired_bootstrap_ci(a, b, np.random.default_rng(7), method=method, n_resamples=2000)
    ref = st.bootstrap((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis), paired=True, vectorized=True,
                       n_resamples=2000, method=method, rng=np.random.default_rng(7)).confidence_interval
    assert (ours.lo, ours.hi) == pytest.approx((ref.low, ref.high))
    assert ours.estimate == pytest.approx(np.mean(a - b)) and ours.method == method.lower()
    # pairs kept together: the shared offset (sd 10) cancels, so the interval is tight (noise sd 0.3)
    assert 0 < ours.lo < ours.estimate < ours.hi and ours.hi - ours.lo < 1.0
    unpaired = st.bootstrap((a, b), lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                            paired=False, vectorized=True, n_resamples=2000, method=method,
                            rng=np.random.default_rng(7)).confidence_interval
    assert unpaired.low < 0 < unpaired.high


def test_bootstrap_is_deterministic_in_its_rng_and_requires_one():
    a, b = _shared_offset_pairs()
    one = S.paired_bootstrap_ci(a, b, 11, n_resamples=500)
    assert one == S.paired_bootstrap_ci(a, b, np.random.default_rng(11), n_resamples=500)
    assert one != S.paired_bootstrap_ci(a, b, 12, n_resamples=500)
    with pytest.raises(ValueError, match="rng is required"):
        S.paired_bootstrap_ci(a, b, None)
    with pytest.raises(ValueError, match="unknown statistic"):
        S.paired_bootstrap_ci(a, b, 1, statistic="max")


def test_relative_bootstrap_resamples_ratio_of_means_over_pairs():
    """rel_mean_diff = mean(a)/mean(b) - 1: on (2x, x) pairs it is exactly +100% in every resample."""
    b = np.array([1.0, 2.0, 5.0, 3.0])
    r = S.paired_bootstrap_ci(2 * b, b, 0, statistic="rel_mean_diff", n_resamples=500, method="percentile")
    assert (r.estimate, r.lo, r.hi) == pytest.approx((1.0, 1.0, 1.0))


def test_bootstrap_degenerate_inputs():
    """One pair or equal differences: the point; no pair: NaN; a NaN drops its pair."""
    one = S.paired_bootstrap_ci([3.0], [1.0], 0)
    assert (one.estimate, one.lo, one.hi, one.n) == (2.0, 2.0, 2.0, 1)
    same = S.paired_bootstrap_ci([2.0, 3.0, 4.0], [1.0, 2.0, 3.0], 0)
    assert (same.lo, same.hi) == (1.0, 1.0)
    empty = S.paired_bootstrap_ci([math.nan], [1.0], 0)
    assert empty.n == 0 and math.isnan(empty.estimate) and not empty.defined
    with_nan = S.paired_bootstrap_ci([1.0, math.nan, 3.0, 6.0], [0.0, 0.0, 1.0, 1.0], 0, n_resamples=500)
    assert with_nan.n == 3 and with_nan.estimate == pytest.approx(np.mean([1.0, 2.0, 5.0]))


# --- Wilcoxon, median -------------------------------------------------------------------------

def test_wilcoxon_is_scipys_and_exact_by_hand():
    rng = np.random.default_rng(4)
    a, b = rng.normal(1, 1, 12), rng.normal(0, 1, 12)
    assert S.wilcoxon_p(a, b) == pytest.approx(st.wilcoxon(a - b).pvalue)
    # six positive differences: the exact two-sided p is 2 * (1/2)^6
    assert S.wilcoxon_p([1, 2, 3, 4, 5, 6], [0] * 6) == pytest.approx(2 / 64)
    assert S.wilcoxon_p([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0           # every difference 0
    assert S.wilcoxon_p([1, 2, 3, 4, 5, 6, math.nan], [0] * 6 + [1]) == pytest.approx(2 / 64)
    assert math.isnan(S.wilcoxon_p([], []))


def test_median_interval_is_the_sign_interval_and_needs_enough_seeds():
    d = np.array([0.3, -0.1, 0.8, 0.5, 0.2, 1.1])
    m = S.median_diff_ci(d, np.zeros(6))
    # n = 6: P(all on one side) = 2/64 < 5%, so the 95% interval is [min, max]; with 5, none exists
    assert (m.estimate, m.lo, m.hi, m.stat, m.method) == (np.median(d), -0.1, 1.1, "median", "sign")
    five = S.median_diff_ci(d[:5], np.zeros(5))
    assert five.n == 5 and not five.defined
    assert S.verdict(five) == S.UNDEFINED
    rng = np.random.default_rng(5)
    x = rng.exponential(1.0, 30)
    ref = st.quantile_test(x, q=0, p=0.5).confidence_interval(0.9)
    got = S.median_diff_ci(x, np.zeros(30), level=0.9)
    assert (got.lo, got.hi) == (ref.low, ref.high)
    with pytest.raises(AttributeError, match="no mean"):
        m.mean


# --- Holm, outliers -----------------------------------------------------------------------------

def test_holm_by_hand():
    """Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    0.02, 0.03, 0.06, 0.06, back in input order."""
    got = S.holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])                    # capped at 1
    nan = S.holm([0.01, math.nan, 0.04])                                       # NaN: not in the family
    assert nan[0] == pytest.approx(0.02) and math.isnan(nan[1]) and nan[2] == pytest.approx(0.04)
    assert S.holm([]).size == 0 and S.holm([0.2]) == pytest.approx([0.2])
    with pytest.raises(ValueError):
        S.holm([1.5])


def test_holm_lies_between_raw_and_bonferroni():
    rng = np.random.default_rng(6)
    for _ in range(50):
        p = rng.uniform(0, 0.2, rng.integers(1, 12))
        h = S.holm(p)
        assert np.all(h >= p - 1e-15) and np.all(h <= np.minimum(p * len(p), 1) + 1e-15)


def test_outlier_rule():
    """Modified z-score > 3.5 on MAD x 1.4826 (mean absolute deviation x sqrt(pi/2) when MAD is 0)."""
    assert S.outlier_runs([1.0, 1.1, 0.9, 1.05, 0.95, 10.0]).tolist() == [False] * 5 + [True]
    # MAD = 0: mean abs. deviation 1.0 -> scale 1.2533, z(5) = 3.99 -> flagged
    assert S.outlier_runs([0.0, 0.0, 0.0, 0.0, 5.0]).tolist() == [False] * 4 + [True]
    # MAD = 0: mean abs. deviation 0.4 -> scale 0.501, z(1) = 2.0 -> not flagged
    assert not S.outlier_runs([0.0, 0.0, 0.0, 1.0, 1.0]).any()
    assert not S.outlier_runs([2.0] * 6).any()
    assert not S.outlier_runs([0.0, 100.0]).any()                              # fewer than 3
    assert S.outlier_runs([1.0, math.nan, 1.1, 0.9, 1.05, 10.0]).tolist() == [False] * 5 + [True]
    # by hand: median 1.05, |dev| .05 .15 .25 .05 .15 .55 -> MAD .15 -> scale .2224; z(1.6) = 2.47
    assert not S.outlier_runs([1.0, 1.2, 0.8, 1.1, 0.9, 1.6]).any()
    # the same with 2.0: |dev| .95, MAD still .15 -> z = 4.27 > 3.5
    assert S.outlier_runs([1.0, 1.2, 0.8, 1.1, 0.9, 2.0]).tolist() == [False] * 5 + [True]


# --- verdicts, comparisons ------------------------------------------------------------------------

def _iv(lo, hi, n=10):
    return S.Interval((lo + hi) / 2, lo, hi, n)


def test_verdict_wording():
    assert S.verdict(_iv(-2, -1)) == S.BETTER
    assert S.verdict(_iv(1, 2)) == S.WORSE
    assert S.verdict(_iv(1, 2), lower_is_better=False) == S.BETTER
    assert S.verdict(_iv(-1, 2)) == S.NO_DIFFERENCE
    assert S.verdict(_iv(-0.1, 0.2), margin=0.5) == S.EQUIVALENT
    assert S.verdict(_iv(-0.1, 0.7), margin=0.5) == S.NO_DIFFERENCE
    assert S.verdict(_iv(-2, -1, n=2)) == S.TOO_FEW
    assert S.verdict(S.Interval(1.0, math.nan, math.nan, 10)) == S.UNDEFINED
    assert S.verdict(_iv(-2, -1), p=0.01, p_adjusted=0.03) == S.BETTER
    assert S.verdict(_iv(-2, -1), p=0.01, p_adjusted=0.08) == S.NOT_AFTER_CORRECTION
    assert S.verdict(_iv(-2, -1), p=0.07, p_adjusted=0.07) == S.NO_DIFFERENCE    # the test disagrees
    assert {S.verdict(_iv(lo, lo + 1)) for lo in (-3, -0.5, 2)} <= set(S.VERDICTS)


def test_compare_on_a_real_effect_and_on_degenerate_inputs():
    a, b = _shared_offset_pairs(n=12, effect=1.0)
    c = S.compare(a, b, 0, n_resamples=1000)
    assert c.n == 12 and c.diff.lo > 0 and c.boot.lo > 0 and c.median.lo > 0
    assert c.p_t == pytest.approx(st.ttest_rel(a, b).pvalue)
    assert c.p_wilcoxon == pytest.approx(st.wilcoxon(a, b).pvalue)
    assert c.rel.estimate == pytest.approx(a.mean() / b.mean() - 1)
    assert c.verdict() == S.WORSE and c.verdict(basis="wilcoxon") == S.WORSE
    assert c.verdict(lower_is_better=False, basis="bootstrap") == S.BETTER

    one = S.compare([2.0], [1.0], 0)
    assert one.n == 1 and one.verdict() == S.TOO_FEW and math.isnan(one.p_t)
    same = S.compare([2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0], 0)     # every seed exactly +1
    assert (same.diff.lo, same.boot.hi, same.p_t) == (1.0, 1.0, 0.0) and same.verdict() == S.WORSE
    zero = S.compare([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0)
    assert zero.p_t == 1.0 and zero.p_wilcoxon == 1.0 and zero.verdict() == S.NO_DIFFERENCE
    nan = S.compare([math.nan, 1.0, 1.0, 1.0, 1.0, 9.0], [0.0, 1.0, 1.0, 1.0, 1.0, 1.0], 0)
    assert nan.n == 5 and nan.outliers == (5,)                           # positions in the input


def test_compare_family_holm_adjusts_and_is_reproducible():
    a, b = _shared_offset_pairs(n=10, effect=1.0)
    rng = np.random.default_rng(9)
    noise = rng.normal(0, 1, 10)
    fam = {"real": (a, b), "null": (b + noise, b), "small": (b + 0.3 + 0.5 * noise, b)}
    got = S.compare_family(fam, 1, n_resamples=500)
    assert list(got) == list(fam)
    raw_t = [got[k].p_t for k in fam]
    assert [got[k].p_t_holm for k in fam] == pytest.approx(S.holm(raw_t).tolist())
    assert [got[k].p_wilcoxon_holm for k in fam] == pytest.approx(S.holm([got[k].p_wilcoxon for k in fam]).tolist())
    assert got["real"].verdict() == S.WORSE
    assert got == S.compare_family(fam, 1, n_resamples=500)


def test_pairs_align_a_runs_table_on_the_seed():
    import pandas as pd
    runs = pd.DataFrame({"est": ["A", "A", "B", "B", "B"], "seed": [1, 0, 0, 1, 2],
                         "p99": [1.5, 1.0, 2.0, 2.5, 9.0]})
    a, b, seeds = S.pairs(runs, "est", "A", "B", "p99")
    assert seeds.tolist() == [0, 1, 2]
    assert a[:2].tolist() == [1.0, 1.5] and math.isnan(a[2]) and b.tolist() == [2.0, 2.5, 9.0]
    assert S.compare(a, b, 0, n_resamples=100).n == 2              # seed 2 has no pair
    with pytest.raises(ValueError, match="more than once"):
        S.pairs(pd.concat([runs, runs]), "est", "A", "B", "p99")


def test_sign_interval_covers_the_median_at_least_at_its_level():
    """Exponential differences (skewed, median ln 2): coverage >= 95% over 1000 samples of 10."""
    rng = np.random.default_rng(8)
    hits = sum(S.median_diff_ci(rng.exponential(1.0, 10), np.zeros(10)).contains(math.log(2)) for _ in range(1000))
    assert hits / 1000 >= 0.94
