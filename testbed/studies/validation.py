"""The ``validation`` study: the same workloads on both engines, compared per seed.

Each sweep point of a validation config is one workload at the real runtime's scale (the
config's cluster, jobs and durations are what this machine runs: ``check_config`` refuses a
point the real engine would scale down, so both engines see the same cluster and the same
jobs). The study expands every point into three runs per seed::

    <workload> · real                  run.engine = "real"
    <workload> · sim                   run.engine = "sim", the config's calibration
    <workload> · sim, uncalibrated     run.engine = "sim", cluster.calibration = "" (schema defaults)

The workload generator gives job j the same draws in both engines (common random numbers), so
the simulated and real values of a seed form a pair: the table reports, per workload and
metric, the real and simulated means with their 95% intervals over seeds and the paired
relative error (sim − real) / real with its interval, against the issue's goal (within 10% on
throughput and mean latency, 15% on the rest).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import ConfigError
from .experiment import VARIANT_SEP as SEP
from .stats import mean_ci, paired_rel_error_ci

#: (suffix of the point's label, overrides applied to the point's raw config)
VARIANTS: tuple[tuple[str, dict], ...] = (
    ("real", {"run.engine": "real"}),
    ("sim", {"run.engine": "sim"}),
    ("sim, uncalibrated", {"run.engine": "sim", "cluster.calibration": ""}),
)

#: metric -> (title, scale to the shown unit, format, goal on |relative error|)
METRICS: dict[str, tuple[str, float, str, float]] = {
    "throughput_per_s": ("throughput (tasks/s)", 1.0, "{:,.0f}", 0.10),
    "latency_mean_s": ("latency mean (ms)", 1e3, "{:.2f}", 0.10),
    "latency_p50_s": ("latency p50 (ms)", 1e3, "{:.2f}", 0.15),
    "latency_p99_s": ("latency p99 (ms)", 1e3, "{:.2f}", 0.15),
    "queue_delay_mean_s": ("queue delay mean (ms)", 1e3, "{:.3f}", 0.15),
    "spilled_fraction": ("spilled", 1.0, "{:.1%}", 0.15),
    "bytes_transferred": ("bytes transferred (MB)", 1e-6, "{:.2f}", 0.15),
    "makespan_s": ("makespan (s)", 1.0, "{:.3f}", 0.15),
}
#: metric -> an absolute difference (in the metric's own unit) below which the engines agree
#: whatever the relative error: the runtime moves a few bytes per fetch of a 0-byte output
#: (the pickled None), which the simulator counts as nothing
ABS_AGREE: dict[str, float] = {"bytes_transferred": 1e5}
#: latency quantiles kept per run for the distribution plot
QUANTILES = np.round(np.linspace(0.01, 0.99, 99), 2)


def split_label(label: str) -> tuple[str, str]:
    """``"<workload> · <variant>"`` -> (workload, variant)."""
    head, _, variant = label.rpartition(SEP)
    return head, variant


def _by_workload(df: pd.DataFrame):
    """(workload, {variant: its rows}) per workload of ``df``'s labels, in order of appearance."""
    parts = [split_label(lbl) for lbl in df["label"]]
    workload = np.array([w for w, _ in parts], dtype=object)
    variant = np.array([v for _, v in parts], dtype=object)
    for wl in dict.fromkeys(workload):
        mine = workload == wl
        sub, var = df[mine], variant[mine]
        yield wl, {v: sub[var == v] for v in dict.fromkeys(var)}


def check_config(cfg: dict, label: str) -> None:
    """A validation point must run unscaled on the real engine: the simulator then models
    exactly the cluster and jobs that ran."""
    c, r, w = cfg["cluster"], cfg["run"], cfg["workload"]
    nodes = sum(g["count"] for g in c["node_groups"]) if c["node_groups"] else c["nodes"]
    where = f" (validation point [{label}])" if label else " (validation)"
    if nodes > r["real_nodes"]:
        raise ConfigError(f"the cluster has {nodes} nodes but the real engine runs {r['real_nodes']}: "
                          f"give both engines the same cluster{where}", key="run.real_nodes")
    cpus = [g["cpus"] for g in c["node_groups"]] if c["node_groups"] else [c["cpus_per_node"]]
    if max(cpus) > r["real_cpus_per_node"]:
        raise ConfigError(f"nodes have up to {max(cpus):g} CPUs but the real engine gives at most "
                          f"{r['real_cpus_per_node']:g}{where}", key="run.real_cpus_per_node")
    if w["jobs"] > r["real_max_jobs"]:
        raise ConfigError(f"{w['jobs']} jobs but the real engine runs at most {r['real_max_jobs']}{where}",
                          key="run.real_max_jobs")
    if r["real_time_scale"] != 1.0:
        raise ConfigError(f"must be 1 for a validation (both engines run the drawn durations){where}",
                          key="run.real_time_scale")


