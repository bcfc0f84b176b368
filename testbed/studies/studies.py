"""Studies: how an experiment's runs are tabulated and plotted.

A study is chosen by ``run.study`` in the config. Each has ``summary(runs, exp)`` (a
markdown body) and ``figures(runs, exp, out_dir)`` (PNG file names written). ``runs`` is
``runs.csv``: one row per sweep point x seed.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import ConfigError
from . import estimator_study, theory, validation
from .stats import mean_ci, paired_rel_error_ci, rel_error

#: metric -> (column title, scale, format)
HEADLINE = {
    "makespan_s": ("makespan (s)", 1.0, "{:.3f}"),
    "throughput_per_s": ("throughput (tasks/s)", 1.0, "{:,.0f}"),
    "latency_p50_s": ("latency p50 (ms)", 1e3, "{:.2f}"),
    "latency_p99_s": ("latency p99 (ms)", 1e3, "{:.2f}"),
    "queue_delay_mean_s": ("queue delay mean (ms)", 1e3, "{:.2f}"),
    "spilled_fraction": ("spilled", 1.0, "{:.1%}"),
    "pred_mae_s": ("wait prediction MAE (ms)", 1e3, "{:.2f}"),
    "pred_bias_s": ("wait prediction bias (ms)", 1e3, "{:+.2f}"),
    "pred_rel_error": ("prediction rel. error", 1.0, "{:.2f}"),
}


def _mpl():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def bar_panels(df: pd.DataFrame, metrics: list[str], out: Path, name: str, title: str,
               log: bool = False) -> str:
    """One horizontal bar chart per metric (mean +- std over seeds), a row per sweep point."""
    plt = _mpl()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.7 * len(metrics), max(3.0, 0.38 * len(df) + 1.5)),
                             sharey=True, squeeze=False)
    y = np.arange(len(df))
    for ax, m in zip(axes[0], metrics):
        label, scale, _ = HEADLINE[m]
        ax.barh(y, df[m].fillna(0) * scale, xerr=df[m + "_std"].fillna(0) * scale, color="#4878a8")
        if log and (df[m] > 0).any():
            ax.set_xscale("log")      # one bad policy must not flatten the others
            label += ", log scale"
        ax.set_xlabel(label)
        ax.grid(axis="x", which="both", alpha=0.3)
    axes[0][0].set_yticks(y, [lbl or "(base)" for lbl in df["label"]], fontsize=8)
    axes[0][0].invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def per_point(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean (and std over seeds) of ``metrics`` per sweep point, in point order."""
    g = runs.groupby("point", sort=True)
    mean = g[metrics].mean()
    std = g[metrics].std(ddof=0).add_suffix("_std")
    out = pd.concat([g["label"].first(), g["seed"].count().rename("seeds"), mean, std], axis=1)
    return out.reset_index()


def table(df: pd.DataFrame, metrics: list[str], first: str = "label", first_title: str = "point") -> str:
    rows = []
    for _, r in df.iterrows():
        row = {first_title: r[first] if r[first] != "" else "(base)"}
        for m in metrics:
            title, scale, fmt = HEADLINE.get(m, (m, 1.0, "{:.4g}"))
            v = r[m]
            row[title] = "—" if pd.isna(v) else fmt.format(v * scale)
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False)


class Study:
    name = ""
    description = ""
    #: the study needs each run's Trace (it computes timeseries from it)
    wants_trace = False

    def timeseries(self, trace: pd.DataFrame | None, info: dict, cfg: dict) -> pd.DataFrame | None:
        """Rows of timeseries.csv for one run (computed where the run ran; ``trace`` is None
        when ``keeps_rows`` said no)."""
        return None

    def keeps_rows(self, cfg: dict) -> bool:
        """Does the run of ``cfg`` keep its Trace rows for ``timeseries`` / ``run_metrics``?"""
        return self.wants_trace

    def run_metrics(self, trace: pd.DataFrame | None, info: dict, cfg: dict) -> dict:
        """Extra columns of the run's runs.csv row, from its Trace, info and config."""
        return {}

    #: each sweep point runs once per variant: (label suffix, {dotted key: value} applied to the
    #: point's config); () = the point as it is
    variants: tuple[tuple[str, dict], ...] = ()

    def check_config(self, cfg: dict, label: str) -> None:
        """Refuse (ConfigError) a resolved point this study cannot make sense of."""
    metrics = ["makespan_s", "throughput_per_s", "latency_p50_s", "latency_p99_s", "spilled_fraction"]

    def summary(self, runs: pd.DataFrame, exp) -> str:
        df = per_point(runs, self.metrics)
        return "## Results (mean over seeds)\n\n" + table(df, self.metrics) + "\n"

    def figures(self, runs: pd.DataFrame, exp, out: Path) -> list[str]:
        df = per_point(runs, self.metrics)
        return [bar_panels(df, ["throughput_per_s", "latency_p99_s"], out, "compare.png", exp.name)]


class Compare(Study):
    name = "compare"
    description = "headline metrics per sweep point (a table and bar charts)"


