"""Run every sweep point x seed, in parallel processes, and write the results folder.

Layout of ``DIR`` (default ``results/<config name>/<timestamp>/``)::

    config.toml   the resolved config, every default filled in (plus [sweep])
    runs.csv      one row per point x seed: label, swept keys, seed, metrics, engine facts
    *.png         the study's figures
    summary.md    headline table (paper's values beside ours where the study has them)

The folder is written under a temporary name and renamed when complete, so a failed run
leaves nothing half-written. Ctrl-C keeps what finished, in ``<DIR>-interrupted``.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import tomli_w

from ..core.errors import TestbedError
from .experiment import Experiment, Point


class RunFailed(TestbedError):
    pass


def _one(args: tuple[int, Point, int]) -> dict[str, Any]:
    i, point, seed = args
    from .execute import run_once
    res = run_once(point.config, seed, keep_rows=False)
    c = point.config["cluster"]
    row: dict[str, Any] = {"point": i, "label": point.label}
    for k, v in point.overrides.items():
        row[k] = _flat(v)
    row["seed"] = seed
    row["nodes"] = sum(g["count"] for g in c["node_groups"]) if c["node_groups"] else c["nodes"]
    row.update(res.metrics)
    row.update({f"engine_{k}": v for k, v in res.info.items()})
    return row


def _flat(v: Any) -> Any:
    if isinstance(v, dict):
        name = v.get("name", "")
        args = ", ".join(f"{k}={x}" for k, x in v.items() if k != "name")
        return f"{name}({args})" if args else str(name)
    if isinstance(v, list):
        return str(v)
    return v


def default_out_dir(exp: Experiment, root: str | Path = "results") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / exp.name / stamp


def run_experiment(exp: Experiment, out: Path, jobs: int | None = None, progress: bool = True) -> Path:
    """Run all points x seeds; write ``out``; return it. Raises KeyboardInterrupt after
    saving partial results (the caller reports where)."""
    from . import studies
    study = studies.STUDIES[exp.study]
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunFailed(f"{out}: already exists and is not empty; choose another --out")
    tasks = [(i, p, s) for i, p in enumerate(exp.points) for s in exp.seeds]
    jobs = jobs or min(len(tasks), os.cpu_count() or 1)
    tmp = out.parent / f".{out.name}.partial"
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    interrupted = False
    bar = _bar(len(tasks), exp.name, progress)
    try:
        if jobs <= 1 or len(tasks) == 1:
            for t in tasks:
                rows.append(_one(t))
                bar.update(1)
        else:
            ctx = multiprocessing.get_context("fork")
            with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                futs = [pool.submit(_one, t) for t in tasks]
                try:
                    for f in cf.as_completed(futs):
                        rows.append(f.result())
                        bar.update(1)
                except BaseException:
                    for f in futs:
                        f.cancel()
                    for p in list(getattr(pool, "_processes", {}).values()):
                        p.terminate()
                    raise
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    if interrupted:
        out = out.parent / f"{out.name}-interrupted"
    _write(exp, study, rows, tmp, wall, len(tasks), interrupted)
    if out.exists():
        shutil.rmtree(out) if out.is_dir() and not any(out.iterdir()) else None
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    if interrupted:
        raise KeyboardInterrupt(str(out))
    return out


def _write(exp: Experiment, study, rows: list[dict], tmp: Path, wall: float, planned: int, interrupted: bool) -> None:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / "config.toml").write_text(
        f"# resolved config of {exp.path} (every default filled in)\n" + tomli_w.dumps(exp.resolved))
    runs = pd.DataFrame(rows)
    if len(runs):
        runs = runs.sort_values(["point", "seed"], kind="stable").reset_index(drop=True)
    runs.to_csv(tmp / "runs.csv", index=False)
    figures: list[str] = []
    if len(runs):
        figures = study.figures(runs, exp, tmp)
    head = [f"# {exp.name}", "",
            f"Config: `{exp.path}` · study: `{exp.study}` · engine: `{exp.resolved['run']['engine']}` · "
            f"seeds: {exp.seeds} · {len(runs)} of {planned} runs in {wall:.1f} s wall",
            ""]
    if interrupted:
        head += [f"**Interrupted**: {len(runs)} of {planned} runs finished; the tables cover those only.", ""]
    body = study.summary(runs, exp) if len(runs) else "No run finished."
    figs = "".join(f"\n![{f}]({f})\n" for f in figures)
    (tmp / "summary.md").write_text("\n".join(head) + body + "\n" + figs)


class _NoBar:
    def update(self, n): pass
    def close(self): pass


def _bar(total: int, name: str, progress: bool):
    if not progress:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=name, unit="run", file=sys.stderr, leave=False)
