"""Whole-experiment validation: every section, every sweep point, every policy, before anything runs.

``load_experiment(path, overrides)`` returns an :class:`Experiment` whose ``points`` are
fully resolved configs (every default filled in). Anything wrong is a ConfigError naming
the file and the key.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import config as C
from ..core.errors import ConfigError
from ..policy.build import build_policies  # noqa: F401  (re-exported: callers import it from here)
from ..workloads import parse_workload
from ..workloads.spec import FIELDS as WORKLOAD_FIELDS


#: between a sweep point's label and its study variant's suffix (``<point> · <variant>``)
VARIANT_SEP = " · "


def factor_column(group: str) -> str:
    """runs.csv column of a case group's (or linked axis's) labels (``""``: the ungrouped
    ``[[sweep.cases]]``)."""
    return f"case_{group}" if group else "case"


@dataclass
class Point:
    #: human label of the sweep point ("" when there is no sweep)
    label: str
    #: the swept keys and their values at this point
    overrides: dict[str, Any]
    #: the resolved config (all sections, defaults filled)
    config: dict[str, Any]
    #: the point's case label per case group (config.sweep_factors; "" = the ungrouped list)
    factors: dict[str, str] = field(default_factory=dict)


@dataclass
class Experiment:
    name: str
    path: str
    #: resolved config without the sweep applied (what config.toml records, with [sweep])
    resolved: dict[str, Any]
    points: list[Point] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return list(self.resolved["run"]["seeds"])

    @property
    def study(self) -> str:
        return self.resolved["run"]["study"]


def resolve(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate one concrete config (no sweep applied) and fill its defaults."""
    C.check_sections(raw)
    out = C.validate_core(raw)
    spec = parse_workload(raw.get("workload", {}), "workload")
    _check_horizon(spec, out["run"]["max_sim_time_s"])
    out["workload"] = spec.to_dict()
    check_policies(out)
    if out["run"]["trace_out"] == "parquet":
        import importlib.util
        if importlib.util.find_spec("pyarrow") is None:
            raise ConfigError("'parquet' needs pyarrow, which is not installed; use 'csv' (or pip install pyarrow)",
                              key="run.trace_out")
    from . import studies
    if out["run"]["study"] not in studies.STUDIES:
        raise ConfigError(f"unknown study {out['run']['study']!r}; known: {', '.join(studies.STUDIES)}",
                          key="run.study")
    return out


def _check_horizon(spec, horizon: float) -> None:
    """Refuse a workload whose jobs could not arrive, or whose tasks could not finish, within
    ``run.max_sim_time_s``: a run of it would tick heartbeats until that horizon (1e7 s by
    default: hours of wall time) and end with nothing done."""
    if spec.arrival == "poisson" and 1.0 / spec.rate_per_s > horizon:
        raise ConfigError(f"a driver's mean gap between jobs, 1 / rate = {1.0 / spec.rate_per_s:.3g} s, is "
                          f"beyond run.max_sim_time_s ({horizon:.3g} s): no job would arrive", key="workload.rate_per_s")
    for f in spec.functions:
        if f.duration.mean() > horizon:
            raise ConfigError(f"function {f.name!r}: mean task time {f.duration.mean():.3g} s is beyond "
                              f"run.max_sim_time_s ({horizon:.3g} s): no task would finish", key="workload.duration")


def check_policies(cfg: dict[str, Any]) -> None:
    """Build every policy once so a bad name or argument fails before the run."""
    build_policies(cfg["scheduler"])


def _calibration_from_cwd(raw: dict[str, Any], overrides: list[str]) -> None:
    """A ``--set cluster.calibration=FILE`` path is the command line's: relative to the current folder."""
    if any(o.partition("=")[0].strip() == "cluster.calibration" for o in overrides):
        name = raw.get("cluster", {}).get("calibration")
        if isinstance(name, str) and name and not Path(name).is_absolute():
            raw["cluster"]["calibration"] = str(Path(name).resolve())


def _absolute_trace_file(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """``workload.trace_file`` relative to ``base`` (the config file's folder) made absolute, so
    every process that parses the workload reads the same file."""
    wl = raw.get("workload")
    name = wl.get("trace_file") if isinstance(wl, dict) else None
    if isinstance(name, str) and name and not Path(name).is_absolute():
        raw = dict(raw, workload=dict(wl, trace_file=str((base / name).resolve())))
    return raw


def _sweepable(resolved: dict[str, Any]) -> dict[str, Any]:
    """The keys a sweep may set: the resolved config's, and the [workload] tables it leaves
    out when unset (shift, drift; a trace's duration, ...), so a case can add them whole."""
    wl = dict(resolved.get("workload", {}))
    for k, f in WORKLOAD_FIELDS.items():
        if k not in wl and dict in f.types:
            wl[k] = {}
    return {**resolved, "workload": wl}


def load_experiment(path: str | Path, overrides: list[str] | None = None,
                    max_runs: int | None = None) -> Experiment:
    """Load, override, validate and expand a config; more than ``max_runs`` runs (points x
    variants x seeds) is a ConfigError, raised before the points are resolved."""
    path = str(path)
    try:
        raw = C.load_toml(path)
        raw = C.apply_overrides(raw, overrides or [])
        _calibration_from_cwd(raw, overrides or [])
        sweep = raw.pop("sweep", None)
        base = Path(path).parent
        # a --set workload.trace_file path is the command line's (the current folder's)
        set_trace = any(o.partition("=")[0].strip() == "workload.trace_file" for o in overrides or [])
        raw = _absolute_trace_file(raw, Path.cwd() if set_trace else base)
        resolved = resolve(C.apply_calibration(raw, base))
        from . import studies
        study = studies.STUDIES[resolved["run"]["study"]]
        per_point = len(resolved["run"]["seeds"]) * max(len(study.variants), 1)
        try:
            expanded = C.sweep_expand(sweep, _sweepable(resolved), None if max_runs is None else max_runs // per_point)
        except C.SweepTooLarge as exc:
            raise _too_many_runs(exc.points, study, resolved, max_runs) from None
        if max_runs is not None and len(expanded) * per_point > max_runs:
            raise _too_many_runs(len(expanded), study, resolved, max_runs)
        points = []
        for label, over, factors in expanded:
            # a study may run each point in several variants (e.g. on both engines)
            for suffix, extra in study.variants or (("", {}),):
                lbl = f"{label}{VARIANT_SEP}{suffix}" if label and suffix else label or suffix
                over_v = {**over, **extra}
                cfg = _absolute_trace_file(C.apply_calibration(C.apply_point(raw, over_v, resolved), base), base)
                try:
                    point = Point(lbl, over_v, resolve(cfg), dict(factors))
                    study.check_config(point.config, lbl)
                except ConfigError as exc:
                    raise ConfigError(f"at sweep point [{lbl}]: {exc.message}", key=exc.key) from None
                points.append(point)
        if sweep:
            resolved["sweep"] = copy.deepcopy(sweep)
    except ConfigError as exc:
        raise exc.with_file(path) from None
    return Experiment(Path(path).stem, path, resolved, points)


def _too_many_runs(points: int, study, resolved: dict[str, Any], max_runs: int) -> ConfigError:
    seeds = len(resolved["run"]["seeds"])
    variants = f" x {len(study.variants)} variants" if study.variants else ""
    runs = points * max(len(study.variants), 1) * seeds
    return ConfigError(f"{points:,} point(s){variants} x {seeds:,} seed(s) = {runs:,} runs, more than the limit "
                       f"of {max_runs:,}; pass --max-runs {runs} to run them all",
                       key="sweep" if points > 1 else "run.seeds")
