"""Run every sweep point x seed, in parallel processes, and write the results folder.

Where the runs execute is :mod:`.executors`' business (a local process pool, or a Dask
cluster); the folder is the same whichever ran them.

Layout of ``DIR`` (default ``results/<config name>/<timestamp>/``)::

    config.toml   the resolved config, every default filled in (plus [sweep])
    runs.csv      one row per point x seed: label, swept keys, seed, metrics, engine facts
    trace-<point>-<seed>.csv|.parquet   with run.trace_out: that run's Trace (core.trace.COLUMNS)
    *.png         the study's figures
    summary.md    headline table (paper's values beside ours where the study has them)

The folder is written under a temporary name and renamed when complete, so a failed run
leaves nothing half-written. Ctrl-C keeps what finished, in ``<DIR>-interrupted``. Before
anything runs, a probe file is written where ``DIR`` will be made; if writing the folder
fails at the end (a full disk), the finished runs are saved, as ``runs.csv`` and
``config.toml``, in ``<DIR>-incomplete`` (or in the system's temporary folder), and the
one-line error says where.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import tomli_w

from ..core.errors import TestbedError, printable
from .executors import make_executor, parse_executor
from .experiment import Experiment, Point, factor_column
from .resume import Resume


class RunFailed(TestbedError):
    pass


def _one(args: tuple[int, Point, int]) -> dict[str, Any]:
    i, point, seed = args
    from . import studies
    from .execute import run_once
    study = studies.STUDIES[point.config["run"]["study"]]
    trace_out = point.config["run"]["trace_out"]
    res = run_once(point.config, seed, keep_rows=True if trace_out != "none" else study.keeps_rows(point.config))
    c = point.config["cluster"]
    row: dict[str, Any] = {"point": i, "label": point.label}
    for g, lbl in point.factors.items():     # the case of each case group: "case" / "case_<group>"
        row[factor_column(g)] = lbl
    for k, v in point.overrides.items():
        row[k] = _flat(v)
    row["seed"] = seed
    row["nodes"] = sum(g["count"] for g in c["node_groups"]) if c["node_groups"] else c["nodes"]
    row.update(res.metrics)
    row.update({f"engine_{k}": v for k, v in res.info.items() if not isinstance(v, (list, dict))})
    row.update(study.run_metrics(res.trace, res.info, point.config))
    if trace_out != "none" and res.trace is not None:
        row["_trace"] = (f"trace-{i}-{seed}.{trace_out}", res.trace)
    if study.wants_trace:
        ts = study.timeseries(res.trace, res.info, point.config)
        if ts is not None:
            row["_timeseries"] = ts.assign(point=i, label=point.label, seed=seed).to_dict("records")
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
    """``results/<name>/<timestamp>``, with ``-2``, ``-3``... if that second is taken."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / exp.name / stamp
    return _unique(base)


def _unique(path: Path) -> Path:
    if not path.exists() and not (path.parent / f".{path.name}.partial").exists():
        return path
    i = 2
    while True:
        cand = path.with_name(f"{path.name}-{i}")
        if not cand.exists() and not (cand.parent / f".{cand.name}.partial").exists():
            return cand
        i += 1


#: bytes the probe writes where the results folder will be (a full disk fails it)
PROBE_BYTES = 64 * 1024


def check_out_dir(out: Path) -> None:
    """Refuse, before anything runs, an output folder that cannot be made or is in use:
    a probe file is written (and removed) in the nearest folder that exists."""
    name = printable(str(out))
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            what = "is a file" if not out.is_dir() else "already exists and is not empty"
            raise RunFailed(f"--out {name}: {what}; choose another folder")
        for parent in [out, *out.parents]:
            if parent.exists():
                if not parent.is_dir():
                    raise RunFailed(f"--out {name}: {printable(str(parent))} is a file, not a folder")
                _probe(parent)
                break
    except OSError as exc:
        raise RunFailed(f"--out {name}: cannot write there: {exc.strerror or exc}") from None
    except ValueError as exc:             # a NUL byte in the path
        raise RunFailed(f"--out {name}: {exc}") from None


