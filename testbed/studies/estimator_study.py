"""The ``estimator_study`` study: which task-time estimator should the global scheduler use?

The config crosses a *treatment* — a case group, by default ``[[sweep.cases.estimator]]``
(or the group that holds ``run.baseline``) — with *strata*: every other case group
(workloads), linked axis (cluster size) and grid axis (load, staleness, ...). Each case of
the treatment is compared with the baseline case (``run.baseline``, default the group's
first case) in every stratum, **paired per seed**: the same seed gives both the same jobs
and draws (common random numbers), so the noise they share cancels in the difference::

    runs.csv ──(stratum, seed)──> pairs (candidate, baseline) per metric
             ──> stats.compare_family: t interval, bootstrap interval, Wilcoxon p, outlier runs,
                 p-values Holm-adjusted over every comparison of the report
             ──> stats.verdict per comparison: better / worse / no significant difference / ...

Per run (computed where it ran, from its Trace; ``run_metrics``):

- latency mean / p50 / p99 and queueing delay of the whole run (core.metrics);
- the same after the warm-up (tasks submitted after the first ``run.warmup_fraction`` of
  submissions: ``*_steady_s``) and, when the workload has a regime shift, after it
  (``*_after_shift_s``);
- herding: the most tasks the global scheduler sent one node within one heartbeat interval
  (``herd_max``), and the mean over intervals of the busiest node's count (``herd_mean``);
- with ``run.track_estimates``: the estimator's one-step-ahead error (policy.base.EstimateError:
  ``est_mae_s``, ``est_bias_s``, ``est_rel_error``), so prediction quality sits beside
  decision quality.

``summary`` is the report (also written as ``report.md``): per stratum, the headline table, the
paired differences against the baseline with 95% intervals and verdicts, the gap to the Oracle
where an ``Oracle`` case exists (decision regret), outlier runs; figures: latency CDFs per
estimator and stratum, the difference against the baseline with error bars, and a
sensitivity panel along each grid axis.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .experiment import factor_column
from .stats import VERDICTS, compare_family, mean_ci, pairs

#: metric -> (title, scale to the shown unit, format); lower is better for all of them
METRICS: dict[str, tuple[str, float, str]] = {
    "latency_mean_s": ("latency mean (ms)", 1e3, "{:.2f}"),
    "latency_p50_s": ("latency p50 (ms)", 1e3, "{:.2f}"),
    "latency_p99_s": ("latency p99 (ms)", 1e3, "{:.1f}"),
    "latency_p99_steady_s": ("p99 after warm-up (ms)", 1e3, "{:.1f}"),
    "latency_mean_after_shift_s": ("mean after shift (ms)", 1e3, "{:.2f}"),
    "queue_delay_mean_s": ("queue delay mean (ms)", 1e3, "{:.2f}"),
    "makespan_s": ("makespan (s)", 1.0, "{:.3f}"),
}
#: what the headline table also shows (not compared: descriptive)
DESCRIBE: dict[str, tuple[str, float, str]] = {
    "placement_delay_mean_s": ("placement delay (ms)", 1e3, "{:.2f}"),
    "herd_max": ("herd max (tasks)", 1.0, "{:.0f}"),
    "est_mae_s": ("estimate MAE (ms)", 1e3, "{:.2f}"),
    "est_bias_s": ("estimate bias (ms)", 1e3, "{:+.2f}"),
    "spilled_fraction": ("spilled", 1.0, "{:.1%}"),
}
#: bootstrap resamples per interval (scipy's default is 9999; 2000 keeps a large report fast)
N_RESAMPLES = 2000
#: the report's bootstrap generator seed (the report is the same every time it is rebuilt)
REPORT_SEED = 0


# --- per run ------------------------------------------------------------------------------

def run_metrics(trace: pd.DataFrame | None, cfg: dict) -> dict:
    """Windowed latencies and herding counters of one run, from its Trace."""
    if trace is None:
        return {}
    done = trace[trace.state == "finished"]
    if not len(done):
        return {}
    lat = (done.finished_s - done.submitted_s).to_numpy()
    out: dict = {}
    warm = cfg["run"]["warmup_fraction"]
    cut = np.quantile(done.submitted_s.to_numpy(), warm) if warm > 0 else -np.inf
    steady = lat[(done.submitted_s > cut).to_numpy()]
    if len(steady):
        out["latency_mean_steady_s"] = float(steady.mean())
        out["latency_p99_steady_s"] = float(np.quantile(steady, 0.99))
    after = _after_shift(done, cfg["workload"])
    if after is not None and after.any():
        a = lat[after]
        out["latency_mean_after_shift_s"] = float(a.mean())
        out["latency_p99_after_shift_s"] = float(np.quantile(a, 0.99))
    out.update(herding(trace, cfg["cluster"]["heartbeat_interval_s"]))
    placed = done.placed_s.to_numpy() - done.submitted_s.to_numpy()
    placed = placed[placed == placed]
    if len(placed):
        # submission -> placement: the local decision and, for forwarded tasks, the global
        # scheduler's queue and decision (a saturated replica shows here, not in queueing delay)
        out["placement_delay_mean_s"] = float(placed.mean())
    return out


def _after_shift(done: pd.DataFrame, workload: dict) -> np.ndarray | None:
    """Which finished tasks were submitted after the workload's regime shift (None: no shift)."""
    shift = workload.get("shift")
    if not shift:
        return None
    if shift.get("at_s") is not None:
        return (done.submitted_s >= shift["at_s"]).to_numpy()
    if shift.get("after_jobs") is not None:
        return (done.job_id >= shift["after_jobs"]).to_numpy()
    return None