def latency_quantiles(trace: pd.DataFrame | None) -> pd.DataFrame | None:
    """One row per quantile of the run's finished-task latency (submitted -> finished), seconds."""
    if trace is None:
        return None
    done = trace[trace.state == "finished"]
    if not len(done):
        return None
    lat = (done.finished_s - done.submitted_s).to_numpy()
    return pd.DataFrame({"q": QUANTILES, "latency_s": np.quantile(lat, QUANTILES)})


def decision_metrics(trace: pd.DataFrame | None) -> dict:
    """Per run, when the scheduling decision is made: the mean time from submission to
    placement (``placed_s - submitted_s``) of finished tasks, and of those whose job has more
    than one task (the ones that may wait for inputs). Both engines write ``placed_s`` as "a
    scheduler decided where it runs"; if one decides before a task's inputs exist and the other
    after, these differ by the input wait, and so does every metric measured from placement."""
    if trace is None:
        return {}
    done = trace[trace.state == "finished"]
    if not len(done):
        return {}
    wait = done.placed_s - done.submitted_s
    multi = done.job_id.map(done.job_id.value_counts()) > 1
    return {"decision_wait_mean_s": float(wait.mean()),
            "decision_wait_dag_mean_s": float(wait[multi].mean()) if multi.any() else float("nan")}


def driver_turnaround(trace: pd.DataFrame | None, cfg: dict) -> dict:
    """Closed loop only: per driver (its node), the time from the k-th end of one of its jobs to
    its (k + in_flight)-th submission — what the driver spends between seeing a job done and
    submitting the next (its get of the sinks, the notifications, the submission itself)."""
    w = cfg["workload"]
    if trace is None or w["arrival"] != "closed" or not len(trace):
        return {}
    jobs = trace.groupby("job_id").agg(s=("submitted_s", "min"), e=("finished_s", "max"), d=("submitter", "first"))
    k = int(w["in_flight"])
    gaps = []
    for _, g in jobs.groupby("d"):
        s, e = np.sort(g.s.to_numpy()), np.sort(g.e.to_numpy())
        if len(s) > k:
            gaps.append(s[k:] - e[:-k])
    if not gaps:
        return {}
    gaps = np.concatenate(gaps)
    return {"driver_turnaround_mean_s": float(gaps.mean())}


def _engine_gap_table(runs: pd.DataFrame, column: str, abs_s: float, title: str, text: str) -> str:
    """A summary section: ``column``'s mean (seconds) per workload on the real runtime and the
    calibrated simulator, flagging the workloads where they differ by more than ``abs_s`` and 2x;
    "" when no run has the column."""
    if column not in runs:
        return ""
    rows = []
    empty = runs.iloc[:0]
    for wl, by in _by_workload(runs):
        r = by.get("real", empty)[column].mean()
        s = by.get("sim", empty)[column].mean()
        if np.isnan(r) and np.isnan(s):
            continue
        differ = abs(r - s) > abs_s and max(r, s) > 2 * max(min(r, s), 1e-9)
        rows.append({"workload": wl, "real (ms)": f"{r * 1e3:.2f}", "sim (ms)": f"{s * 1e3:.2f}",
                     "": "**differ**" if differ else ""})
    if not rows:
        return ""
    return "\n".join([f"### {title}", "", text, "", pd.DataFrame(rows).to_markdown(index=False), ""]) + "\n"


def turnaround_diagnostics(runs: pd.DataFrame) -> str:
    """A table of the closed-loop drivers' turnaround per workload in both engines, flagging
    those that differ by more than 2 ms and 2x: a closed loop's throughput is jobs in flight
    over (job latency + turnaround), so such a gap is a throughput and makespan error."""
    return _engine_gap_table(
        runs, "driver_turnaround_mean_s", 0.002, "Closed-loop driver turnaround",
        "Mean time from a job's end to its driver's next submission (closed-loop workloads). The "
        "simulated driver sees a result when its sinks' object-table writes are acknowledged; "
        "the runtime's driver also fetches the sinks to its node and waits for the runtime's "
        "wait / get notifications. A flagged workload's throughput and makespan differ by about "
        "that gap over its job cycle. Next step for a flagged one: model the fetch of a job's sinks "
        "to its driver's node (Simulator._job_done) and calibrate the rest as a driver turnaround "
        "(testbed calibrate).")


