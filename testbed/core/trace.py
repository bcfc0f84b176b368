"""The Trace: one row per task attempt, the same columns in both engines.

Engines append rows to a :class:`TraceRecorder`. It keeps every row (a pandas
DataFrame, ``keep_rows=True``) and/or streams them into a
:class:`~testbed.core.metrics.MetricsAccumulator`, so a 10M-task run can keep
aggregates in flat memory instead of 10M rows. Metrics are computed only from rows
(``metrics_from_trace`` runs the same accumulator over a DataFrame), so they do not
depend on the engine.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

# pandas (and the metrics built on it) load on first use, not on import: the runtime's
# processes import this module for TraceRow and must start fast

#: column -> (dtype, meaning). Times are seconds from the run's start.
COLUMNS: dict[str, tuple[str, str]] = {
    "task_id": ("int64", "workload-wide task number"),
    "job_id": ("int64", "the job (unit of submission) the task belongs to"),
    "function": ("object", "remote function name"),
    "submitter": ("int64", "node whose local scheduler received the task"),
    "node": ("int64", "node that ran (or was to run) the attempt; -1 if never placed"),
    "submitted_s": ("float64", "when the driver submitted the task"),
    "placed_s": ("float64", "when a scheduler decided where it runs (inputs ready)"),
    "started_s": ("float64", "when it started computing (inputs local)"),
    "finished_s": ("float64", "when the attempt ended"),
    "spilled": ("bool", "forwarded to the global scheduler by the local one"),
    "predicted_wait_s": ("float64", "wait the placement policy predicted (NaN: none)"),
    "bytes_transferred": ("int64", "input bytes copied to the node for this attempt"),
    "attempt": ("int64", "1 for the first attempt, 2 for the first re-execution, ..."),
    "state": ("object", "final state of the attempt: finished, failed, lost, infeasible"),
}
NAMES = tuple(COLUMNS)

#: One Trace row with named fields (``NAMES``, in order): the one row constructor both
#: engines use. Build it by keyword (``TraceRow(task_id=..., state=...)``); only the
#: simulator's per-task finish row is a plain tuple in the same order, to keep its speed
#: (a test checks that its columns read back by name). It is a tuple, so a list of rows is what :func:`rows_to_columns` takes, and it
#: pickles (the runtime's node managers send rows to the GCS).
TraceRow = NamedTuple("TraceRow", [(name, object) for name in NAMES])
TraceRow.__doc__ = "One Trace row: " + ", ".join(NAMES) + " (see COLUMNS)."

#: rows buffered before they are flushed to the accumulator / frame chunks
FLUSH_ROWS = 16384


class TraceRecorder:
    """Collects rows (:class:`TraceRow`, or tuples in ``NAMES`` order) from an engine."""

    def __init__(self, keep_rows: bool = True):
        from .metrics import MetricsAccumulator
        self.keep_rows = keep_rows
        self.metrics = MetricsAccumulator()
        #: rows not flushed yet (engines may append to it directly and call flush())
        self.buf: list[tuple] = []
        self._chunks: list = []
        #: rows recorded so far
        self.n_rows = 0

    def add(self, row: tuple) -> None:
        self.buf.append(row)
        if len(self.buf) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        cols = rows_to_columns(self.buf)
        self.n_rows += len(self.buf)
        self.buf.clear()
        self.metrics.add_columns(cols)
        if self.keep_rows:
            import pandas as pd
            self._chunks.append(pd.DataFrame(cols, columns=list(NAMES)))

    def frame(self) -> pd.DataFrame | None:
        """Every row, in recording order (None if rows were not kept)."""
        self.flush()
        if not self.keep_rows:
            return None
        if not self._chunks:
            return empty_frame()
        if len(self._chunks) > 1:
            import pandas as pd
            self._chunks = [pd.concat(self._chunks, ignore_index=True)]
        return self._chunks[0]

    def summary(self) -> dict[str, float]:
        self.flush()
        return self.metrics.result()


def rows_to_columns(rows: list[tuple]) -> dict[str, np.ndarray]:
    """Row tuples (in ``NAMES`` order) -> one numpy array per column."""
    cols = list(zip(*rows)) if rows else [() for _ in NAMES]
    return {name: np.array(col, dtype=COLUMNS[name][0]) for name, col in zip(NAMES, cols)}


def rows_to_frame(rows: list[tuple]) -> pd.DataFrame:
    import pandas as pd
    return pd.DataFrame(rows_to_columns(rows), columns=list(NAMES))


def empty_frame() -> pd.DataFrame:
    return rows_to_frame([])


def metrics_from_trace(df: pd.DataFrame) -> dict[str, float]:
    """Headline metrics of a Trace (see :mod:`testbed.core.metrics`)."""
    from .metrics import MetricsAccumulator
    acc = MetricsAccumulator()
    acc.add_frame(df)
    return acc.result()