def herding(trace: pd.DataFrame, interval_s: float) -> dict:
    """The global scheduler's herding: per heartbeat interval (placement time // interval),
    the most tasks it placed on one node; ``herd_max`` the largest such count of the run,
    ``herd_mean`` its mean over intervals with at least one placement."""
    g = trace[trace.spilled.astype(bool) & trace.placed_s.notna()]
    if not len(g):
        return {"herd_max": 0.0, "herd_mean": 0.0}
    window = np.floor(g.placed_s.to_numpy() / interval_s).astype(np.int64)
    counts = pd.Series(1, index=pd.MultiIndex.from_arrays([window, g.node.to_numpy()])).groupby(level=[0, 1]).sum()
    busiest = counts.groupby(level=0).max()
    return {"herd_max": float(busiest.max()), "herd_mean": float(busiest.mean())}


# --- the design: treatment, baseline, strata ----------------------------------------------

def design(runs: pd.DataFrame, exp) -> tuple[str, str, list[str]]:
    """(treatment column, baseline label, stratum columns) of an experiment's runs."""
    sweep = exp.resolved.get("sweep") or {}
    cases = sweep.get("cases")
    groups = list(cases) if isinstance(cases, dict) else ([""] if cases else [])
    baseline = exp.resolved["run"]["baseline"]
    treat = None
    for g in groups:
        labels = _labels(cases[g] if isinstance(cases, dict) else cases)
        if (baseline and baseline in labels) or (not baseline and g in ("estimator", "")):
            treat, baseline = g, baseline or labels[0]
            break
    if treat is None and groups:
        treat = groups[0]
        labels = _labels(cases[treat] if isinstance(cases, dict) else cases)
        baseline = baseline if baseline in labels else labels[0]
    if treat is None:
        raise ValueError("estimator_study needs a case group to compare ([[sweep.cases.estimator]])")
    tcol = factor_column(treat)
    # keys set by case groups and linked axes are represented by their factor columns; the
    # plain grid axes are strata of their own
    by_factor = set().union(*(_keys(v) for v in (cases.values() if isinstance(cases, dict) else [cases or []])))
    by_factor |= {k for axis in (sweep.get("linked") or {}).values() for k in axis if k != "label"}
    strata = [c for c in runs.columns if (c.startswith("case_") or c == "case") and c != tcol]
    grid = [k for k in sweep if k not in ("cases", "linked") and k not in by_factor and k in runs]
    strata += [c for c in grid if runs[c].nunique(dropna=False) > 1]
    return tcol, baseline, strata


def _labels(cases: list) -> list[str]:
    from ..core.config import _leaf, _short
    return [c.get("label") or ", ".join(f"{_leaf(k)}={_short(v)}" for k, v in c.items() if k != "label")
            for c in cases]


def _keys(cases: list) -> set[str]:
    return {k for c in cases for k in c if k != "label"}


def _strata(runs: pd.DataFrame, cols: list[str]):
    """(stratum name, its rows) in order of appearance."""
    if not cols:
        yield "", runs
        return
    keys = runs[cols].astype(str).agg(" | ".join, axis=1)
    for k in dict.fromkeys(keys):
        yield k, runs[keys == k]