def decision_diagnostics(runs: pd.DataFrame) -> str:
    """A table of the engines' mean submission -> placement times per workload, flagging the
    workloads where they differ by more than 2x and 5 ms (different decision moments)."""
    return _engine_gap_table(
        runs, "decision_wait_dag_mean_s", 0.005, "When tasks with inputs are placed",
        "Mean time from submission to placement of the tasks of multi-task jobs (they may wait "
        "for inputs). Queueing delay is measured from placement, and placement sees where the "
        "inputs are, so a workload flagged here compares engines that decide at different moments "
        "(both follow scheduler.decide_at, testbed.policy.base.decides_now: a flag means one of "
        "them does not): its queueing delay, spilled fraction and bytes transferred differ for "
        "that reason.")


def compare_table(runs: pd.DataFrame, variant: str) -> pd.DataFrame:
    """Per workload and metric: real and ``variant`` means (95% CI over seeds), the paired
    relative error with its CI, the goal, and whether the mean error is within it (``within``)."""
    rows = []
    empty = runs.iloc[:0]
    for wl, by in _by_workload(runs):
        real = by.get("real", empty).set_index("seed")
        sim = by.get(variant, empty).set_index("seed")
        seeds = sorted(set(real.index) & set(sim.index))
        if not seeds:
            continue
        for m, (title, scale, fmt, goal) in METRICS.items():
            if m not in runs:
                continue
            r, s = real.loc[seeds, m].astype(float), sim.loc[seeds, m].astype(float)
            if r.isna().all() and s.isna().all():
                continue
            if (r.fillna(0) == 0).all() and (s.fillna(0) == 0).all():
                err = mean_ci([0.0] * len(seeds))     # both zero on every seed (no transfers): agreement
            else:
                err = paired_rel_error_ci(s.to_numpy(), r.to_numpy())
            floor = ABS_AGREE.get(m)
            tiny = floor is not None and bool((abs(s.fillna(0) - r.fillna(0)) <= floor).all())
            within = tiny or bool(np.isfinite(err.mean) and abs(err.mean) <= goal)
            rows.append({"workload": wl, "metric": m, "title": title, "seeds": len(seeds),
                         "real": mean_ci(r), "sim": mean_ci(s), "rel_error": err, "goal": goal,
                         "scale": scale, "fmt": fmt, "within": within,
                         "verdict": verdict(err, goal, within, tiny)})
    return pd.DataFrame(rows)


def verdict(err, goal: float, within: bool, tiny: bool = False) -> str:
    """How strongly the seeds support the row: "ok" / "miss" when the 95% interval of the
    paired error lies inside / outside the goal band, "ok?" / "miss?" when only the mean does
    (the interval crosses the band's edge: more seeds would decide), "ok (~0)" when the two
    engines differ by less than the metric's ``ABS_AGREE``."""
    if tiny:
        return "ok (~0)"
    lo, hi = err.lo, err.hi
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "ok?" if within else "miss?"
    if -goal <= lo and hi <= goal:
        return "ok"
    if hi < -goal or lo > goal:
        return "miss"
    return "ok?" if within else "miss?"


def _markdown(tab: pd.DataFrame, what: str) -> str:
    if not len(tab):
        return f"No workload has both a real and a {what} run.\n"
    out = []
    for _, r in tab.iterrows():
        fmt, scale = r["fmt"], r["scale"]
        e = r["rel_error"]
        out.append({"workload": r["workload"], "metric": r["title"],
                    "real": r["real"].fmt(scale, fmt), what: r["sim"].fmt(scale, fmt),
                    "rel. error [95% CI]": f"{e.mean:+.1%} [{e.lo:+.1%}, {e.hi:+.1%}]" if np.isfinite(e.mean) else "—",
                    "goal": f"±{r['goal']:.0%}",
                    "": f"**{r['verdict']}**" if r["verdict"].startswith("miss") else r["verdict"]})
    return pd.DataFrame(out).to_markdown(index=False) + "\n"


