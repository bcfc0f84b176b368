"""Trace files: a CSV of tasks to replay (``workload.shape = "trace"``).

One row per task, each its own job (job j is the file's j-th data row), with a header line
naming the columns (any order)::

    arrival_s,function,duration_s,cpus,gpus,output_bytes
    0.000,map,0.0213,1,0,1048576
    0.004,reduce,0.3100,2,0,0

==============  =========  ======================================================
column          default    meaning
==============  =========  ======================================================
``arrival_s``   required   submission time, seconds from the trace's start (>= 0,
                           non-decreasing down the file)
``function``    required   function name (estimators keyed by function use it)
``duration_s``  required   run time on a node of speed 1, seconds (>= 0)
``cpus``        1          CPUs the task holds while it runs (>= 0)
``gpus``        0          GPUs it holds (>= 0)
``output_bytes`` 0         size of its result, bytes (>= 0, rounded to an integer)
==============  =========  ======================================================

Blank lines and lines starting with ``#`` are skipped. Anything wrong — a missing file,
an unknown or missing column, a line with the wrong number of fields, a value that is not
a number, negative, not finite, or an arrival before the previous row's — is one
:class:`~testbed.core.errors.ConfigError` naming the file, the line and the column.

A file is read once per version (path, modification time, size): every sweep point and
every driver process of the real runtime parses the workload again.
"""
from __future__ import annotations

import csv
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError

#: column -> default (None: required), in the order the docs list them
COLUMNS: dict[str, float | str | None] = {
    "arrival_s": None, "function": None, "duration_s": None,
    "cpus": 1.0, "gpus": 0.0, "output_bytes": 0.0,
}
_NUMERIC = ("arrival_s", "duration_s", "cpus", "gpus", "output_bytes")


@dataclass(frozen=True, eq=False)
class TraceTable:
    """The rows of a trace file as arrays (row j = job j)."""
    #: the file as given (resolved to an absolute path by the experiment loader)
    path: str
    #: submission times, seconds, non-decreasing
    arrival_s: np.ndarray
    #: function index of each row, into ``functions``
    fn: np.ndarray
    #: run time, seconds
    duration_s: np.ndarray
    #: result size, bytes (int64)
    output_bytes: np.ndarray
    #: resource-demand index of each row, into ``demands``
    demand: np.ndarray
    #: function names in order of first appearance
    functions: tuple[str, ...]
    #: the distinct resource demands, each (name, amount) pairs sorted by name, no zeros
    demands: tuple[tuple[tuple[str, float], ...], ...]

    def __len__(self) -> int:
        return len(self.arrival_s)

    def mean_durations(self) -> dict[str, float]:
        """Each function's mean duration over the file, seconds."""
        sums = np.bincount(self.fn, weights=self.duration_s, minlength=len(self.functions))
        counts = np.bincount(self.fn, minlength=len(self.functions))
        return {f: float(sums[i] / counts[i]) for i, f in enumerate(self.functions)}

    def counts(self) -> dict[str, int]:
        """Rows per function."""
        counts = np.bincount(self.fn, minlength=len(self.functions))
        return {f: int(counts[i]) for i, f in enumerate(self.functions)}


def read_trace(path: str | Path) -> TraceTable:
    """Read and check a trace file (cached per file version); errors name file, line, column."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError("no such trace file", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read trace file: {exc.strerror}", file=str(path)) from None
    if not p.is_file():
        raise ConfigError("is not a regular file (a trace file is a CSV)", file=str(path))
    return _read(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _read(path: str, _mtime: int, _size: int) -> TraceTable:
    def bad(line: int, column: str | None, what: str) -> ConfigError:
        where = f"line {line}" + (f", column {column}" if column else "")
        return ConfigError(f"{where}: {what}", file=path)

    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read trace file: {exc.strerror}", file=path) from None
    with fh:
        reader = csv.reader(_data_lines(fh))
        header = None
        cols: dict[str, list] = {}
        try:
            for fields in reader:
                line = reader.line_num
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue                        # a blank line
                if header is None:
                    header = [h.strip() for h in fields]
                    for h in header:
                        if h not in COLUMNS:
                            raise bad(line, h, f"unknown column; columns: {', '.join(COLUMNS)}")
                    if len(set(header)) != len(header):
                        dup = next(h for h in header if header.count(h) > 1)
                        raise bad(line, dup, "column given twice")
                    for c, default in COLUMNS.items():
                        if default is None and c not in header:
                            raise bad(line, c, "required column is missing")
                    cols = {c: [] for c in header}
                    header_line = line
                    continue
                if len(fields) != len(header):
                    raise bad(line, None, f"expected {len(header)} fields ({','.join(header)}), got {len(fields)}")
                for c, text in zip(header, fields):
                    text = text.strip()
                    if c == "function":
                        if not text:
                            raise bad(line, c, "must be a non-empty name")
                        cols[c].append(text)
                        continue
                    try:
                        v = float(text)
                    except ValueError:
                        raise bad(line, c, f"expected a number, got {text!r}") from None
                    if not math.isfinite(v) or v < 0:
                        raise bad(line, c, f"must be >= 0 and finite, got {text!r}")
                    if c == "arrival_s" and cols[c] and v < cols[c][-1]:
                        raise bad(line, c, f"arrival {text} is before the previous row's ({cols[c][-1]:g}); "
                                           f"sort the file by arrival_s")
                    cols[c].append(v)
        except csv.Error as exc:
            raise bad(reader.line_num, None, f"malformed CSV: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError("not UTF-8 text", file=path) from None
    if header is None:
        raise ConfigError("empty trace file: needs a header line and at least one row", file=path)
    n = len(cols["arrival_s"])
    if n == 0:
        raise bad(header_line, None, "no rows after the header")

    def column(c: str) -> np.ndarray:
        return np.asarray(cols[c], dtype=np.float64) if c in cols else np.full(n, COLUMNS[c], dtype=np.float64)

    names: dict[str, int] = {}
    fn = np.fromiter((names.setdefault(f, len(names)) for f in cols["function"]), dtype=np.intp, count=n)
    cpus, gpus = column("cpus"), column("gpus")
    demands: dict[tuple, int] = {}
    demand = np.empty(n, dtype=np.intp)
    for i, (c, g) in enumerate(zip(cpus.tolist(), gpus.tolist())):
        key = tuple((k, v) for k, v in (("CPU", c), ("GPU", g)) if v > 0)
        demand[i] = demands.setdefault(key, len(demands))
    out = np.rint(np.minimum(column("output_bytes"), float(2 ** 62))).astype(np.int64)
    return TraceTable(path=path, arrival_s=column("arrival_s"), fn=fn, duration_s=column("duration_s"),
                      output_bytes=out, demand=demand, functions=tuple(names), demands=tuple(demands))


def _data_lines(fh):
    """The file's lines without comments; blank lines become empty (the reader skips them),
    so ``line_num`` stays the file's line number."""
    for text in fh:
        yield "\n" if text.lstrip().startswith("#") else text