class Estimators(Study):
    name = "estimators"
    description = "estimator shoot-out: makespan, latency and wait-prediction error per estimator/policy"
    metrics = ["makespan_s", "latency_p50_s", "latency_p99_s", "pred_mae_s", "pred_bias_s",
               "pred_rel_error", "spilled_fraction"]

    def summary(self, runs, exp) -> str:
        df = per_point(runs, self.metrics)
        best = df.loc[df["pred_mae_s"].idxmin(), "label"] if df["pred_mae_s"].notna().any() else None
        fastest = df.loc[df["latency_p99_s"].idxmin(), "label"]
        text = ["## Estimators compared (mean over seeds)", "",
                table(df, self.metrics, first_title="scheduler / estimator"), "",
                "The wait prediction is what the placement policy predicted for the node it chose "
                "(queue x estimated task time / slots + remote input bytes / estimated bandwidth), "
                "against the wait the task then had (placed -> started); bias > 0 means it "
                "over-predicted. Only tasks the global scheduler placed have a prediction. Makespan "
                "is the last finish: with heavy-tailed durations it is decided by where the longest "
                "tasks landed, so it varies from seed to seed.", ""]
        if best is not None:
            text.append(f"Lowest prediction error: **{best}**. Lowest p99 latency: **{fastest}**.")
        return "\n".join(text) + "\n"

    def figures(self, runs, exp, out) -> list[str]:
        df = per_point(runs, self.metrics)
        return [bar_panels(df, ["latency_p50_s", "latency_p99_s", "pred_mae_s"], out, "estimators.png",
                           f"{exp.name}: estimators and placement policies", log=True)]


class Scalability(Study):
    name = "scalability"
    description = "throughput against cluster size, with the paper's Fig. 8b points"
    metrics = ["throughput_per_s", "makespan_s", "latency_p50_s", "latency_p99_s"]
    #: Ray paper, Fig. 8b (§5.1): ">1M tasks/s at 60 nodes", ">1.8M at 100" (100M tasks in 54 s)
    PAPER = {60: 1.0e6, 100: 1.8e6}

    def _series(self, runs):
        keys = [c for c in runs.columns if c.startswith(("cluster.gcs_shards",)) and c in runs]
        group = keys[0] if keys else None
        return group

    def summary(self, runs, exp) -> str:
        group = self._series(runs)
        cols = ["nodes"] + ([group] if group else [])
        g = runs.groupby(cols, sort=True)["throughput_per_s"].agg(["mean", "std", "count"]).reset_index()
        rows = []
        for _, r in g.iterrows():
            paper = self.PAPER.get(int(r["nodes"]))
            row = {"nodes": int(r["nodes"])}
            if group:
                row[group] = r[group]
            row["ours (M tasks/s)"] = f"{r['mean'] / 1e6:.3f}"
            row["per node (k tasks/s)"] = f"{r['mean'] / r['nodes'] / 1e3:.1f}"
            row["paper (M tasks/s)"] = f">{paper / 1e6:.1f}" if paper else "—"
            rows.append(row)
        return ("## Throughput against cluster size (paper Fig. 8b)\n\n" + pd.DataFrame(rows).to_markdown(index=False)
                + "\n\nPaper values are the lower bounds its text states (\">1M tasks/s at 60 nodes\", "
                  "\">1.8M at 100\"; 100M tasks in 54 s). Our ceiling comes from the simulator parameters named "
                  "in the config (local scheduler and GCS service times).\n")

    def figures(self, runs, exp, out) -> list[str]:
        plt = _mpl()
        group = self._series(runs)
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        series = [(None, runs)] if not group else list(runs.groupby(group, sort=True))
        for key, sub in series:
            g = sub.groupby("nodes")["throughput_per_s"].agg(["mean", "std"]).reset_index()
            lbl = "testbed (simulated)" + (f", {group.split('.')[-1]}={key}" if group else "")
            ax.errorbar(g["nodes"], g["mean"] / 1e6, yerr=g["std"].fillna(0) / 1e6, marker="o", label=lbl)
        px = sorted(self.PAPER)
        ax.plot(px, [self.PAPER[x] / 1e6 for x in px], "r^", markersize=10, label="Ray paper, Fig. 8b (reported)")
        ax.set_xlabel("nodes")
        ax.set_ylabel("throughput (million tasks/s)")
        ax.set_title("Fig. 8b: scalability with empty tasks")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "fig8b.png", dpi=110)
        plt.close(fig)
        return ["fig8b.png"]


