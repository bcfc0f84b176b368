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