# --- comparisons --------------------------------------------------------------------------

def comparisons(runs: pd.DataFrame, exp) -> pd.DataFrame:
    """One row per stratum x candidate x metric: the paired difference against the baseline
    (t interval and bootstrap interval of the mean difference, relative difference), Wilcoxon
    and t p-values Holm-adjusted over every row, outlier seeds, and the verdict."""
    tcol, base, strata = design(runs, exp)
    family, meta = {}, {}
    for sname, rows in _strata(runs, strata):
        for cand in dict.fromkeys(rows[tcol]):
            if cand == base:
                continue
            for m in METRICS:
                if m not in rows or rows[m].isna().all():
                    continue
                a, b, seeds = pairs(rows, tcol, cand, base, m)
                keep = ~(np.isnan(a) | np.isnan(b))
                if not keep.any():
                    continue
                key = f"{sname}\x00{cand}\x00{m}"
                family[key] = (a, b)
                meta[key] = (sname, cand, m, seeds[keep])
    if not family:
        return pd.DataFrame()
    res = compare_family(family, REPORT_SEED, n_resamples=N_RESAMPLES)
    out = []
    for key, c in res.items():
        sname, cand, m, seeds = meta[key]
        out.append({"stratum": sname, "candidate": cand, "baseline": base, "metric": m, "n": c.n,
                    "diff": c.diff, "boot": c.boot, "rel": c.rel, "p_t": c.p_t, "p_t_holm": c.p_t_holm,
                    "p_wilcoxon": c.p_wilcoxon, "p_wilcoxon_holm": c.p_wilcoxon_holm,
                    "outlier_seeds": [int(seeds[i]) for i in c.outliers if i < len(seeds)],
                    "verdict": c.verdict(basis="t")})
    return pd.DataFrame(out)


def _fmt_ci(iv, scale: float, fmt: str, signed: bool = True) -> str:
    if iv.n == 0 or iv.estimate != iv.estimate:
        return "—"
    f = (lambda x: ("+" if x >= 0 and signed else "") + fmt.format(x * scale))
    return f"{f(iv.estimate)} [{f(iv.lo)}, {f(iv.hi)}]"


def summary(runs: pd.DataFrame, exp) -> str:
    tcol, base, strata = design(runs, exp)
    comp = comparisons(runs, exp)
    n_seeds = runs.seed.nunique()
    parts = ["## The estimators compared", "",
             f"Treatment: `{tcol}` (baseline **{base}**); strata: "
             f"{', '.join(f'`{c}`' for c in strata) or 'none'}; {n_seeds} seeds per point. Every "
             "difference is candidate − baseline on the same seed (common random numbers), its mean "
             "with a 95% Student-t interval, the relative difference of means with a 95% bootstrap (BCa, "
             f"{N_RESAMPLES} resamples, pairs resampled together) interval. The verdict uses the t interval "
             f"and the paired t-test, Holm-corrected over all {len(comp)} comparisons of this report; with "
             "fewer than 3 seeds it says inconclusive. Lower is better for every metric here.", ""]
    if len(comp):
        counts = comp.verdict.value_counts()
        parts += ["Verdicts: " + ", ".join(f"{v}: {int(counts[v])}" for v in VERDICTS if v in counts) + ".", ""]
    for sname, rows in _strata(runs, strata):
        parts += [f"### {sname or 'all runs'}", "", _headline(rows, tcol), ""]
        warn = _bottleneck(rows)
        if warn:
            parts += [warn, ""]
        sub = comp[comp.stratum == sname] if len(comp) else comp
        if len(sub):
            parts += [_diff_table(sub), ""]
            regret = _oracle_gap(rows, tcol)
            if regret:
                parts += [regret, ""]
            flagged = sub[sub.outlier_seeds.map(len) > 0]
            if len(flagged):
                parts += ["Outlier runs (a seed whose paired difference is far from the others', robust z > 3.5): "
                          + "; ".join(f"{r.candidate} {METRICS[r.metric][0]}: seeds {r.outlier_seeds}"
                                      for r in flagged.itertuples()) + ".", ""]
    parts += [_verdicts(comp, base)]
    return "\n".join(parts) + "\n"


#: a stratum whose tasks spend more than this fraction of their latency before placement is flagged
BOTTLENECK_FRACTION = 0.25