class Recovery(Study):
    """Throughput over time while nodes fail and come back (the paper's Fig. 11a)."""
    name = "recovery"
    description = "throughput over time, original vs re-executed tasks, while nodes fail and return (Fig. 11a)"
    wants_trace = True
    metrics = ["throughput_per_s", "makespan_s", "latency_p50_s", "latency_p99_s"]

    def timeseries(self, trace, info, cfg):
        if trace is None:
            return None
        scale = _time_scale(cfg)
        width = cfg["run"]["timeseries_bin_s"] * scale
        done = trace[trace.state == "finished"]
        if not len(done):
            return None
        end = float(done.finished_s.max())
        edges = np.arange(0.0, end + width, width)
        orig = np.histogram(done.finished_s[done.attempt == 1], edges)[0]
        redo = np.histogram(done.finished_s[done.attempt > 1], edges)[0]
        lost = np.histogram(trace.finished_s[trace.state == "lost"].dropna(), edges)[0]
        t = edges[:-1] / scale                   # back in the config's (simulated) seconds
        alive = np.array([_nodes_alive(cfg, x) for x in t])
        return pd.DataFrame({"t_s": t, "original_per_s": orig / width, "reexecuted_per_s": redo / width,
                             "lost": lost, "nodes_alive": alive})

    def _series(self, out):
        path = Path(out) / "timeseries.csv"
        return pd.read_csv(path) if path.exists() else None

    def summary(self, runs, exp) -> str:
        text = super().summary(runs, exp)
        f = exp.resolved["faults"]
        events = sorted([(x["at_s"], f"node {x['node']} fails") for x in f["node_failures"]] +
                        [(x["at_s"], "a node is added") for x in f["node_additions"]])
        text += ("\n## Events\n\n" + "\n".join(f"- {t:g} s: {what}" for t, what in events) + "\n"
                 if events else "")
        text += ("\nThe paper (Fig. 11a) shows throughput dipping when nodes are removed at 25, 50 and 100 s, "
                 "re-executed tasks filling the gap, and per-node throughput staying stable; it gives no numbers. "
                 "`timeseries.csv` has our per-bin figures.\n")
        return text

    def figures(self, runs, exp, out) -> list[str]:
        ts = self._series(out)
        if ts is None:
            return []
        plt = _mpl()
        names = []
        for (point, label), sub in ts.groupby(["point", "label"], sort=True, dropna=False):
            g = sub.groupby("t_s")[["original_per_s", "reexecuted_per_s", "nodes_alive"]].mean().reset_index()
            fig, ax = plt.subplots(figsize=(8, 4.2))
            ax.stackplot(g.t_s, g.original_per_s, g.reexecuted_per_s, labels=["original tasks", "re-executed tasks"],
                         colors=["#4878a8", "#e07b39"], step="post")
            ax.set_xlabel("time (s)")
            ax.set_ylabel("throughput (tasks/s)")
            ax2 = ax.twinx()
            ax2.step(g.t_s, g.nodes_alive, "k:", where="post", label="nodes alive")
            ax2.set_ylabel("nodes alive")
            ax2.set_ylim(0, max(1, g.nodes_alive.max()) * 1.3)
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax2.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper right")
            engine = exp.resolved["run"]["engine"]
            ax.set_title(f"Fig. 11a: task reconstruction ({engine})" + (f" — {label}" if isinstance(label, str) and label else ""))
            fig.tight_layout()
            name = f"fig11a_{point}.png" if ts.point.nunique() > 1 else "fig11a.png"
            fig.savefig(Path(out) / name, dpi=110)
            plt.close(fig)
            names.append(name)
        return names


def _time_scale(cfg: dict) -> float:
    """Trace seconds per config second (the real engine runs scaled by real_time_scale)."""
    return cfg["run"]["real_time_scale"] if cfg["run"]["engine"] == "real" else 1.0


def _nodes_alive(cfg: dict, t: float) -> int:
    """Nodes alive at time t by the configured schedule (random kills are not counted)."""
    c, f = cfg["cluster"], cfg["faults"]
    n = sum(g["count"] for g in c["node_groups"]) if c["node_groups"] else c["nodes"]
    if cfg["run"]["engine"] == "real":
        n = min(n, cfg["run"]["real_nodes"])
    n -= sum(1 for x in f["node_failures"] if x["at_s"] <= t and not
             (f["restore_after_s"] > 0 and x["at_s"] + f["restore_after_s"] <= t))
    n += sum(1 for x in f["node_additions"] if x["at_s"] <= t)
    return n


def _point_configs(exp, runs: pd.DataFrame) -> dict[int, dict]:
    """Sweep point index -> its resolved config."""
    return {int(i): exp.points[int(i)].config for i in sorted(runs["point"].unique())}


def _point_table(runs: pd.DataFrame, exp, cols: list[str], row) -> str:
    """A markdown table with a row per sweep point of ``runs``: ``row(r, cfg)`` from the point's
    ``cols`` (mean and std over seeds, as :func:`per_point`) and its resolved config."""
    cfgs = _point_configs(exp, runs)
    return pd.DataFrame([row(r, cfgs[int(r["point"])]) for _, r in per_point(runs, cols).iterrows()]
                        ).to_markdown(index=False)


def _mark_events(ax, times: list[float], label: str, color: str = "k") -> None:
    for k, t in enumerate(sorted(set(times))):
        ax.axvline(t, color=color, ls="--", lw=1, alpha=0.7, label=label if k == 0 else None)


