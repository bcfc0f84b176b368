"""Metrics computed from Trace rows, streamed so memory stays flat.

One implementation for every case: ``MetricsAccumulator.add_frame`` takes any chunk of
Trace rows. Percentiles are exact while at most ``exact_limit`` samples have been
seen, and come from a log-spaced histogram (bins 1% wide) beyond that.

Metrics (keys of ``result()``), all times in seconds:

- ``tasks`` attempts recorded; ``finished``, ``failed``, ``infeasible``, ``lost``
- ``makespan_s`` last finish minus first submission; ``throughput_per_s`` finished / makespan
- ``latency_{mean,p50,p95,p99}_s`` submitted -> finished, finished attempts
- ``queue_delay_{mean,p99}_s`` placed -> started (queueing and input transfer)
- ``spilled_fraction`` share of attempts the local scheduler forwarded
- ``bytes_transferred`` input bytes moved between nodes
- ``pred_count`` attempts with a predicted wait; ``pred_mae_s`` mean |predicted - actual wait|;
  ``pred_bias_s`` mean (predicted - actual); ``pred_rel_error`` pred_mae_s / mean actual wait
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

#: percentiles are exact up to this many samples (8 bytes each per metric), then binned
EXACT_LIMIT = 250_000
#: histogram range and resolution for percentiles beyond exact_limit
_LO, _HI, _GROWTH = 1e-7, 1e6, 1.01
_NBINS = int(math.ceil(math.log(_HI / _LO) / math.log(_GROWTH))) + 2


class _Quantiles:
    """Exact samples up to a limit, then a log histogram."""

    def __init__(self, exact_limit: int):
        self.exact_limit = exact_limit
        self.parts: list[np.ndarray] = []
        self.n = 0
        self.total = 0.0
        self.hist: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        self.n += len(x)
        self.total += float(x.sum())
        if self.hist is None:
            self.parts.append(np.asarray(x, float))
            if self.n > self.exact_limit:
                allx = np.concatenate(self.parts)
                self.parts = []
                self.hist = np.zeros(_NBINS, np.int64)
                self._bin(allx)
        else:
            self._bin(x)

    def _bin(self, x: np.ndarray) -> None:
        idx = np.where(x <= _LO, 0, np.ceil(np.log(np.maximum(x, _LO) / _LO) / math.log(_GROWTH)))
        idx = np.clip(idx, 0, _NBINS - 1).astype(np.int64)
        np.add.at(self.hist, idx, 1)

    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    def quantile(self, q: float) -> float:
        if not self.n:
            return math.nan
        if self.hist is None:
            return float(np.quantile(np.concatenate(self.parts), q))
        cum = np.cumsum(self.hist)
        i = int(np.searchsorted(cum, q * (self.n - 1) + 1))
        return 0.0 if i == 0 else _LO * _GROWTH ** i


class MetricsAccumulator:
    def __init__(self, exact_limit: int = EXACT_LIMIT):
        self.tasks = 0
        self.counts = {"finished": 0, "failed": 0, "infeasible": 0, "lost": 0}
        self.first_submit = math.inf
        self.last_finish = -math.inf
        self.spilled = 0
        self.bytes = 0
        self.latency = _Quantiles(exact_limit)
        self.queue = _Quantiles(exact_limit)
        self.pred_n = 0
        self.pred_abs = 0.0
        self.pred_signed = 0.0
        self.pred_actual = 0.0

    def add_frame(self, df: pd.DataFrame) -> None:
        """Take a chunk of Trace rows as a DataFrame."""
        self.add_columns({c: df[c].to_numpy() for c in df.columns})

    def add_columns(self, df) -> None:
        """Take a chunk of Trace rows as a mapping column -> numpy array."""
        n = len(df["state"])
        if n == 0:
            return
        self.tasks += n
        state = np.asarray(df["state"])
        for k in self.counts:
            self.counts[k] += int((state == k).sum())
        sub = np.asarray(df["submitted_s"], float)
        fin = np.asarray(df["finished_s"], float)
        done = state == "finished"
        if np.isfinite(sub).any():
            self.first_submit = min(self.first_submit, float(np.nanmin(sub)))
        if done.any():
            self.last_finish = max(self.last_finish, float(fin[done].max()))
            self.latency.add(fin[done] - sub[done])
            wait = (np.asarray(df["started_s"], float) - np.asarray(df["placed_s"], float))[done]
            self.queue.add(wait)
            pred = np.asarray(df["predicted_wait_s"], float)[done]
            has = np.isfinite(pred)
            if has.any():
                self.pred_n += int(has.sum())
                d = pred[has] - wait[has]
                self.pred_abs += float(np.abs(d).sum())
                self.pred_signed += float(d.sum())
                self.pred_actual += float(wait[has].sum())
        self.spilled += int(np.asarray(df["spilled"], bool).sum())
        self.bytes += int(np.asarray(df["bytes_transferred"], np.int64).sum())

    def result(self) -> dict[str, float]:
        fin = self.counts["finished"]
        makespan = self.last_finish - self.first_submit if fin else math.nan
        nan = math.nan
        pred_mae = self.pred_abs / self.pred_n if self.pred_n else nan
        mean_actual = self.pred_actual / self.pred_n if self.pred_n else nan
        return {
            "tasks": self.tasks,
            **{k: v for k, v in self.counts.items()},
            "makespan_s": makespan,
            "throughput_per_s": fin / makespan if fin and makespan > 0 else nan,
            "latency_mean_s": self.latency.mean(),
            "latency_p50_s": self.latency.quantile(0.50),
            "latency_p95_s": self.latency.quantile(0.95),
            "latency_p99_s": self.latency.quantile(0.99),
            "queue_delay_mean_s": self.queue.mean(),
            "queue_delay_p99_s": self.queue.quantile(0.99),
            "spilled_fraction": self.spilled / self.tasks if self.tasks else nan,
            "bytes_transferred": self.bytes,
            "pred_count": self.pred_n,
            "pred_mae_s": pred_mae,
            "pred_bias_s": self.pred_signed / self.pred_n if self.pred_n else nan,
            "pred_rel_error": pred_mae / mean_actual if self.pred_n and mean_actual > 0 else nan,
        }