def _bottleneck(rows: pd.DataFrame) -> str:
    """A warning when the tasks wait mostly to be placed (a saturated global scheduler or local
    decision): the estimators then differ in where tasks go, but the latency is that queue's."""
    if "placement_delay_mean_s" not in rows or not rows.placement_delay_mean_s.notna().any():
        return ""
    frac = float(rows.placement_delay_mean_s.mean() / rows.latency_mean_s.mean())
    if frac <= BOTTLENECK_FRACTION:
        return ""
    return (f"**Warning: {frac:.0%} of the mean latency is spent before placement** (submission -> "
            f"placement, {rows.placement_delay_mean_s.mean() * 1e3:.1f} ms): the global scheduler or "
            f"the local decision is saturated, so the estimators' differences are masked by that queue; "
            f"add `cluster.global_schedulers` (or lower the load) before reading this stratum.")


def _headline(rows: pd.DataFrame, tcol: str) -> str:
    shown = {**{k: v for k, v in METRICS.items() if k in rows and rows[k].notna().any()},
             **{k: v for k, v in DESCRIBE.items() if k in rows and rows[k].notna().any()}}
    out = []
    for cand, by in rows.groupby(tcol, sort=False):
        row = {"estimator": cand}
        for m, (title, scale, fmt) in shown.items():
            row[title] = fmt.format(by[m].mean() * scale)
        out.append(row)
    return "Means over seeds:\n\n" + pd.DataFrame(out).to_markdown(index=False)


def _diff_table(sub: pd.DataFrame) -> str:
    out = []
    for r in sub.itertuples():
        title, scale, fmt = METRICS[r.metric]
        out.append({"candidate": r.candidate, "metric": title,
                    "difference [95% CI]": _fmt_ci(r.diff, scale, fmt),
                    "relative [95% CI]": (f"{r.rel.estimate:+.1%} [{r.rel.lo:+.1%}, {r.rel.hi:+.1%}]"
                                          if r.rel.estimate == r.rel.estimate else "—"),
                    "p (Holm)": f"{r.p_t_holm:.3g}" if r.p_t_holm == r.p_t_holm else "—",
                    "verdict": f"**{r.verdict}**" if r.verdict in ("better", "worse") else r.verdict})
    return (f"Against **{sub.baseline.iloc[0]}** (paired per seed):\n\n"
            + pd.DataFrame(out).to_markdown(index=False))


def _oracle_gap(rows: pd.DataFrame, tcol: str) -> str:
    """Decision regret: each estimator's p99 and mean latency above the Oracle's, paired."""
    oracle = next((c for c in dict.fromkeys(rows[tcol]) if "oracle" in str(c).lower()), None)
    if oracle is None:
        return ""
    out = []
    for cand in dict.fromkeys(rows[tcol]):
        if cand == oracle:
            continue
        row = {"estimator": cand}
        for m in ("latency_mean_s", "latency_p99_s"):
            a, b, _ = pairs(rows, tcol, cand, oracle, m)
            keep = ~(np.isnan(a) | np.isnan(b))
            rel = a[keep] / b[keep] - 1 if keep.any() else np.array([])
            iv = mean_ci(rel)
            row[f"{METRICS[m][0].split(' (')[0]} above {oracle}"] = (
                f"{iv.estimate:+.1%} [{iv.lo:+.1%}, {iv.hi:+.1%}]" if len(rel) else "—")
        out.append(row)
    return ("Regret against the Oracle (its estimates are the true means; relative gap per seed, "
            "t interval):\n\n" + pd.DataFrame(out).to_markdown(index=False))


def _verdicts(comp: pd.DataFrame, base: str) -> str:
    """The written answer: per stratum, what beat or lost to the baseline, no stronger than the
    intervals allow."""
    if not len(comp):
        return "### Verdict\n\nNothing to compare: the treatment has one case.\n"
    lines = ["### Verdict", ""]
    for sname, sub in comp.groupby("stratum", sort=False):
        better = sorted({r.candidate for r in sub.itertuples() if r.verdict == "better"})
        worse = sorted({r.candidate for r in sub.itertuples() if r.verdict == "worse"})
        what = []
        if better:
            what.append("better than " + base + " on some metric: " + ", ".join(better))
        if worse:
            what.append("worse on some metric: " + ", ".join(worse))
        if not what:
            what.append(f"no candidate differs from {base} significantly (after Holm correction)")
        lines.append(f"- **{sname or 'all runs'}**: " + "; ".join(what) + ".")
    return "\n".join(lines) + "\n"