class ActorRecovery(Study):
    """Actor methods over time while nodes fail: original, re-executed, checkpoints (Fig. 11b)."""
    name = "actor_recovery"
    description = ("actor methods per second (original, re-executed, checkpoints) while nodes fail; "
                   "actors rebuilt and methods re-executed with and without checkpoints (Fig. 11b)")
    wants_trace = True
    #: Ray paper, Fig. 11b (§5.1): 10 nodes, 2000 actors, 2 nodes killed at 200 s, 400 actors
    #: recovered during 200-270 s; methods re-executed with / without checkpoints
    PAPER = {"actors_rebuilt": 400, "with_checkpoints": 500, "without_checkpoints": 10_000,
             "recovery": (200.0, 270.0)}
    metrics = ["actors_rebuilt", "methods_reexecuted", "methods_replayed", "checkpoints_taken", "calls_failed",
               "recovery_s", "makespan_s"]

    def run_metrics(self, trace, info, cfg):
        if trace is None:
            return {}
        scale = _time_scale(cfg)
        step = trace[(trace.function == "Actor.step") & (trace.state == "finished")]
        redo = step[step.attempt > 1]
        # a replay re-runs a call whose result was delivered already (its id finished before)
        replayed = int(step.sort_values(["finished_s", "attempt"], kind="stable").duplicated("task_id").sum())
        init = trace[(trace.function == "Actor.__init__") & (trace.state == "finished")]
        ckpt = trace[(trace.function == "Actor.__checkpoint__") & (trace.state == "finished")]
        kills = [x["at_s"] for x in cfg["faults"]["node_failures"]]
        recovery = NAN_
        if kills and len(redo):
            recovery = float(redo.finished_s.max()) / scale - min(kills)
        return {"actors_rebuilt": int((init.attempt > 1).sum()), "methods_reexecuted": int(len(redo)),
                "methods_replayed": replayed, "checkpoints_taken": int(len(ckpt)),
                "calls_failed": int(((trace.function == "Actor.step") & (trace.state == "failed")).sum()),
                "recovery_s": recovery}

    def timeseries(self, trace, info, cfg):
        if trace is None:
            return None
        scale = _time_scale(cfg)
        # a real run's bins hold at least ~0.25 s of real time, or a few calls each
        width = max(cfg["run"]["timeseries_bin_s"] * scale, 0.25 if cfg["run"]["engine"] == "real" else 0.0)
        done = trace[trace.state == "finished"]
        if not len(done):
            return None
        edges = np.arange(0.0, float(done.finished_s.max()) + width, width)
        step = done[done.function == "Actor.step"]

        def per_s(rows):
            return np.histogram(rows.finished_s, edges)[0] / width     # per second of the run (as Recovery)
        t = edges[:-1] / scale
        return pd.DataFrame({
            "t_s": t, "original_per_s": per_s(step[step.attempt == 1]),
            "reexecuted_per_s": per_s(step[step.attempt > 1]),
            "checkpoints_per_s": per_s(done[done.function == "Actor.__checkpoint__"]),
            "actors_rebuilt": np.histogram(done.finished_s[(done.function == "Actor.__init__") & (done.attempt > 1)],
                                           edges)[0],
            "nodes_alive": np.array([_nodes_alive(cfg, x) for x in t])})

    def _paper_reexecuted(self, cfg: dict) -> int:
        ck = cfg["workload"]["actor_checkpoint_interval"] > 0
        return self.PAPER["with_checkpoints" if ck else "without_checkpoints"]

    def _summary_row(self, r, cfg: dict) -> dict:
        k = cfg["workload"]["actor_checkpoint_interval"]
        return {"point": r["label"] or "(base)", "checkpoint every": f"{k} calls" if k else "never",
                "actors rebuilt": f"{r.get('actors_rebuilt', NAN_):.0f}",
                "paper": f"{self.PAPER['actors_rebuilt']}",
                "methods re-executed": f"{r.get('methods_reexecuted', NAN_):,.0f}",
                "of which replays": f"{r.get('methods_replayed', NAN_):,.0f}",
                "paper ": f"{self._paper_reexecuted(cfg):,}",
                "checkpoints taken": f"{r.get('checkpoints_taken', NAN_):,.0f}",
                "calls failed": f"{r.get('calls_failed', NAN_):.0f}",
                "recovery (s)": f"{r.get('recovery_s', NAN_):.1f}"}

    def summary(self, runs, exp) -> str:
        text = ["## Actor reconstruction (paper Fig. 11b; mean over seeds)", "",
                _point_table(runs, exp, [c for c in self.metrics if c in runs], self._summary_row), "",
                "Re-executed methods are finished `Actor.step` rows with attempt > 1: replays of calls "
                "completed since the actor's last checkpoint, plus calls that were queued or running on the "
                "dead node and ran after the rebuild. Recovery is from the first node failure to the last "
                "re-executed method. Paper (§5.1): 10 nodes, 2000 actors, 2 nodes killed at 200 s, 400 actors "
                "recovered during 200–270 s; **500** methods re-executed with checkpoints against **10k** "
                "without. `timeseries.csv` has our per-bin rates."]
        f = exp.resolved["faults"]
        if f["node_failures"]:
            text += ["", "Events: " + ", ".join(f"{x['at_s']:g} s: node {x['node']} fails"
                                                for x in sorted(f["node_failures"], key=lambda x: x["at_s"]))]
        return "\n".join(text) + "\n"

    def figures(self, runs, exp, out) -> list[str]:
        path = Path(out) / "timeseries.csv"
        if not path.exists():
            return []
        ts = pd.read_csv(path)
        plt = _mpl()
        cfgs = _point_configs(exp, runs)
        points = sorted(ts.point.unique())
        fig, axes = plt.subplots(len(points), 1, figsize=(8.5, 3.4 * len(points)), squeeze=False, sharex=True)
        engine = exp.resolved["run"]["engine"]
        for ax, p in zip(axes[:, 0], points):
            sub = ts[ts.point == p]
            g = sub.groupby("t_s")[["original_per_s", "reexecuted_per_s", "checkpoints_per_s"]].mean().reset_index()
            ax.plot(g.t_s, g.original_per_s, color="#4878a8", label="original methods", drawstyle="steps-post")
            ax.plot(g.t_s, g.reexecuted_per_s, color="#e07b39", label="re-executed methods", drawstyle="steps-post")
            ax.plot(g.t_s, g.checkpoints_per_s, color="#59a14f", label="checkpoints", drawstyle="steps-post")
            cfg = cfgs[int(p)]
            _mark_events(ax, [x["at_s"] for x in cfg["faults"]["node_failures"]], "node failure")
            ax.axvspan(*self.PAPER["recovery"], color="grey", alpha=0.12, label="paper: recovery 200–270 s")
            r = runs[runs.point == p]
            ours = r["methods_reexecuted"].mean() if "methods_reexecuted" in r else NAN_
            label = r["label"].iloc[0] if len(r) else ""
            ax.set_title(f"{label or 'base'}: re-executed {ours:,.0f} (paper: {self._paper_reexecuted(cfg):,}), "
                         f"actors rebuilt {r['actors_rebuilt'].mean() if 'actors_rebuilt' in r else NAN_:.0f} "
                         f"(paper: {self.PAPER['actors_rebuilt']})", fontsize=9)
            ax.set_ylabel("per second")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
        axes[-1, 0].set_xlabel("time (s)")
        fig.suptitle(f"Fig. 11b: actor reconstruction ({engine})")
        fig.tight_layout()
        fig.savefig(Path(out) / "fig11b.png", dpi=110)
        plt.close(fig)
        return ["fig11b.png"]


