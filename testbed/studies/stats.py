"""Statistics every study reports with: intervals over seeds, paired comparisons, verdicts.

One place, on scipy, so no study writes its own t-quantile, bootstrap or rank test. A sample
is one value per seed (a run's metric); a paired sample is two values per seed from runs that
share their random numbers (the same workload draws), so the noise common to both cancels in
the difference ``candidate - reference``.

    runs.csv table ───> pairs                   one arm against another, aligned on the seed
    values per seed ──> mean_ci (t)            the mean and its Student-t interval
    (cand, ref) pairs ─> compare ─> Comparison  t interval, bootstrap interval (pairs resampled
                                                together), Wilcoxon signed-rank p, median
                                                difference with its sign-test interval,
                                                outlier-run flags
    {name: pairs} ─────> compare_family         the same per comparison, p-values Holm-adjusted
                                                over the family
    Interval (+ p) ────> verdict                "better" / "worse" / "no significant difference"
                                                / "inconclusive (too few seeds)" / ...

Everything random takes an ``rng`` (a ``numpy.random.Generator`` or a seed), so a report is
the same every time it is generated from the same runs.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as _st

#: default two-sided confidence level
LEVEL = 0.95
#: bootstrap resamples (scipy's default)
N_RESAMPLES = 9999
#: fewer pairs than this and :func:`verdict` says "inconclusive (too few seeds)"
MIN_SEEDS = 3
#: a run is an outlier when its robust z-score |d - median| / scale exceeds this (Iglewicz and
#: Hoaglin's 3.5 for the modified z-score, see :func:`outlier_runs`)
OUTLIER_Z = 3.5

BETTER, WORSE = "better", "worse"
NO_DIFFERENCE = "no significant difference"
NOT_AFTER_CORRECTION = "no significant difference after Holm correction"
EQUIVALENT = "equivalent within the margin"
TOO_FEW = "inconclusive (too few seeds)"
UNDEFINED = "inconclusive (interval undefined)"
#: every wording :func:`verdict` can return
VERDICTS = (BETTER, WORSE, NO_DIFFERENCE, NOT_AFTER_CORRECTION, EQUIVALENT, TOO_FEW, UNDEFINED)


@dataclass(frozen=True)
class Interval:
    """An estimate with a two-sided confidence interval (``lo``, ``hi``) over ``n`` values.

    ``stat`` says what the estimate is ("mean" or "median"), ``method`` how the interval was
    made ("t", "bca", "percentile", "sign"). With one value (or zero spread) a t or bootstrap
    interval is the point itself; with none, all NaN; an interval the method cannot give at this
    level with this few values (a sign interval from 5 seeds at 95%) is NaN."""
    estimate: float
    lo: float
    hi: float
    n: int
    level: float = LEVEL
    method: str = "t"
    stat: str = "mean"

    @property
    def mean(self) -> float:
        """The estimate of a mean interval (a median interval has no mean: AttributeError)."""
        if self.stat != "mean":
            raise AttributeError(f"a {self.stat} interval has no mean; use .estimate")
        return self.estimate

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.lo) or math.isnan(self.hi))

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def fmt(self, scale: float = 1.0, spec: str = "{:.3g}") -> str:
        """``estimate [lo, hi]`` scaled, e.g. for a markdown table."""
        if math.isnan(self.estimate):
            return "—"
        f = spec.format
        if not self.defined:
            return f"{f(self.estimate * scale)} [—]"
        return f"{f(self.estimate * scale)} [{f(self.lo * scale)}, {f(self.hi * scale)}]"


def _clean(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    return x[~np.isnan(x)]


def _pairs(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, kept): the pairs where neither value is NaN, and the mask of those kept."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {len(a)} and {len(b)}")
    kept = ~(np.isnan(a) | np.isnan(b))
    return a[kept], b[kept], kept


def _nan(n: int, level: float, method: str, stat: str = "mean") -> Interval:
    return Interval(math.nan, math.nan, math.nan, n, level, method, stat)


# --- t intervals -------------------------------------------------------------------------

def mean_ci(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of ``values`` (NaNs dropped) and its t-interval at ``level``."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return _nan(0, level, "t")
    m = float(x.mean())
    if n == 1:
        return Interval(m, m, m, 1, level)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    if sem == 0.0:
        return Interval(m, m, m, n, level)
    lo, hi = _st.t.interval(level, n - 1, loc=m, scale=sem)
    return Interval(m, float(lo), float(hi), n, level)


def paired_diff_ci(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of ``a[i] - b[i]`` over pairs (seeds) with its t-interval (pairs with a NaN dropped)."""
    a, b, _ = _pairs(a, b)
    return mean_ci(a - b, level)