def _probe(folder: Path) -> None:
    """Write PROBE_BYTES to a hidden file in ``folder`` and remove it (raises OSError)."""
    import tempfile
    fd, probe = tempfile.mkstemp(prefix=".testbed-probe-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    finally:
        os.unlink(probe)


def run_experiment(exp: Experiment, out: Path, jobs: int | None = None, progress: bool = True,
                   resume: "Resume | None" = None, executor: str = "local") -> Path:
    """Run all points x seeds; write ``out``; return it. On Ctrl-C, save what finished in
    ``<out>-interrupted`` and raise KeyboardInterrupt(that folder). With ``resume``
    (:func:`.resume.load_resume`), run only the pairs its folder lacks and write the combined
    result (``exp`` is then ``resume.experiment``). ``executor`` says where the runs go
    (:mod:`.executors`: ``local``, ``dask`` or ``dask://HOST:PORT``); the folder is the same."""
    from . import studies
    study = studies.STUDIES[exp.study]
    out = Path(out)
    parse_executor(executor)      # a bad --executor fails before anything is checked or started
    check_out_dir(out)
    done = resume.done if resume is not None else set()
    tasks = [(i, p, s) for i, p in enumerate(exp.points) for s in exp.seeds if (i, s) not in done]
    cores = os.cpu_count() or 1
    jobs = max(1, min(jobs or cores, len(tasks), cores))   # more processes than runs or cores cannot help
    if any(p.config["run"]["engine"] == "real" for p in exp.points):
        if executor != "local":
            raise RunFailed(f"--executor {executor}: this sweep has points on engine 'real', each of which "
                            f"starts a runtime cluster on the machine it runs on; run it with the local executor")
        jobs = 1          # each real run starts a whole cluster on this machine: one at a time
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    interrupted = False
    bar = _NoBar()
    try:
        # starts (or connects to) the workers; leaving stops them and cancels what has not run
        with make_executor(executor, jobs, len(tasks)) as ex:
            bar = _bar(len(tasks), exp.name, progress)
            for row in ex.results(_guarded, tasks):
                rows.append(row)
                bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    if interrupted:
        out = _unique(out.with_name(f"{out.name}-interrupted"))
    # Writing takes a second or two; a Ctrl-C now would leave a half-written folder, so
    # it waits until the folder is complete (and renamed into place) instead.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
    tmp = out.parent / f".{out.name}.partial"
    try:
        _write(exp, study, rows, tmp, wall, len(tasks) + len(done), interrupted, resume)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()           # checked empty above
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, Exception) and not isinstance(exc, TestbedError):
            if os.environ.get("TESTBED_DEBUG"):
                raise
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
            kept = _save_finished(exp, rows, out) if rows else "no run had finished"
            raise RunFailed(f"writing {printable(str(out))} failed ({why}); {kept}") from None
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    if interrupted:
        raise KeyboardInterrupt(str(out))
    return out


