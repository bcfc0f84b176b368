"""Resuming an experiment: run only the points x seeds a results folder lacks.

``testbed run CONFIG --resume DIR`` reads ``DIR/config.toml`` and ``DIR/runs.csv`` (a finished,
interrupted or smaller-seeded run of the same config), runs the (point, seed) pairs that have
no row in ``DIR/runs.csv``, and writes the combined result to a new folder (``--out`` or the
default); ``DIR`` is left as it is.

The same config means the same resolved config (every default filled in, the same sweep, so
point i is the same point in both) except ``run.seeds``: a resume may add seeds. The combined
result covers the union of ``DIR``'s seeds and the config's. Anything else that differs is a
one-line refusal naming the first differing key.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import tomli_w

from ..core.errors import TestbedError
from .experiment import Experiment


class ResumeError(TestbedError):
    pass


@dataclass
class Resume:
    #: the folder resumed from
    dir: Path
    #: the experiment to run: the config's, with run.seeds = DIR's seeds and the config's
    experiment: Experiment
    #: DIR's runs.csv rows (every column as read)
    runs: pd.DataFrame
    #: the (point, seed) pairs DIR already has
    done: set[tuple[int, int]]
    #: DIR/timeseries.csv, if it has one
    timeseries: pd.DataFrame | None

    @property
    def planned(self) -> int:
        return len(self.experiment.points) * len(self.experiment.seeds)

    @property
    def missing(self) -> list[tuple[int, int]]:
        """(point, seed) pairs to run, in the order a full run would."""
        return [(i, s) for i in range(len(self.experiment.points)) for s in self.experiment.seeds
                if (i, s) not in self.done]

    def trace_files(self) -> list[Path]:
        """DIR's per-run Trace files (run.trace_out), copied into the combined result."""
        return sorted(p for p in self.dir.glob("trace-*-*.*") if p.suffix in (".csv", ".parquet"))


def _normal(resolved: dict[str, Any]) -> dict[str, Any]:
    """A resolved config as config.toml records it (so a tuple equals a list)."""
    return tomllib.loads(tomli_w.dumps(resolved))


def _first_difference(a: Any, b: Any, path: tuple = ()) -> tuple | None:
    """The key path of the first value that differs between ``a`` and ``b`` (None: equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in a or k not in b:
                return path + (k,)
            d = _first_difference(a[k], b[k], path + (k,))
            if d is not None:
                return d
        return None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    return None if a == b else path


_NOT_SET = type("NotSet", (), {"__repr__": lambda self: "not set"})()


def _lookup(cfg: dict, path: tuple) -> Any:
    node: Any = cfg
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return _NOT_SET
        node = node[p]
    return node


def _short(v: Any, limit: int = 60) -> str:
    text = repr(v).replace("\n", " ")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_resume(exp: Experiment, directory: str | Path) -> Resume:
    """Check ``directory`` against ``exp`` and say what it already has; any problem is one
    ResumeError line naming ``--resume DIR``."""
    d = Path(directory)
    where = f"--resume {directory}"
    if not d.is_dir():
        raise ResumeError(f"{where}: {'no such folder' if not d.exists() else 'not a folder'}")
    for name in ("config.toml", "runs.csv"):
        if not (d / name).is_file():
            raise ResumeError(f"{where}: no {name} (not a results folder of testbed run)")
    try:
        theirs = tomllib.loads((d / "config.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ResumeError(f"{where}: cannot read config.toml: {str(exc).splitlines()[0]}") from None
    ours = _normal(exp.resolved)
    a = {k: v for k, v in theirs.items()}
    b = {k: v for k, v in ours.items()}
    for cfg in (a, b):
        if isinstance(cfg.get("run"), dict):
            cfg["run"] = {k: v for k, v in cfg["run"].items() if k != "seeds"}
    diff = _first_difference(a, b)
    if diff is not None:
        raise ResumeError(f"{where}: its config differs from {exp.path} at {'.'.join(diff) or 'the top'} "
                          f"({_short(_lookup(a, diff))} there, {_short(_lookup(b, diff))} here); "
                          f"resume only with the same config (run.seeds may differ)")
    try:
        runs = pd.read_csv(d / "runs.csv", converters={"label": str})   # "" stays "", "1e3" stays text
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ResumeError(f"{where}: cannot read runs.csv: {str(exc).splitlines()[0]}") from None
    if not {"point", "seed"} <= set(runs.columns):
        raise ResumeError(f"{where}: runs.csv has no point and seed columns")
    done: set[tuple[int, int]] = set()
    n_points = len(exp.points)
    for row_no, (p, s, label) in enumerate(zip(runs["point"], runs["seed"],
                                               runs["label"] if "label" in runs else [None] * len(runs)), 2):
        try:
            i, seed = int(p), int(s)
            if i != p or seed != s:
                raise ValueError
        except (TypeError, ValueError):
            raise ResumeError(f"{where}: runs.csv line {row_no}: point and seed must be integers, "
                              f"got {p!r}, {s!r}") from None
        if not 0 <= i < n_points:
            raise ResumeError(f"{where}: runs.csv line {row_no}: point {i}, but the config has {n_points} point(s)")
        mine = exp.points[i].label
        if label is not None and str(label) != mine:
            raise ResumeError(f"{where}: runs.csv line {row_no}: point {i} is {str(label)!r} there, {mine!r} here")
        if (i, seed) in done:
            raise ResumeError(f"{where}: runs.csv line {row_no}: point {i}, seed {seed} appears twice")
        done.add((i, seed))
    their_seeds = theirs.get("run", {}).get("seeds", []) if isinstance(theirs.get("run"), dict) else []
    # the config's seeds in its order, then any DIR has beyond them
    seeds = list(dict.fromkeys(exp.seeds + [int(s) for s in their_seeds] + sorted({s for _, s in done})))
    resolved = dict(exp.resolved)
    resolved["run"] = {**exp.resolved["run"], "seeds": seeds}
    combined = dataclasses.replace(exp, resolved=resolved)
    ts = None
    if (d / "timeseries.csv").is_file():
        try:
            ts = pd.read_csv(d / "timeseries.csv")
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise ResumeError(f"{where}: cannot read timeseries.csv: {str(exc).splitlines()[0]}") from None
    return Resume(d, combined, runs, done, ts)