def paired_rel_error_ci(test: Sequence[float], ref: Sequence[float], level: float = LEVEL) -> Interval:
    """Relative error ``(test - ref) / ref`` per pair, its mean and t-interval (a ratio per seed,
    so a seed where both moved together counts as agreement)."""
    t, r = np.asarray(test, dtype=float), np.asarray(ref, dtype=float)
    if t.shape != r.shape:
        raise ValueError(f"paired samples must have the same length, got {len(t)} and {len(r)}")
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(r != 0, (t - r) / r, np.nan)
    return mean_ci(rel, level)


def rel_error(value: float, reference: float) -> float:
    """(value - reference) / reference (NaN when the reference is 0)."""
    return (value - reference) / reference if reference else math.nan


def ttest_p(d: Sequence[float]) -> float:
    """Two-sided one-sample t-test p-value of mean(d) = 0 (scipy's), NaNs dropped. Zero spread
    is decided exactly: p = 1 when every d is 0, p = 0 when every d is the same non-zero value;
    fewer than two values: NaN."""
    x = _clean(d)
    if len(x) < 2:
        return math.nan
    if np.ptp(x) == 0:
        return 1.0 if x[0] == 0 else 0.0
    return float(_st.ttest_1samp(x, 0.0).pvalue)


# --- bootstrap ---------------------------------------------------------------------------

#: paired statistics of (candidate, reference) arrays along ``axis``, for :func:`paired_bootstrap_ci`
PAIRED_STATISTICS: dict[str, Callable] = {
    "mean_diff": lambda a, b, axis=-1: np.mean(a - b, axis=axis),
    "rel_mean_diff": lambda a, b, axis=-1: np.mean(a, axis=axis) / np.mean(b, axis=axis) - 1.0,
}


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        raise ValueError("rng is required (a numpy Generator or an int seed), so results are reproducible")
    return np.random.default_rng(rng)


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], rng, *, statistic: str = "mean_diff",
                        method: str = "BCa", level: float = LEVEL, n_resamples: int = N_RESAMPLES) -> Interval:
    """A bootstrap interval (scipy.stats.bootstrap) of a paired statistic of ``a`` against ``b``.

    Seeds are resampled as pairs (``paired=True``): a resample draws seeds with replacement and
    keeps each seed's two runs together, so the common random numbers still cancel.
    ``statistic`` is a name in :data:`PAIRED_STATISTICS` ("mean_diff": mean of a - b;
    "rel_mean_diff": mean(a) / mean(b) - 1); ``method`` "BCa" (bias-corrected and accelerated,
    scipy's default) or "percentile". Pairs with a NaN are dropped. One pair, or a statistic
    with zero spread over the jackknife (every difference equal), gives the point itself;
    none: NaN. ``rng`` (a Generator or a seed) is required."""
    gen = _rng(rng)
    fn = PAIRED_STATISTICS.get(statistic)
    if fn is None:
        raise ValueError(f"unknown statistic {statistic!r}; one of {', '.join(PAIRED_STATISTICS)}")
    if method.lower() not in ("bca", "percentile"):
        raise ValueError(f"method must be 'BCa' or 'percentile', got {method!r}")
    a, b, _ = _pairs(a, b)
    n, tag = len(a), method.lower()
    if n == 0:
        return _nan(0, level, tag)
    with np.errstate(divide="ignore", invalid="ignore"):
        est = float(fn(a, b))
    if n == 1 or (np.ptp(a - b) == 0 and (statistic == "mean_diff" or np.ptp(b) == 0)):
        return Interval(est, est, est, n, level, tag)
    with warnings.catch_warnings():
        # BCa on a degenerate resample distribution: scipy warns and returns NaN, which we keep
        warnings.simplefilter("ignore")
        res = _st.bootstrap((a, b), fn, paired=True, vectorized=True, confidence_level=level,
                            n_resamples=n_resamples, method=method, rng=gen)
    ci = res.confidence_interval
    return Interval(est, float(ci.low), float(ci.high), n, level, tag)