class Gcs(Study):
    """GCS fault tolerance and flushing (the paper's Figs. 10a and 10b)."""
    name = "gcs"
    description = ("GCS client latency over time across chain-replica failures (Fig. 10a) and GCS memory "
                   "with and without flushing (Fig. 10b)")
    wants_trace = True
    #: Ray paper, Fig. 10a: the client's worst latency across reconfigurations, seconds
    PAPER_MAX_LATENCY_S = 0.030

    def keeps_rows(self, cfg):
        return _is_client(cfg)                # task runs: memory comes from info

    def run_metrics(self, trace, info, cfg):
        out: dict = {}
        if trace is not None and _is_client(cfg):
            for kind in ("write", "read"):
                rows = trace[(trace.function == f"gcs.{kind}") & (trace.state == "finished")]
                lat = (rows.finished_s - rows.submitted_s).to_numpy()
                out[f"gcs_{kind}s"] = int(len(lat))
                stats = (np.median(lat), np.quantile(lat, 0.99), lat.max()) if len(lat) else (NAN_,) * 3
                for name, v in zip(_LATENCY_STATS, stats):
                    out[f"gcs_{kind}_{name}_ms"] = float(v) * 1e3
        mem = info.get("gcs_memory") or []
        if mem:
            out["gcs_memory_peak_mb"] = max(b for _, b in mem) / 1e6
            out["gcs_memory_final_mb"] = mem[-1][1] / 1e6
        return out

    def timeseries(self, trace, info, cfg):
        scale = _time_scale(cfg)
        parts = []
        if trace is not None and _is_client(cfg) and len(trace):
            width = cfg["run"]["timeseries_bin_s"] * scale
            rows = trace[trace.function.str.startswith("gcs.")]
            lat = (rows.finished_s - rows.submitted_s) * 1e3
            b = np.floor(rows.submitted_s / width).astype(int)
            g = pd.DataFrame({"bin": b, "op": rows.function.str[4:], "lat": lat}).groupby(["bin", "op"]).lat
            stats = pd.concat([g.median().rename("p50"), g.max().rename("max")], axis=1).reset_index()
            wide = stats.pivot(index="bin", columns="op", values=["p50", "max"])
            wide.columns = [f"{op}_{stat}_ms" for stat, op in wide.columns]
            wide = wide.reset_index()
            wide.insert(0, "t_s", wide.pop("bin") * width / scale)
            parts.append(wide.assign(series="latency"))
        mem = info.get("gcs_memory") or []
        if mem:
            t, bts = zip(*mem)
            parts.append(pd.DataFrame({"t_s": np.array(t) / scale, "memory_mb": np.array(bts) / 1e6,
                                       "series": "memory"}))
        return pd.concat(parts, ignore_index=True) if parts else None

    def _latency_row(self, r, cfg: dict) -> dict:
        kills = ", ".join(f"{x['at_s']:g} s" for x in cfg["faults"]["gcs_replica_failures"]) or "none"
        worst = max(r.get("gcs_write_max_ms", NAN_), r.get("gcs_read_max_ms", NAN_))
        return {"point": r["label"] or "(base)", "chain": cfg["cluster"]["gcs_chain_length"], "replica kills": kills,
                "write p50 / p99 / max (ms)": _ms3(r, "write"), "read p50 / p99 / max (ms)": _ms3(r, "read"),
                "worst (ms)": f"{worst:.2f}", "paper worst (ms)": f"< {self.PAPER_MAX_LATENCY_S * 1e3:.0f}"}

    @staticmethod
    def _memory_row(r, cfg: dict) -> dict:
        fl = cfg["cluster"]["gcs_flush_interval_s"]
        return {"point": r["label"] or "(base)", "flush every": f"{fl:g} s" if fl else "never",
                "tasks": (min(cfg["workload"]["jobs"], cfg["run"]["real_max_jobs"])
                          if cfg["run"]["engine"] == "real" else cfg["workload"]["jobs"]),
                "peak GCS memory (MB)": f"{r['gcs_memory_peak_mb']:.1f}",
                "at the end (MB)": f"{r['gcs_memory_final_mb']:.1f}",
                "throughput (tasks/s)": f"{r['throughput_per_s']:,.0f}"}

    def summary(self, runs, exp) -> str:
        client, tasks = _client_and_task_points(_point_configs(exp, runs))
        text = []
        if client:
            lat_cols = [c for c in runs.columns if c.startswith(("gcs_write_", "gcs_read_")) and c.endswith("_ms")]
            text += ["## GCS latency across replica failures (paper Fig. 10a; mean over seeds)", "",
                     _point_table(runs[runs.point.isin(client)], exp, lat_cols, self._latency_row), "",
                     "One client, at most one request in flight: even requests write a key, odd ones read it back "
                     "(paper: 25 B keys, 512 B values, a 2-replica chain, a member killed at ~4.2 s, a new one added; "
                     "the worst latency it reports, failure detection and recovery included, is under 30 ms). In the "
                     "simulator the worst latency is the reconfiguration (`cluster.gcs_reconfigure_s`) plus a "
                     "request's cost; the real runtime measures it.", ""]
        if tasks:
            cols = ["gcs_memory_peak_mb", "gcs_memory_final_mb", "throughput_per_s", "makespan_s"]
            text += ["## GCS memory with and without flushing (paper Fig. 10b; mean over seeds)", "",
                     _point_table(runs[runs.point.isin(tasks)], exp, cols, self._memory_row), "",
                     "Paper: 50 million empty tasks submitted sequentially; without flushing GCS memory grows "
                     "linearly until it reaches capacity and the run stalls; with (aggressive) flushing it stays "
                     "flat. It gives no byte counts. The simulator models memory as `cluster.gcs_entry_bytes` per "
                     "task, less the finished tasks flushed every `cluster.gcs_flush_interval_s`; the real runtime "
                     "reports the GCS processes' resident memory.", ""]
        return "\n".join(text) + "\n"

    def figures(self, runs, exp, out) -> list[str]:
        path = Path(out) / "timeseries.csv"
        if not path.exists():
            return []
        ts = pd.read_csv(path)
        cfgs = _point_configs(exp, runs)
        plt = _mpl()
        names = []
        engine = exp.resolved["run"]["engine"]
        client, tasks = _client_and_task_points(cfgs)
        lat = ts[(ts.series == "latency") & ts.point.isin(client)]
        if len(lat):
            fig, ax = plt.subplots(figsize=(8, 4.2))
            for (p, label), sub in lat.groupby(["point", "label"], sort=True, dropna=False):
                g = sub.groupby("t_s").mean(numeric_only=True).reset_index()
                for op, color in (("write", "#e07b39"), ("read", "#4878a8")):
                    if f"{op}_max_ms" in g:
                        ax.plot(g.t_s, g[f"{op}_max_ms"], color=color, lw=1.2, label=f"{op}, max per bin")
                        ax.plot(g.t_s, g[f"{op}_p50_ms"], color=color, lw=0.8, ls=":", label=f"{op}, median per bin")
                _mark_events(ax, [x["at_s"] for x in cfgs[int(p)]["faults"]["gcs_replica_failures"]],
                             "replica killed", color="red")
            ax.axhline(self.PAPER_MAX_LATENCY_S * 1e3, color="k", ls="-.", lw=1, label="paper: max latency < 30 ms")
            ax.set_yscale("log")
            ax.set_xlabel("time (s)")
            ax.set_ylabel("client latency (ms, log scale)")
            ax.set_title(f"Fig. 10a: GCS latency across a chain reconfiguration ({engine})")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7, loc="upper right")
            fig.tight_layout()
            fig.savefig(Path(out) / "fig10a.png", dpi=110)
            plt.close(fig)
            names.append("fig10a.png")
        mem = ts[(ts.series == "memory") & ts.point.isin(tasks)]
        if len(mem):
            fig, ax = plt.subplots(figsize=(8, 4.2))
            for (p, label), sub in mem.groupby(["point", "label"], sort=True, dropna=False):
                g = sub.groupby("t_s").memory_mb.mean().reset_index()
                ax.plot(g.t_s, g.memory_mb, label=label if isinstance(label, str) and label else f"point {p}")
            ax.set_xlabel("time (s)")
            ax.set_ylabel("GCS memory (MB)")
            ax.set_title(f"Fig. 10b: GCS memory with and without flushing ({engine})\n"
                         "paper: grows linearly to capacity without flushing, flat with it", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            fig.savefig(Path(out) / "fig10b.png", dpi=110)
            plt.close(fig)
            names.append("fig10b.png")
        return names


class Theory(Study):
    """The simulator configured as textbook queueing systems against their closed forms
    (:mod:`testbed.studies.theory`): per case the theory, the simulated mean with its 95%
    interval over seeds, the relative error and pass / fail."""
    name = "theory"
    description = ("the simulator as M/M/c, M/D/1, M/G/1, random routing, power-of-d and a server over a "
                   "link against closed forms; Little's law and conservation")
    wants_trace = True
    metrics = ["sim_value", "theory", "throughput_per_s", "arrival_rate_per_s", "L_sim", "L_theory"]
    #: a case passes when the theory lies in the simulated 95% interval, or within this
    #: relative error when the interval is tighter than it
    TOLERANCE = 0.02

    def check_config(self, cfg, label):
        try:
            theory.check_textbook(cfg)
        except ValueError as exc:
            raise ConfigError(f"study 'theory' {exc}", key="run.study") from None

    def run_metrics(self, trace, info, cfg):
        case = theory.textbook_case(cfg)
        jobs = cfg["workload"]["jobs"]
        fin = trace[trace.state == "finished"]
        once = bool(len(fin) == jobs and len(trace) == jobs and fin.task_id.is_unique)
        df = fin.sort_values("submitted_s", kind="stable")
        skip = int(len(df) * cfg["run"]["warmup_fraction"])
        sub = df.submitted_s.to_numpy()
        col = {"response": "finished_s", "wait": "started_s", "decision": "placed_s"}[case["quantity"]]
        x = df[col].to_numpy() - sub
        t0, t1 = sub[skip], sub[-1]          # after the warm-up, while arrivals continue
        done = df.finished_s.to_numpy()
        tput = float(((done >= t0) & (done <= t1)).sum() / (t1 - t0))
        arrived = float(((sub >= t0) & (sub <= t1)).sum() / (t1 - t0))   # this run's realized arrivals
        out = {"system": case["system"], "quantity": case["quantity"], "theory": case["theory"],
               "sim_value": float(x[skip:].mean()), "effect": bool(case.get("effect", False)),
               "arrival_rate_per_s": case["lam"], "throughput_per_s": tput, "arrivals_per_s": arrived,
               "finished_once": once,
               # the closed form at this run's realized arrival rate (paired with sim_value)
               "theory_realized": theory.theory_at_rate(cfg, arrived)}
        if case["quantity"] == "response":
            out["L_sim"] = theory.time_average_in_system(sub, done, t0, t1)
            out["L_theory"] = case["lam"] * case["theory"]        # Little's law
        return out

    #: finite-N reference of a power-of-d case: this many independent replications
    REFERENCE_REPS = 5

    @staticmethod
    def _reference(cfg: dict) -> float:
        """Mean over REFERENCE_REPS seeds of theory.power_of_d_reference at the case's N,
        load and task count (the finite-N value the mean field is the limit of)."""
        c, w = cfg["cluster"], cfg["workload"]
        return _power_of_d_reference(c["nodes"], w["rate_per_s"] * w["drivers"], w["duration"]["mean"], w["jobs"],
                                     cfg["run"]["warmup_fraction"], Theory.REFERENCE_REPS,
                                     theory.textbook_case(cfg)["d"])

    @staticmethod
    def _rows(runs, exp):
        rows = []
        for p, g in runs.groupby("point", sort=True):
            r0 = g.iloc[0]
            if str(r0["system"]).startswith("power-of-"):
                g = g.assign(reference=Theory._reference(exp.points[int(p)].config))
            # throughput against each run's realized arrival rate (paired per seed): the
            # nominal rate differs from what a finite run drew by the same amount in every case
            checks = [("mean " + r0["quantity"] + " (ms)", "sim_value", "theory", 1e3),
                      ("throughput / realized arrivals (tasks/s)", "throughput_per_s", "arrivals_per_s", 1.0)]
            if "reference" in g and g["reference"].notna().all():
                checks.insert(1, ("mean response vs finite-N reference (ms)", "sim_value", "reference", 1e3))
            if "L_sim" in g and g["L_sim"].notna().all():
                checks.append(("Little: L = λW (tasks)", "L_sim", "L_theory", 1.0))
            for what, sim, th, scale in checks:
                ci = mean_ci(g[sim].to_numpy(float))
                if th == "arrivals_per_s":               # a per-run reference: the paired error
                    ref = float(g[th].mean())
                    pe = paired_rel_error_ci(g[sim].to_numpy(float), g[th].to_numpy(float))
                    err = pe.mean
                    ok = pe.contains(0.0) or abs(err) <= Theory.TOLERANCE
                else:
                    ref = float(g[th].iloc[0])
                    err = rel_error(ci.mean, ref)
                    tight = ci.half_width <= Theory.TOLERANCE * abs(ref)
                    ok = ci.contains(ref) or (tight and abs(err) <= Theory.TOLERANCE)
                effect = bool(r0["effect"]) and sim in ("sim_value", "L_sim")
                row = {"point": p, "case": r0["label"] or r0["system"], "system": r0["system"],
                       "check": what, "theory": ref * scale, "sim": ci.mean * scale,
                       "lo": ci.lo * scale, "hi": ci.hi * scale, "seeds": ci.n, "rel": err,
                       "theory_realized": math.nan, "rel_realized": math.nan,
                       "status": "effect (herding)" if effect else ("pass" if ok else "FAIL")}
                if th == "theory" and "theory_realized" in g and g["theory_realized"].notna().all():
                    # the same mean against the theory at each run's realized arrival rate,
                    # paired per seed: reported beside the nominal error, not a pass rule
                    row["theory_realized"] = float(g["theory_realized"].mean()) * scale
                    row["rel_realized"] = paired_rel_error_ci(g[sim].to_numpy(float),
                                                              g["theory_realized"].to_numpy(float)).mean
                rows.append(row)
        return rows

    def summary(self, runs, exp) -> str:
        rows = self._rows(runs, exp)
        tab = pd.DataFrame([{"case": r["case"], "check": r["check"], "theory": f"{r['theory']:.4g}",
                             "simulated (95% CI over seeds)": f"{r['sim']:.4g} [{r['lo']:.4g}, {r['hi']:.4g}]",
                             "rel. error": f"{r['rel']:+.2%}",
                             "theory at realized λ": "" if math.isnan(r["theory_realized"]) else f"{r['theory_realized']:.4g}",
                             "rel. error at realized λ": "" if math.isnan(r["rel_realized"]) else f"{r['rel_realized']:+.2%}",
                             "result": r["status"]} for r in rows])
        n_fail = sum(r["status"] == "FAIL" for r in rows)
        once = runs["finished_once"].astype(bool)
        warm = exp.resolved["run"]["warmup_fraction"]
        lines = ["## Simulator against queueing theory", "",
                 tab.to_markdown(index=False), "",
                 f"Pass: the theory lies in the simulated 95% interval over seeds, or within "
                 f"{Theory.TOLERANCE:.0%} where the interval is tighter. {len(rows) - n_fail} of {len(rows)} "
                 f"checks pass or are measured effects; {n_fail} fail. The result is decided on the nominal "
                 "theory (column rel. error: the config's arrival rate). Beside it, for the mean rows, the theory "
                 "at each run's realized arrival rate (arrivals from the end of the warm-up to the last arrival, "
                 "as for throughput) and the mean of the per-seed relative errors against it: this takes the "
                 "arrival process's sampling error out of the comparison (large near saturation, where the "
                 "theory is steep in the load); it is reported, not a pass rule.",
                 f"Conservation: every task finished exactly once in {int(once.sum())} of {len(once)} runs.",
                 f"The first run.warmup_fraction = {warm} of tasks (by submission) are left out of each mean "
                 "(the queues start empty); throughput and L are taken from the end of the warm-up to the last "
                 "arrival. Overheads are zero (latency, decision and GCS times) except where a case names them. "
                 "A power-of-d case with a stale view is not a test: the mean field assumes fresh queue lengths, "
                 "and its gap to it is the measured effect of herding on a 100 ms old view. The mean field is the "
                 "N -> inf limit: a power-of-d case also compares with the finite-N reference (the same N, load and "
                 f"task count simulated directly by theory.power_of_d_reference, mean of {Theory.REFERENCE_REPS} "
                 "replications), whose gap to the mean field is the finite-N effect.", ""]
        return "\n".join(lines)

    def figures(self, runs, exp, out) -> list[str]:
        rows = [r for r in self._rows(runs, exp) if r["check"].startswith("mean")]
        if not rows:
            return []
        plt = _mpl()
        fig, ax = plt.subplots(figsize=(8, max(3.0, 0.35 * len(rows) + 1.2)))
        y = np.arange(len(rows))
        ratio = np.array([r["sim"] / r["theory"] for r in rows])
        lo = np.array([r["lo"] / r["theory"] for r in rows])
        hi = np.array([r["hi"] / r["theory"] for r in rows])
        colors = ["#4878a8" if r["status"] == "pass" else "#d08030" if r["status"].startswith("effect")
                  else "#c03030" for r in rows]
        ax.errorbar(ratio, y, xerr=[ratio - lo, hi - ratio], fmt="none", ecolor="#555", capsize=3)
        ax.scatter(ratio, y, c=colors, zorder=3)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.axvspan(1 - Theory.TOLERANCE, 1 + Theory.TOLERANCE, color="#8c8", alpha=0.25)
        ax.set_yticks(y, [r["case"] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("simulated mean / theory (95% CI over seeds; band: ±2%)")
        ax.set_title(f"{exp.name}: simulator against closed forms", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(Path(out) / "theory.png", dpi=110)
        plt.close(fig)
        return ["theory.png"]


@lru_cache(maxsize=None)     # summary and figures both ask for each case's reference
def _power_of_d_reference(n: int, lam: float, mean_s: float, tasks: int, warmup_fraction: float, reps: int,
                          d: int) -> float:
    return float(np.mean([theory.power_of_d_reference(n, lam, mean_s, tasks, k, d=d, warmup_fraction=warmup_fraction)
                          for k in range(reps)]))


def _is_client(cfg: dict) -> bool:
    """Is ``cfg`` a run of the GCS client (Fig. 10a), not of tasks (Fig. 10b)?"""
    return cfg["workload"]["shape"] == "gcs_client"


def _client_and_task_points(cfgs: dict[int, dict]) -> tuple[list[int], list[int]]:
    """The sweep points that run the GCS client, and those that run tasks."""
    client = [p for p, c in cfgs.items() if _is_client(c)]
    return client, [p for p in cfgs if p not in client]


#: the GCS client's latency statistics per operation (runs.csv: gcs_<op>_<stat>_ms)
_LATENCY_STATS = ("p50", "p99", "max")


def _ms3(r, op: str) -> str:
    return " / ".join(f"{r.get(f'gcs_{op}_{s}_ms', NAN_):.2f}" for s in _LATENCY_STATS)


NAN_ = float("nan")

class Validation(Study):
    """The simulator against the real runtime, workload by workload (:mod:`.validation`)."""
    name = "validation"
    description = ("the same workloads on the real runtime and the simulator (calibrated and not), "
                   "paired per seed: relative error per metric with its interval, latency distributions")
    wants_trace = True

    variants = validation.VARIANTS

    def check_config(self, cfg, label):
        validation.check_config(cfg, label)

    def timeseries(self, trace, info, cfg):
        return validation.latency_quantiles(trace)

    def run_metrics(self, trace, info, cfg):
        return {**validation.decision_metrics(trace), **validation.driver_turnaround(trace, cfg)}

    def summary(self, runs, exp) -> str:
        return validation.summary(runs, exp)

    def figures(self, runs, exp, out) -> list[str]:
        return validation.figures(runs, exp, out)


class EstimatorStudy(Study):
    """Estimators (a case group) against a baseline, paired per seed, per stratum
    (:mod:`.estimator_study`)."""
    name = "estimator_study"
    description = ("estimators against a baseline (run.baseline), paired per seed in every workload / size / "
                   "grid stratum: intervals, Holm-corrected verdicts, herding, estimate error; report.md")
    wants_trace = True
    report_name = "report.md"

    def timeseries(self, trace, info, cfg):
        return validation.latency_quantiles(trace)   # the same per-run quantiles

    def run_metrics(self, trace, info, cfg):
        return estimator_study.run_metrics(trace, cfg)

    def summary(self, runs, exp) -> str:
        return estimator_study.summary(runs, exp)

    def figures(self, runs, exp, out) -> list[str]:
        return estimator_study.figures(runs, exp, out)


STUDIES: dict[str, Study] = {s.name: s for s in (Compare(), Estimators(), Scalability(), Recovery(),
                                                 ActorRecovery(), Gcs(), Theory(), Validation(),
                                                 EstimatorStudy())}