# --- figures ------------------------------------------------------------------------------

def figures(runs: pd.DataFrame, exp, out: Path) -> list[str]:
    from .studies import _mpl
    plt = _mpl()
    tcol, base, strata = design(runs, exp)
    names = []
    comp = comparisons(runs, exp)
    strata_list = list(_strata(runs, strata))
    # 1. difference against the baseline, p99 and mean, with error bars, one panel per stratum
    if len(comp):
        fig, axes = plt.subplots(1, len(strata_list), figsize=(4.8 * len(strata_list), 0.45 * comp.candidate.nunique() + 2.2),
                                 squeeze=False, sharey=True)
        for ax, (sname, _) in zip(axes[0], strata_list):
            sub = comp[(comp.stratum == sname) & comp.metric.isin(["latency_p99_s", "latency_mean_s"])]
            cands = list(dict.fromkeys(sub.candidate))
            for k, (m, color) in enumerate((("latency_mean_s", "#4878a8"), ("latency_p99_s", "#d1603d"))):
                r = sub[sub.metric == m].set_index("candidate").reindex(cands)
                est = np.array([x.estimate if isinstance(x, object) and hasattr(x, "estimate") else np.nan for x in r.rel])
                lo = np.array([x.lo if hasattr(x, "lo") else np.nan for x in r.rel])
                hi = np.array([x.hi if hasattr(x, "hi") else np.nan for x in r.rel])
                y = np.arange(len(cands)) + (k - 0.5) * 0.3
                ax.errorbar(est * 100, y, xerr=[(est - lo) * 100, (hi - est) * 100], fmt="o", color=color,
                            label=METRICS[m][0].split(" (")[0], capsize=3)
            ax.axvline(0, color="k", lw=0.8)
            ax.set_yticks(np.arange(len(cands)), cands, fontsize=8)
            ax.set_title(sname or "all runs", fontsize=9)
            ax.set_xlabel(f"vs {base} (%, 95% bootstrap CI)")
            ax.grid(axis="x", alpha=0.3)
        axes[0][0].invert_yaxis()
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "difference_vs_baseline.png", dpi=110)
        plt.close(fig)
        names.append("difference_vs_baseline.png")
    # 2. latency CDFs per estimator, one panel per stratum (from timeseries: quantiles per run)
    ts_path = out / "timeseries.csv"
    if ts_path.exists():
        ts = pd.read_csv(ts_path)
        lab = runs.set_index(["point", "seed"])
        fig, axes = plt.subplots(1, len(strata_list), figsize=(4.8 * len(strata_list), 3.6), squeeze=False)
        for ax, (sname, rows) in zip(axes[0], strata_list):
            for cand, by in rows.groupby(tcol, sort=False):
                q = ts[ts.point.isin(by.point.unique())].groupby("q").latency_s.mean()
                ax.plot(q.to_numpy() * 1e3, q.index, label=str(cand), lw=1.8 if cand == base else 1.0)
            ax.set_xscale("log")
            ax.set_xlabel("latency (ms, log)")
            ax.set_title(sname or "all runs", fontsize=9)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("fraction of tasks")
        axes[0][0].legend(fontsize=7)
        del lab
        fig.tight_layout()
        fig.savefig(out / "latency_cdf.png", dpi=110)
        plt.close(fig)
        names.append("latency_cdf.png")
    # 3. sensitivity: p99 along each swept grid axis, a line per estimator
    grid_cols = [c for c in strata if not c.startswith("case")]
    for col in grid_cols:
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for cand, by in runs.groupby(tcol, sort=False):
            g = by.groupby(col).latency_p99_s.agg(["mean", "std"])
            ax.errorbar(g.index.astype(float) if _numeric(g.index) else range(len(g)), g["mean"] * 1e3,
                        yerr=g["std"].fillna(0) * 1e3, label=str(cand), capsize=2, marker="o", ms=3)
        ax.set_xlabel(col)
        ax.set_ylabel("latency p99 (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"sensitivity_{col.replace('.', '_')}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def _numeric(index) -> bool:
    try:
        index.astype(float)
        return True
    except (TypeError, ValueError):
        return False