# --- rank test and median ------------------------------------------------------------------

def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value (scipy.stats.wilcoxon; exact for small samples
    without ties) of the paired differences ``a - b``, pairs with a NaN dropped. Zero
    differences are dropped (scipy's "wilcox" rule); when every difference is 0 the p-value is 1
    (no evidence of any difference); no pairs: NaN."""
    a, b, _ = _pairs(a, b)
    d = a - b
    if len(d) == 0:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(_st.wilcoxon(d).pvalue)


def median_diff_ci(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """Median of the paired differences ``a - b`` with a distribution-free interval: the
    sign-test (order-statistic) interval of scipy.stats.quantile_test, which covers the median
    with probability at least ``level`` for any continuous distribution. It needs enough pairs:
    at 95%, at least 6 (with 5 or fewer the bounds are NaN). Pairs with a NaN are dropped."""
    a, b, _ = _pairs(a, b)
    d = a - b
    if len(d) == 0:
        return _nan(0, level, "sign", "median")
    med = float(np.median(d))
    if np.ptp(d) == 0:
        return Interval(med, med, med, len(d), level, "sign", "median")
    ci = _st.quantile_test(d, q=0.0, p=0.5).confidence_interval(level)
    return Interval(med, float(ci.low), float(ci.high), len(d), level, "sign", "median")


def pairs(runs, arm: str, candidate, reference, metric: str, seed: str = "seed"
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From a runs table (``runs.csv``: one row per point x seed), the paired sample of
    ``metric`` for the rows where column ``arm`` is ``candidate`` against those where it is
    ``reference``, aligned on ``seed``: ``(candidate values, reference values, seeds)``, seeds
    sorted, NaN where one side lacks that seed (the comparisons drop such pairs). A seed twice
    in one arm means the rows mix other factors (filter them first): ValueError."""
    out = []
    for value in (candidate, reference):
        rows = runs[runs[arm] == value]
        dup = rows[seed][rows[seed].duplicated()]
        if len(dup):
            raise ValueError(f"{arm} = {value!r} has seed {dup.iloc[0]!r} more than once: "
                             f"filter the other factors before pairing")
        out.append(rows.set_index(seed)[metric].astype(float))
    seeds = sorted(set(out[0].index) | set(out[1].index))
    a, b = (x.reindex(seeds).to_numpy(float) for x in out)
    return a, b, np.asarray(seeds)


# --- families and outliers -----------------------------------------------------------------

def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm(-Bonferroni) adjusted p-values, in the input order: sort the m p-values, multiply
    the k-th smallest by (m - k + 1), carry the running maximum, cap at 1. Rejecting where the
    adjusted p < alpha controls the family-wise error rate at alpha. NaN p-values (comparisons
    that could not be tested) are not part of the family and stay NaN. (scipy has no Holm; its
    ``false_discovery_control`` controls the false discovery rate instead.)"""
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    if len(idx) == 0:
        return out
    if np.any((p[idx] < 0) | (p[idx] > 1)):
        raise ValueError("p-values must be in [0, 1]")
    m = len(idx)
    order = idx[np.argsort(p[idx], kind="stable")]
    adj = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adj, 1.0)
    return out


def outlier_runs(d: Sequence[float], z: float = OUTLIER_Z) -> np.ndarray:
    """Which runs (seeds) are outliers among the paired differences ``d``: a boolean per value.

    The rule (Iglewicz and Hoaglin's modified z-score): a value is an outlier when
    ``|d - median(d)| / scale > z`` (default 3.5), where ``scale`` is the median absolute
    deviation scaled to a normal's sigma (scipy.stats.median_abs_deviation, scale="normal",
    i.e. MAD x 1.4826). When more than half the values equal the median the MAD is 0; the
    scale then falls back to the mean absolute deviation from the median x sqrt(pi/2) (the
    normal's sigma again), so one run carrying the whole difference among identical ones is
    still flagged (a lone differing run among n is then at z = n / 1.2533: flagged from 5 runs
    on). All values equal: none flagged. NaN values are never flagged and not used;
    fewer than 3 values: none flagged (no majority to be far from)."""
    x = np.asarray(d, dtype=float).ravel()
    flags = np.zeros(x.shape, dtype=bool)
    ok = ~np.isnan(x)
    v = x[ok]
    if len(v) < 3:
        return flags
    med = float(np.median(v))
    scale = float(_st.median_abs_deviation(v, scale="normal"))
    if scale == 0.0:
        scale = float(np.mean(np.abs(v - med))) * math.sqrt(math.pi / 2)
    if scale == 0.0:
        return flags
    flags[ok] = np.abs(v - med) / scale > z
    return flags


# --- comparisons and verdicts ----------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """A candidate against a reference over the same seeds (``d = candidate - reference``)."""
    n: int                     #: pairs with both values (NaN pairs dropped)
    diff: Interval             #: mean difference, t-interval
    boot: Interval             #: mean difference, bootstrap interval (pairs resampled together)
    median: Interval           #: median difference, sign-test interval
    rel: Interval              #: mean(candidate) / mean(reference) - 1, bootstrap interval
    p_t: float                 #: two-sided paired t-test p
    p_wilcoxon: float          #: two-sided Wilcoxon signed-rank p
    outliers: tuple[int, ...]  #: input positions of outlier runs (see outlier_runs)
    p_t_holm: float = math.nan         #: p_t adjusted over the family (compare_family), else p_t
    p_wilcoxon_holm: float = math.nan  #: p_wilcoxon adjusted likewise

    def verdict(self, *, lower_is_better: bool = True, basis: str = "t", min_seeds: int = MIN_SEEDS,
                margin: float | None = None) -> str:
        """:func:`verdict` of this comparison. ``basis`` "t": the t-interval with the
        (Holm-adjusted) t-test p; "bootstrap": the bootstrap interval with the same p (both must
        agree); "wilcoxon": the median's sign interval with the (Holm-adjusted) signed-rank p."""
        if basis == "t":
            ci, p, adj = self.diff, self.p_t, self.p_t_holm
        elif basis == "bootstrap":
            ci, p, adj = self.boot, self.p_t, self.p_t_holm
        elif basis == "wilcoxon":
            ci, p, adj = self.median, self.p_wilcoxon, self.p_wilcoxon_holm
        else:
            raise ValueError(f"basis must be 't', 'bootstrap' or 'wilcoxon', got {basis!r}")
        return verdict(ci, lower_is_better=lower_is_better, p=p, p_adjusted=adj, min_seeds=min_seeds,
                       margin=margin)


def compare(candidate: Sequence[float], reference: Sequence[float], rng, *, level: float = LEVEL,
            method: str = "BCa", n_resamples: int = N_RESAMPLES, outlier_z: float = OUTLIER_Z) -> Comparison:
    """Every paired statistic of ``candidate`` against ``reference`` (values per seed, in the
    same seed order). ``rng`` (a Generator or a seed) drives the bootstrap. Holm fields equal
    the raw p-values (a family of one); :func:`compare_family` adjusts them."""
    gen = _rng(rng)
    a, b, kept = _pairs(candidate, reference)
    d = a - b
    flags = np.zeros(kept.shape, dtype=bool)
    flags[kept] = outlier_runs(d, outlier_z)
    p_t, p_w = ttest_p(d), wilcoxon_p(a, b)
    return Comparison(
        n=len(d), diff=mean_ci(d, level),
        boot=paired_bootstrap_ci(a, b, gen, method=method, level=level, n_resamples=n_resamples),
        median=median_diff_ci(a, b, level),
        rel=paired_bootstrap_ci(a, b, gen, statistic="rel_mean_diff", method=method, level=level,
                                n_resamples=n_resamples),
        p_t=p_t, p_wilcoxon=p_w, outliers=tuple(int(i) for i in np.flatnonzero(flags)),
        p_t_holm=p_t, p_wilcoxon_holm=p_w)


def compare_family(pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]], rng, *,
                   level: float = LEVEL, method: str = "BCa", n_resamples: int = N_RESAMPLES,
                   outlier_z: float = OUTLIER_Z) -> dict[str, Comparison]:
    """:func:`compare` for each ``name -> (candidate, reference)`` (in the mapping's order, one
    generator for all, so the result depends only on ``rng`` and the input), with the t and
    Wilcoxon p-values Holm-adjusted over the whole family."""
    gen = _rng(rng)
    raw = {k: compare(a, b, gen, level=level, method=method, n_resamples=n_resamples, outlier_z=outlier_z)
           for k, (a, b) in pairs.items()}
    names = list(raw)
    pt = holm([raw[k].p_t for k in names])
    pw = holm([raw[k].p_wilcoxon for k in names])
    return {k: replace(raw[k], p_t_holm=float(pt[i]), p_wilcoxon_holm=float(pw[i])) for i, k in enumerate(names)}