def _save_finished(exp: Experiment, rows: list[dict], out: Path) -> str:
    """Save the finished runs' rows (and the resolved config) after the results folder could not
    be written: in ``<out>-incomplete``, else in the temporary folder. Says where, in words."""
    import tempfile
    runs = pd.DataFrame([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    runs = runs.sort_values(["point", "seed"], kind="stable").reset_index(drop=True)
    n = len(runs)
    for folder in (_unique(out.with_name(f"{out.name}-incomplete")),
                   Path(tempfile.gettempdir()) / f"testbed-{exp.name}-{os.getpid()}-incomplete"):
        try:
            folder.mkdir(parents=True)
        except Exception:  # noqa: BLE001 - exists, or cannot be made: try the next place
            continue
        try:
            runs.to_csv(folder / "runs.csv", index=False)
            (folder / "config.toml").write_text(
                f"# resolved config of {exp.path} (every default filled in)\n" + tomli_w.dumps(exp.resolved))
            return f"the {n} finished run(s) are in {printable(str(folder / 'runs.csv'))}"
        except Exception:  # noqa: BLE001 - try the next place
            shutil.rmtree(folder, ignore_errors=True)
    return f"the {n} finished run(s) could not be saved anywhere (no space left?)"


def _engines(exp: Experiment) -> str:
    """The engine(s) the points ran on, e.g. ``sim`` or ``real, sim`` (a validation)."""
    return ", ".join(dict.fromkeys(p.config["run"]["engine"] for p in exp.points)) or exp.resolved["run"]["engine"]


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _guarded(args: tuple[int, Point, int]) -> dict[str, Any]:
    """One run; an error inside it becomes a one-line RunFailed naming the point and seed."""
    try:
        return _one(args)
    except (KeyboardInterrupt, TestbedError):
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a user's policy may raise (or exit) anything
        if os.environ.get("TESTBED_DEBUG"):
            raise
        i, point, seed = args
        where = f"point {i}" + (f" [{point.label}]" if point.label else "")
        what = f"SystemExit({exc.code!r})" if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
        raise RunFailed(f"{where}, seed {seed} failed: {what} "
                        f"(set TESTBED_DEBUG=1 for the traceback)") from None


def _write(exp: Experiment, study, rows: list[dict], tmp: Path, wall: float, planned: int, interrupted: bool,
           resume: "Resume | None" = None) -> None:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / "config.toml").write_text(
        f"# resolved config of {exp.path} (every default filled in)\n" + tomli_w.dumps(exp.resolved))
    for row in rows:              # run.trace_out: each run's Trace, one row per task attempt
        name, trace = row.pop("_trace", (None, None))
        if name is None:
            continue
        if name.endswith(".parquet"):
            trace.to_parquet(tmp / name, index=False)
        else:
            trace.to_csv(tmp / name, index=False)
    # in (point, seed) order before the frame is built, so the column order does not depend on
    # the order the runs finished in (executors, --jobs)
    rows = sorted(rows, key=lambda r: (r["point"], r["seed"]))
    series = [r for row in rows for r in row.pop("_timeseries", ())]
    ts = pd.DataFrame(series)
    runs = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["point", "label", "seed"])
    resumed = ""
    if resume is not None:        # DIR's runs (and their traces, time series) beside the new ones
        for f in resume.trace_files():
            shutil.copy2(f, tmp / f.name)
        if resume.timeseries is not None:
            ts = pd.concat([resume.timeseries, ts], ignore_index=True) if len(ts) else resume.timeseries
        runs = pd.concat([resume.runs, runs], ignore_index=True) if rows else resume.runs.copy()
        resumed = f"Resumed from `{resume.dir}` ({len(resume.done)} run(s) there, {len(rows)} run now). "
    if len(ts):
        ts.to_csv(tmp / "timeseries.csv", index=False)
    if len(runs):
        runs = runs.sort_values(["point", "seed"], kind="stable").reset_index(drop=True)
    runs.to_csv(tmp / "runs.csv", index=False)
    figures: list[str] = []
    if len(runs):
        figures = study.figures(runs, exp, tmp)
    head = [f"# {exp.name}", "",
            f"Config: `{exp.path}` · study: `{exp.study}` · engine: `{_engines(exp)}` · "
            f"seeds: {exp.seeds} · {resumed}{len(runs)} of {planned} runs in {wall:.1f} s wall",
            ""]
    if interrupted:
        head += [f"**Interrupted**: {len(runs)} of {planned} runs finished; the tables cover those only.", ""]
    body = study.summary(runs, exp) if len(runs) else "No run finished."
    figs = "".join(f"\n![{f}]({f})\n" for f in figures)
    (tmp / "summary.md").write_text("\n".join(head) + body + "\n" + figs)
    report = getattr(study, "report_name", None)
    if report:                    # a study whose summary is a report of its own (e.g. report.md)
        shutil.copyfile(tmp / "summary.md", tmp / report)


class _NoBar:
    def update(self, n): pass
    def close(self): pass


def _bar(total: int, name: str, progress: bool):
    if not progress:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=name, unit="run", file=sys.stderr, leave=False)
