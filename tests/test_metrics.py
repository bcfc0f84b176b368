"""Metrics come from Trace rows only; streamed percentiles stay within their 1% bins."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from testbed.core.metrics import MetricsAccumulator
from testbed.core.trace import NAMES, TraceRecorder, metrics_from_trace, rows_to_frame


def rows(n, rng, state="finished"):
    sub = np.sort(rng.uniform(0, 10, n))
    wait = rng.exponential(0.01, n)
    run = rng.lognormal(np.log(0.05), 1.0, n)
    out = []
    for i in range(n):
        placed = sub[i]
        started = placed + wait[i]
        out.append((i, i, "f", 0, 0, sub[i], placed, started, started + run[i], i % 4 == 0,
                    wait[i] * 1.1, 100, 1, state))
    return out


def test_metrics_of_a_hand_made_trace():
    """Throughput is finished tasks over (last finish - first submit); latency runs from
    submission to finish; prediction error compares the predicted wait with placed -> started."""
    r = [
        (0, 0, "f", 0, 1, 0.0, 0.0, 1.0, 2.0, True, 0.5, 10, 1, "finished"),
        (1, 1, "f", 0, 1, 1.0, 1.0, 1.0, 4.0, False, math.nan, 0, 1, "finished"),
        (2, 2, "g", 0, -1, 2.0, math.nan, math.nan, 2.0, False, math.nan, 0, 1, "infeasible"),
    ]
    m = metrics_from_trace(rows_to_frame(r))
    assert m["tasks"] == 3 and m["finished"] == 2 and m["infeasible"] == 1
    assert m["makespan_s"] == 4.0 and m["throughput_per_s"] == 0.5
    assert m["latency_mean_s"] == 2.5            # (2 - 0) and (4 - 1)
    assert m["queue_delay_mean_s"] == 0.5        # 1.0 and 0.0
    assert m["pred_count"] == 1 and m["pred_mae_s"] == 0.5 and m["pred_bias_s"] == -0.5
    assert m["spilled_fraction"] == pytest.approx(1 / 3)
    assert m["bytes_transferred"] == 10


def test_streamed_percentiles_beyond_the_exact_limit_are_within_one_percent():
    """Past exact_limit samples the accumulator switches to 1%-wide log bins: flat memory,
    percentiles within about 1% of the exact ones."""
    rng = np.random.default_rng(0)
    df = rows_to_frame(rows(20_000, rng))
    exact = MetricsAccumulator(exact_limit=10**9)
    binned = MetricsAccumulator(exact_limit=1_000)
    for chunk in np.array_split(np.arange(len(df)), 7):
        exact.add_frame(df.iloc[chunk])
        binned.add_frame(df.iloc[chunk])
    a, b = exact.result(), binned.result()
    assert binned.latency.hist is not None and exact.latency.hist is None
    for k in ("latency_p50_s", "latency_p95_s", "latency_p99_s", "queue_delay_p99_s"):
        assert b[k] == pytest.approx(a[k], rel=0.011), k
    for k in ("latency_mean_s", "makespan_s", "throughput_per_s", "pred_mae_s"):
        assert b[k] == pytest.approx(a[k], rel=1e-12), k


def test_recorder_streams_without_rows_and_agrees_with_rows():
    """keep_rows=False keeps no DataFrame but the same metrics as the rows would give."""
    rng = np.random.default_rng(1)
    rs = rows(5_000, rng)
    kept, streamed = TraceRecorder(keep_rows=True), TraceRecorder(keep_rows=False)
    for row in rs:
        kept.add(row)
        streamed.add(row)
    assert streamed.frame() is None
    df = kept.frame()
    assert list(df.columns) == list(NAMES) and len(df) == 5_000
    assert streamed.summary() == pytest.approx(metrics_from_trace(df), rel=1e-12, nan_ok=True)


def test_empty_trace_has_nan_metrics_not_errors():
    m = metrics_from_trace(pd.DataFrame({c: [] for c in NAMES}))
    assert m["tasks"] == 0 and math.isnan(m["throughput_per_s"]) and math.isnan(m["latency_p99_s"])


def test_trace_rows_are_named_and_read_by_name():
    """TraceRow's fields are the Trace's columns, in order, and a recorder takes it as a row."""
    from testbed.core.trace import TraceRow
    assert TraceRow._fields == NAMES
    row = TraceRow(task_id=1, job_id=0, function="f", submitter=0, node=2, submitted_s=0.0, placed_s=0.1,
                   started_s=0.2, finished_s=0.5, spilled=True, predicted_wait_s=0.05, bytes_transferred=7,
                   attempt=1, state="finished")
    rec = TraceRecorder()
    rec.add(row)
    df = rec.frame()
    assert df.loc[0, "node"] == row.node == 2 and df.loc[0, "bytes_transferred"] == 7 and bool(df.loc[0, "spilled"])
    with pytest.raises(TypeError):
        TraceRow(task_id=1)                       # every column is given: no silent default