def verdict(ci: Interval, *, lower_is_better: bool = True, p: float | None = None,
            p_adjusted: float | None = None,
            alpha: float | None = None, min_seeds: int = MIN_SEEDS, margin: float | None = None) -> str:
    """A difference's interval (candidate - reference) in words, no stronger than it allows.

    - fewer than ``min_seeds`` pairs: "inconclusive (too few seeds)"; an interval the method
      could not give (NaN bounds): "inconclusive (interval undefined)";
    - the interval excludes 0: "better" or "worse" (``lower_is_better`` says which side is
      better: latency, yes; throughput, no) — unless ``p_adjusted`` (a p-value corrected for the
      family, e.g. by :func:`holm`) is not below ``alpha`` (default ``1 - ci.level``): then "no
      significant difference after Holm correction" when the uncorrected ``p`` is below
      ``alpha`` (or not given), else "no significant difference" (the test behind ``p``
      disagrees with the interval: claim nothing);
    - the interval contains 0: "equivalent within the margin" when ``margin`` is given and the
      whole interval lies inside ``[-margin, margin]``, else "no significant difference".
    """
    if ci.n < min_seeds:
        return TOO_FEW
    if not ci.defined:
        return UNDEFINED
    if alpha is None:
        alpha = 1.0 - ci.level
    if ci.lo > 0 or ci.hi < 0:
        if p_adjusted is not None and not math.isnan(p_adjusted) and p_adjusted >= alpha:
            raw_significant = p is None or math.isnan(p) or p < alpha
            return NOT_AFTER_CORRECTION if raw_significant else NO_DIFFERENCE
        lower = ci.hi < 0
        return BETTER if lower == lower_is_better else WORSE
    if margin is not None and -margin <= ci.lo and ci.hi <= margin:
        return EQUIVALENT
    return NO_DIFFERENCE
