"""The estimator study: per-run windows and herding, the design (treatment, baseline,
strata) read from the sweep, paired comparisons with verdicts, the estimate-error tracker,
and a whole tiny study run from the CLI."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from testbed.policy.base import EstimateError, deliver_reports
from testbed.policy.build import build_policies
from testbed.studies import estimator_study as es
from testbed.studies.experiment import load_experiment, resolve


def test_herding_counts_the_most_tasks_placed_on_one_node_within_a_heartbeat():
    tr = pd.DataFrame({"spilled": [True] * 6 + [False], "node": [3, 3, 3, 1, 3, 2, 3],
                       "placed_s": [0.01, 0.02, 0.09, 0.05, 0.15, 0.16, 0.02]})
    # window 0: node 3 gets 3 (the unspilled one is the local scheduler's); window 1: 1 and 1
    assert es.herding(tr, 0.1) == {"herd_max": 3.0, "herd_mean": 2.0}


def test_windows_leave_out_the_warm_up_and_isolate_the_period_after_a_shift():
    n = 100
    tr = pd.DataFrame({"state": ["finished"] * n, "submitted_s": np.arange(n, dtype=float),
                       "finished_s": np.arange(n) + np.where(np.arange(n) < 50, 1.0, 3.0),
                       "job_id": np.arange(n), "spilled": False, "placed_s": np.nan, "node": 0})
    cfg = resolve({"workload": {"shift": {"after_jobs": 50}}, "run": {"warmup_fraction": 0.2}})
    m = es.run_metrics(tr, cfg)
    assert m["latency_mean_after_shift_s"] == pytest.approx(3.0)
    assert m["latency_mean_steady_s"] == pytest.approx((30 * 1.0 + 50 * 3.0) / 80)   # submitted after 19.8 s


def test_a_stratum_whose_tasks_wait_to_be_placed_is_flagged():
    """placement_delay_mean_s is submission -> placement; a stratum that spends more than a
    quarter of its latency there (a saturated global scheduler: one replica at 1,000 nodes
    gave the first full study a 2 s mean latency with 10 ms of queueing) gets a warning."""
    tr = pd.DataFrame({"state": "finished", "submitted_s": [0.0, 1.0], "placed_s": [0.3, 1.5],
                       "finished_s": [1.0, 2.0], "job_id": [0, 1], "spilled": True, "node": 0})
    m = es.run_metrics(tr, resolve({}))
    assert m["placement_delay_mean_s"] == pytest.approx(0.4)
    rows = pd.DataFrame({"placement_delay_mean_s": [0.4, 0.4], "latency_mean_s": [1.0, 1.0]})
    assert "40% of the mean latency is spent before placement" in es._bottleneck(rows)
    assert es._bottleneck(rows.assign(placement_delay_mean_s=0.1)) == ""


def test_the_estimate_error_is_the_estimate_a_sample_meets_on_arrival():
    placement, _ = build_policies(resolve({"scheduler": {"task_time": {"name": "LastValue"},
                                                         "task_time_key": "function_node"}})["scheduler"])
    acc = placement.estimate_error = EstimateError()
    deliver_reports(placement, 0, [("f", 1.0), ("f", 3.0), ("f", 2.0)], [], 0.0)
    r = acc.result()
    # the first sample meets no estimate; then 1 vs 3 and 3 vs 2
    assert (r["est_cold"], r["est_count"]) == (1, 2)
    assert r["est_mae_s"] == pytest.approx(1.5) and r["est_bias_s"] == pytest.approx(-0.5)
    assert r["est_rel_error"] == pytest.approx(3.0 / 5.0)


STUDY = """
[cluster]
nodes = 8
cpus_per_node = 2
[scheduler]
spillover = {name = "QueueThreshold", threshold = 1}
[workload]
jobs = 600
arrival = "poisson"
drivers = 2
rate_per_s = 60.0
duration = {dist = "exponential", mean = 0.1}
[run]
study = "estimator_study"
seeds = [0, 1, 2]
track_estimates = true
baseline = "EWMA"
[[sweep.cases.estimator]]
label = "last"
"scheduler.task_time" = {name = "LastValue"}
[[sweep.cases.estimator]]
label = "EWMA"
"scheduler.task_time" = {name = "ExponentialAverage", alpha = 0.1}
[[sweep.cases.workload]]
label = "fast"
"workload.rate_per_s" = 40.0
[[sweep.cases.workload]]
label = "busy"
"workload.rate_per_s" = 70.0
[sweep]
"cluster.heartbeat_interval_s" = [0.1, 0.3]
"""


def _exp(tmp_path):
    p = tmp_path / "es.toml"
    p.write_text(STUDY)
    return load_experiment(p)


def test_the_design_is_read_from_the_sweep(tmp_path):
    exp = _exp(tmp_path)
    runs = pd.DataFrame([{"point": i, "seed": 0, "case_estimator": p.factors["estimator"],
                          "case_workload": p.factors["workload"], "cluster.heartbeat_interval_s":
                          p.overrides["cluster.heartbeat_interval_s"]} for i, p in enumerate(exp.points)])
    assert es.design(runs, exp) == ("case_estimator", "EWMA", ["case_workload", "cluster.heartbeat_interval_s"])


def test_comparisons_are_paired_per_seed_within_each_stratum(tmp_path):
    """A candidate 10 ms slower than the baseline on every seed (and noisy runs that share
    that noise) is "worse" with an interval around +10 ms; one equal to it is not."""
    exp = _exp(tmp_path)
    rng = np.random.default_rng(1)
    rows = []
    for i, p in enumerate(exp.points):
        for seed in range(6):
            common = 0.1 + 0.05 * np.sin(seed)                # the seed's own noise, shared by both arms
            delta = 0.010 if (p.factors["estimator"] == "last" and p.factors["workload"] == "busy") else 0.0
            rows.append({"point": i, "label": p.label, "seed": seed, **{f"case_{k}": v for k, v in p.factors.items()},
                         "cluster.heartbeat_interval_s": p.overrides["cluster.heartbeat_interval_s"],
                         "latency_mean_s": common + delta + rng.normal(0, 1e-4)})
    comp = es.comparisons(pd.DataFrame(rows), exp)
    assert len(comp) == 4 and set(comp.candidate) == {"last"} and set(comp.baseline) == {"EWMA"}
    busy = comp[comp.stratum.str.startswith("busy")]
    assert (busy.verdict == "worse").all()
    assert all(abs(iv.estimate - 0.010) < 1e-3 and iv.lo > 0 for iv in busy["diff"])
    assert (comp[comp.stratum.str.startswith("fast")].verdict == "no significant difference").all()


@pytest.mark.timeout(240)
def test_a_study_run_writes_its_report_with_verdicts(tmp_path):
    from testbed.cli import main
    p = tmp_path / "es.toml"
    p.write_text(STUDY.replace('[sweep]\n"cluster.heartbeat_interval_s" = [0.1, 0.3]\n', ""))
    out = tmp_path / "out"
    assert main(["run", str(p), "--out", str(out), "--quiet"]) == 0
    report = (out / "report.md").read_text()
    assert "Against **EWMA**" in report and "### Verdict" in report and "estimate MAE" in report
    runs = pd.read_csv(out / "runs.csv")
    assert {"case_estimator", "case_workload", "herd_max", "est_mae_s", "latency_p99_steady_s"} <= set(runs)
    assert (runs.est_count > 0).all()
    assert (out / "difference_vs_baseline.png").exists() and (out / "latency_cdf.png").exists()