#: the compact table's column per metric
SHORT = {"throughput_per_s": "thr.", "latency_mean_s": "mean", "latency_p50_s": "p50", "latency_p99_s": "p99",
         "queue_delay_mean_s": "queue", "spilled_fraction": "spilled", "bytes_transferred": "bytes",
         "makespan_s": "makespan"}


def glance(runs: pd.DataFrame) -> str:
    """One row per workload, one column per metric: the calibrated simulator's mean relative
    error (the uncalibrated one's in brackets), ``*`` where the mean misses the goal."""
    cal, unc = compare_table(runs, "sim"), compare_table(runs, "sim, uncalibrated")
    if not len(cal):
        return ""

    def cell(tab, wl, m):
        r = tab[(tab.workload == wl) & (tab.metric == m)] if len(tab) else tab
        if not len(r):
            return "—"
        r = r.iloc[0]
        e = r["rel_error"].estimate
        return f"{e:+.0%}{'' if r['within'] else '*'}" if e == e else "—"

    rows = []
    for wl in dict.fromkeys(cal.workload):
        row = {"workload": wl}
        for m, short in SHORT.items():
            if m in set(cal.metric):
                row[short] = f"{cell(cal, wl, m)} ({cell(unc, wl, m)})"
        rows.append(row)
    return ("### At a glance\n\nRelative error of the calibrated simulator, the uncalibrated one's in brackets; "
            "`*` misses the goal.\n\n" + pd.DataFrame(rows).to_markdown(index=False) + "\n")


def summary(runs: pd.DataFrame, exp) -> str:
    parts = ["## Simulator against the real runtime (paired per seed)", "",
             "Each workload ran on the real runtime and on the simulator at the same scale, with the "
             "same jobs and draws (common random numbers). Values are means over seeds with 95% "
             "t-intervals; the relative error (sim − real) / real is computed per seed, then averaged. "
             "Goal: |error| ≤ 10% on throughput and mean latency, ≤ 15% on the rest. A pair is within "
             "the goal when its mean error is; the last column says how firmly: **ok** / **miss** when "
             "the whole 95% interval of the error lies inside / outside the goal, ok? / miss? when "
             "only its mean does (the interval crosses the goal: more seeds would decide), ok (~0) "
             "when the engines differ by less than a floor (bytes: 0.1 MB a run, the pickled empty "
             "results the runtime moves).", ""]
    for variant, title in (("sim", "calibrated simulator"), ("sim, uncalibrated", "uncalibrated simulator")):
        tab = compare_table(runs, variant)
        n_ok = int(tab["within"].sum()) if len(tab) else 0
        firm_ok = int(tab["verdict"].isin(["ok", "ok (~0)"]).sum()) if len(tab) else 0
        firm_miss = int((tab["verdict"] == "miss").sum()) if len(tab) else 0
        parts += [f"### The {title}", "",
                  f"{n_ok} of {len(tab)} workload × metric pairs within the goal ({firm_ok} firmly: "
                  f"the whole interval inside); {firm_miss} firm misses (the whole interval outside).", "",
                  _markdown(tab, variant)]
    parts.append(glance(runs))
    parts.append(decision_diagnostics(runs))
    parts.append(turnaround_diagnostics(runs))
    return "\n".join(parts)


def figures(runs: pd.DataFrame, exp, out: Path) -> list[str]:
    path = Path(out) / "timeseries.csv"
    if not path.exists():
        return []
    ts = pd.read_csv(path)
    if not len(ts):
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    workloads = list(_by_workload(ts))
    cols = min(3, len(workloads))
    rows = (len(workloads) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    styles = {"real": ("k", "-"), "sim": ("#4878a8", "--"), "sim, uncalibrated": ("#e07b39", ":")}
    for ax, (wl, by) in zip(axes.flat, workloads):
        for variant, (color, ls) in styles.items():
            v = by.get(variant)
            if v is None:
                continue
            g = v.groupby("q")["latency_s"].mean()     # the seeds' quantile curves, averaged
            ax.plot(g.values * 1e3, g.index, color=color, ls=ls, label=variant)
        ax.set_xscale("log")
        ax.set_title(wl, fontsize=9)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("fraction of tasks")
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(workloads):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle("Latency distribution: real runtime vs simulator")
    fig.tight_layout()
    fig.savefig(Path(out) / "latency_cdf.png", dpi=110)
    plt.close(fig)
    return ["latency_cdf.png"]
