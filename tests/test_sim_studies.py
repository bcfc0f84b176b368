"""The fault-tolerance studies on simulated runs: ``actor_recovery`` (Fig. 11b) and ``gcs``
(Figs. 10a, 10b) write their tables with the paper's values beside ours, their figures and
timeseries, computed from the Trace and info only (so the real engine's runs fit too)."""
from __future__ import annotations

import textwrap

import pandas as pd
import pytest

from testbed.studies.experiment import load_experiment
from testbed.studies.runner import run_experiment
from testbed.studies.studies import STUDIES

pytestmark = pytest.mark.timeout(120)

ACTORS = """\
[cluster]
nodes = 4
heartbeat_interval_s = 0.1
num_heartbeats_timeout = 5
[workload]
shape = "actors"
actors = 40
jobs = 2000
arrival = "poisson"
drivers = 2
rate_per_s = 40.0
duration = {dist = "constant", value = 0.2}
[faults]
node_failures = [{at_s = 12.0, node = 1}]
[run]
study = "actor_recovery"
timeseries_bin_s = 1.0
[[sweep.cases]]
label = "none"
"workload.actor_checkpoint_interval" = 0
[[sweep.cases]]
label = "every 3"
"workload.actor_checkpoint_interval" = 3
"""

GCS = """\
[cluster]
nodes = 2
gcs_chain_length = 2
[workload]
jobs = 3000
in_flight = 1
duration = {dist = "constant", value = 0.0}
[run]
study = "gcs"
timeseries_bin_s = 0.05
[[sweep.cases]]
label = "10a"
"workload.shape" = "gcs_client"
"faults.gcs_replica_failures" = [{at_s = 0.3, replica = -1}]
[[sweep.cases]]
label = "no flush"
"cluster.gcs_flush_interval_s" = 0.0
[[sweep.cases]]
label = "flush"
"cluster.gcs_flush_interval_s" = 0.05
"""


def run(tmp_path, text):
    path = tmp_path / "exp.toml"
    path.write_text(textwrap.dedent(text))
    exp = load_experiment(path)
    out = run_experiment(exp, tmp_path / "out", jobs=1, progress=False)
    return exp, out, pd.read_csv(out / "runs.csv"), (out / "summary.md").read_text()


def test_actor_recovery_counts_rebuilds_and_reexecutions_per_point(tmp_path):
    exp, out, runs, summary = run(tmp_path, ACTORS)
    none, every3 = runs.iloc[0], runs.iloc[1]
    assert none.actors_rebuilt == every3.actors_rebuilt == 10          # the actors of node 1 of 4
    assert every3.methods_replayed < none.methods_replayed / 3
    assert none.checkpoints_taken == 0 and every3.checkpoints_taken > 0
    assert none.methods_reexecuted >= none.methods_replayed and none.recovery_s > 0
    assert "10,000" in summary and "500" in summary and "Fig. 11b" in summary
    assert (out / "fig11b.png").stat().st_size > 0
    ts = pd.read_csv(out / "timeseries.csv")
    assert {"original_per_s", "reexecuted_per_s", "checkpoints_per_s"} <= set(ts.columns)
    assert ts[ts.point == 0].reexecuted_per_s.sum() > 0


def test_gcs_study_tabulates_latency_and_memory(tmp_path):
    exp, out, runs, summary = run(tmp_path, GCS)
    client, grow, flush = runs.iloc[0], runs.iloc[1], runs.iloc[2]
    rc = exp.points[0].config["cluster"]["gcs_reconfigure_s"]
    assert client.gcs_writes == client.gcs_reads == 1500
    assert max(client.gcs_write_max_ms, client.gcs_read_max_ms) >= rc * 1e3
    assert client.gcs_write_p50_ms < 1.0
    assert flush.gcs_memory_peak_mb < grow.gcs_memory_peak_mb / 3
    assert "< 30" in summary and "Fig. 10a" in summary and "Fig. 10b" in summary
    assert (out / "fig10a.png").exists() and (out / "fig10b.png").exists()
    ts = pd.read_csv(out / "timeseries.csv")
    assert set(ts.series) == {"latency", "memory"}


def test_the_gcs_study_keeps_rows_only_for_client_runs():
    study = STUDIES["gcs"]
    assert study.keeps_rows({"workload": {"shape": "gcs_client"}})
    assert not study.keeps_rows({"workload": {"shape": "independent"}})
