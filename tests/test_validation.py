"""The validation study: each point runs on both engines, paired per seed."""
import pandas as pd
import pytest

from testbed.core.errors import ConfigError
from testbed.studies import validation
from testbed.studies.experiment import load_experiment

BASE = """
[cluster]
nodes = 2
cpus_per_node = 2
[workload]
jobs = 60
arrival = "poisson"
rate_per_s = 50.0
duration = {dist = "exponential", mean = 0.01}
[run]
study = "validation"
seeds = [0]
real_nodes = 2
real_cpus_per_node = 2
real_max_jobs = 100
real_time_scale = 1.0
"""


def _write(tmp_path, text):
    p = tmp_path / "v.toml"
    p.write_text(text)
    return p


def test_each_point_runs_on_the_real_engine_and_the_simulator(tmp_path):
    exp = load_experiment(_write(tmp_path, BASE + '[[sweep.cases]]\nlabel = "a"\n"workload.jobs" = 50\n'))
    assert [p.label for p in exp.points] == [f"a · {v}" for v, _ in validation.VARIANTS]
    assert [p.config["run"]["engine"] for p in exp.points] == [o["run.engine"] for _, o in validation.VARIANTS]
    assert all(p.config["workload"]["jobs"] == 50 for p in exp.points)


@pytest.mark.parametrize("override, key", [
    ("cluster.nodes=3", "run.real_nodes"),
    ("cluster.cpus_per_node=4", "run.real_cpus_per_node"),
    ("workload.jobs=101", "run.real_max_jobs"),
    ("run.real_time_scale=0.5", "run.real_time_scale"),
])
def test_a_point_the_real_engine_would_scale_down_is_refused(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as exc:
        load_experiment(_write(tmp_path, BASE), [override])
    assert "v.toml" in str(exc.value)


def test_relative_error_is_paired_per_seed_and_zero_when_both_are_zero():
    rows = []
    for seed, (real, sim) in enumerate([(100.0, 108.0), (200.0, 216.0), (50.0, 54.0)]):
        for variant, thr in (("real", real), ("sim", sim)):
            rows.append({"label": f"w · {variant}", "seed": seed, "throughput_per_s": thr, "bytes_transferred": 0})
    tab = validation.compare_table(pd.DataFrame(rows), "sim").set_index("metric")
    thr = tab.loc["throughput_per_s"]
    assert thr["rel_error"].mean == pytest.approx(0.08)
    assert thr["rel_error"].half_width == pytest.approx(0.0, abs=1e-9)   # the same +8% on every seed
    assert thr["within"]                                                  # goal: within 10%
    assert tab.loc["bytes_transferred"]["within"] and tab.loc["bytes_transferred"]["rel_error"].mean == 0


@pytest.mark.timeout(120)
def test_validation_run_writes_its_table_and_plot(tmp_path):
    from testbed.cli import main
    out = tmp_path / "out"
    assert main(["run", str(_write(tmp_path, BASE)), "--out", str(out), "--quiet"]) == 0
    text = (out / "summary.md").read_text()
    assert "### The calibrated simulator" in text and "latency mean (ms)" in text
    assert (out / "latency_cdf.png").exists()
    runs = pd.read_csv(out / "runs.csv")
    assert sorted(runs.label) == sorted(v for v, _ in validation.VARIANTS)


def test_decision_wait_measures_when_tasks_with_inputs_are_placed():
    """placed - submitted over finished tasks, and over those of multi-task jobs only; a
    workload whose engines differ by > 2x and 5 ms is flagged in the summary."""
    trace = pd.DataFrame({"job_id": [0, 1, 1], "state": ["finished"] * 3, "submitted_s": [0.0, 0.0, 0.0],
                          "placed_s": [0.001, 0.002, 0.050]})
    m = validation.decision_metrics(trace)
    assert m["decision_wait_mean_s"] == pytest.approx(0.053 / 3)
    assert m["decision_wait_dag_mean_s"] == pytest.approx(0.026)
    runs = pd.DataFrame([{"label": "w · real", "seed": 0, "decision_wait_dag_mean_s": 0.003},
                         {"label": "w · sim", "seed": 0, "decision_wait_dag_mean_s": 0.060},
                         {"label": "v · real", "seed": 0, "decision_wait_dag_mean_s": 0.010},
                         {"label": "v · sim", "seed": 0, "decision_wait_dag_mean_s": 0.011}])
    text = validation.decision_diagnostics(runs)
    assert text.count("**differ**") == 1 and "| w " in text


def test_the_verdict_says_how_firmly_the_seeds_place_the_error():
    """ok / miss when the error's whole interval is inside / outside the goal, ok? / miss? when
    only its mean is; a difference under the metric's absolute floor agrees whatever its ratio."""
    from testbed.studies.stats import Interval
    assert validation.verdict(Interval(0.02, -0.05, 0.09, 3), 0.10, True) == "ok"
    assert validation.verdict(Interval(0.08, -0.01, 0.17, 3), 0.10, True) == "ok?"
    assert validation.verdict(Interval(-0.30, -0.40, -0.20, 3), 0.15, False) == "miss"
    assert validation.verdict(Interval(-0.20, -0.45, 0.05, 3), 0.15, False) == "miss?"
    rows = [{"label": f"w · {v}", "seed": s, "bytes_transferred": b}
            for s in range(3) for v, b in (("real", 9_000.0), ("sim", 0.0))]
    tab = validation.compare_table(pd.DataFrame(rows), "sim").set_index("metric")
    row = tab.loc["bytes_transferred"]
    assert row["rel_error"].mean == pytest.approx(-1.0) and row["within"] and row["verdict"] == "ok (~0)"


def test_driver_turnaround_is_the_gap_from_a_jobs_end_to_its_drivers_next_submission():
    """Closed loop, one job in flight per driver: driver 0's jobs end at 1.0 and 2.0 and its next
    ones are submitted at 1.004 and 2.010 (gaps 4 and 10 ms); driver 1's gap is 1 ms. A Poisson
    workload has no turnaround. The summary flags a workload whose engines differ by > 2 ms and 2x."""
    from testbed.studies.experiment import resolve
    tr = pd.DataFrame({"job_id": [0, 1, 2, 3, 4], "submitter": [0, 0, 0, 1, 1],
                       "submitted_s": [0.0, 1.004, 2.010, 0.0, 0.501], "finished_s": [1.0, 2.0, 3.0, 0.5, 1.0]})
    closed = resolve({"workload": {"arrival": "closed", "in_flight": 1, "drivers": 2}})
    assert validation.driver_turnaround(tr, closed)["driver_turnaround_mean_s"] == pytest.approx(0.005)
    assert validation.driver_turnaround(tr, resolve({"workload": {"arrival": "poisson"}})) == {}
    runs = pd.DataFrame({"label": ["w · real", "w · sim", "v · real", "v · sim"], "seed": 0,
                         "driver_turnaround_mean_s": [0.010, 0.001, 0.003, 0.0025]})
    text = validation.turnaround_diagnostics(runs)
    assert "### Closed-loop driver turnaround" in text
    flagged = [line for line in text.splitlines() if "**differ**" in line]
    assert len(flagged) == 1 and flagged[0].startswith("| w ")
