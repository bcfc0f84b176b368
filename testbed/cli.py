"""The ``testbed`` command.

    testbed run CONFIG [--set KEY=VALUE ...] [--out DIR] [--jobs N] [--max-runs N] [--quiet] [--resume DIR]
                       [--executor local|dask|dask://HOST:PORT]
    testbed validate CONFIG... [--set KEY=VALUE ...] [--max-runs N]
    testbed list [--plugin pkg.module:Name ...]
    testbed bench sim|real [--json] [--tasks N] [--cases a,b]
    testbed calibrate [--out FILE] [--nodes N] [--cpus-per-node C] [--quiet]

Every user error is one line on stderr (``testbed: error: ...``) and exit status 2.
"""
from __future__ import annotations

import argparse
import sys

from .core.errors import TestbedError, one_line, printable

EXIT_USAGE = 2
#: --jobs above this is refused (it is capped at min(runs, CPU cores) anyway)
MAX_JOBS = 1024
#: a config of more runs (points x seeds) is refused unless --max-runs allows it
DEFAULT_MAX_RUNS = 10_000


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage first)
        where = self.prog.removeprefix("testbed").strip()
        raise _UsageError(f"{where + ': ' if where else ''}{message} (see '{self.prog} --help')")


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="testbed", description="Experiments on Ray-style scheduling, simulated (and soon real).")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser, metavar="COMMAND",
                           title="commands")

    r = sub.add_parser("run", help="run an experiment config; write results/<name>/<timestamp>/")
    r.add_argument("config", help="experiment config (TOML)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set cluster.nodes=10 (repeatable)")
    r.add_argument("--out", help="results folder (default results/<config name>/<timestamp>)")
    r.add_argument("--jobs", type=_jobs, default=None,
                   help="parallel processes (default and cap: the number of runs or of CPU cores, whichever "
                        f"is smaller; at most {MAX_JOBS:,})")
    r.add_argument("--max-runs", type=_positive_int, default=DEFAULT_MAX_RUNS, metavar="N",
                   help=f"refuse a config of more than N runs (points x seeds; default {DEFAULT_MAX_RUNS:,})")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--resume", metavar="DIR", default=None,
                   help="run only the points and seeds missing from DIR's runs.csv (same config; run.seeds may "
                        "add seeds) and write the combined result to --out or the default folder; DIR is kept")
    r.add_argument("--executor", default="local", metavar="local|dask|dask://HOST:PORT",
                   help="where the runs execute: local (default) forked processes; dask: a local Dask cluster of "
                        "--jobs worker processes; dask://HOST:PORT: a running Dask scheduler (its workers decide "
                        "the parallelism). Same runs.csv for all; dask needs pip install 'testbed[dask]'")

    v = sub.add_parser("validate", help="check configs without running them")
    v.add_argument("configs", nargs="+", metavar="CONFIG")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    v.add_argument("--max-runs", type=_positive_int, default=DEFAULT_MAX_RUNS, metavar="N",
                   help=f"refuse a config of more than N runs (points x seeds; default {DEFAULT_MAX_RUNS:,})")

    ls = sub.add_parser("list", help="studies, policies, estimators and distributions")
    ls.add_argument("--plugin", action="append", default=[], metavar="pkg.module:Name",
                    help="also describe a plug-in class")

    b = sub.add_parser("bench", help="benchmarks: simulated tasks per wall-second and memory")
    b.add_argument("engine", choices=["sim", "real"], help="which engine to benchmark")
    b.add_argument("--json", action="store_true", help="one JSON object per case instead of a table")
    b.add_argument("--tasks", type=_tasks, default=None, help="sim: tasks per case (default 200,000)")
    b.add_argument("--cases", default=None, help="comma-separated case names (default: all)")

    c = sub.add_parser("calibrate", help="measure the real runtime here; write the simulator's overheads (TOML)")
    c.add_argument("--out", default="calibration.toml", help="file to write (default calibration.toml)")
    c.add_argument("--nodes", type=_positive_int, default=4,
                   help="nodes of the loaded measurement (default 4: experiments/validate_sim.toml's)")
    c.add_argument("--cpus-per-node", type=_positive_int, default=2,
                   help="CPUs per node of the loaded measurement (default 2: validate_sim.toml's)")
    c.add_argument("--quiet", action="store_true", help="no progress or table on stderr")
    return p


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _tasks(text: str) -> int:
    from .core.config import MAX_JOBS as MAX_TASKS
    v = _positive_int(text)
    if v > MAX_TASKS:
        raise argparse.ArgumentTypeError(f"expected a positive integer of at most {MAX_TASKS:,}, got {v:.3g}")
    return v


def _jobs(text: str) -> int:
    v = _positive_int(text)
    if v > MAX_JOBS:
        raise argparse.ArgumentTypeError(f"expected a positive integer of at most {MAX_JOBS:,} (processes; it is "
                                         f"capped at the number of runs and of CPU cores anyway), got {v:,}")
    return v


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        from .real.leftovers import remove_dead
        remove_dead()        # folders and /dev/shm files of clusters whose owners were killed
        return _dispatch(args)
    except (_UsageError, TestbedError) as exc:
        print(f"testbed: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        where = str(exc)
        print(f"testbed: interrupted; finished runs are in {where}" if where else "testbed: interrupted",
              file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    if args.cmd == "run":
        return _run(args)
    if args.cmd == "validate":
        return _validate(args)
    if args.cmd == "list":
        return _list(args)
    if args.cmd == "bench":
        if args.engine == "real":
            from .studies.bench_real import bench_real
            return bench_real(json_out=args.json, cases=args.cases)
        from .studies.bench import bench_sim
        return bench_sim(json_out=args.json, tasks=args.tasks, cases=args.cases)
    if args.cmd == "calibrate":
        from .studies.calibrate import calibrate
        return calibrate(args.out, quiet=args.quiet, nodes=args.nodes, cpus_per_node=args.cpus_per_node)
    raise AssertionError(args.cmd)


def _run(args) -> int:
    from pathlib import Path

    from .studies.experiment import load_experiment
    from .studies.executors import parse_executor
    from .studies.runner import default_out_dir, run_experiment
    from .core.errors import LINE_BREAKS
    if args.out is not None and (not args.out.strip() or any(c in args.out for c in LINE_BREAKS)):
        raise _UsageError(f"run: argument --out: expected a folder name on one line, got {args.out!r}")
    parse_executor(args.executor)
    exp = load_experiment(args.config, args.overrides, max_runs=args.max_runs)
    resume = None
    if args.resume is not None:
        from .studies.resume import load_resume
        resume = load_resume(exp, args.resume)
        exp = resume.experiment
        if not resume.missing:
            print(f"{args.resume}: nothing to resume, it has all {resume.planned} run(s)", file=sys.stderr)
            print(f"results: {printable(str(args.resume))}")
            return 0
    out = Path(args.out) if args.out is not None else default_out_dir(exp)
    n = len(exp.points) * len(exp.seeds)
    if not args.quiet:
        todo = f"; {len(resume.missing)} missing from {args.resume}" if resume is not None else ""
        print(f"{exp.name}: {len(exp.points)} point(s) x {len(exp.seeds)} seed(s) = {n:,} run(s){todo}, "
              f"study '{exp.study}'", file=sys.stderr)
    out = run_experiment(exp, out, jobs=args.jobs, progress=not args.quiet, resume=resume,
                         executor=args.executor)
    print(f"results: {printable(str(out))}")
    summary = (out / "summary.md").read_text()
    if not args.quiet:
        print(summary.split("\n![", 1)[0].rstrip())
    return 0


def _validate(args) -> int:
    from .studies.experiment import load_experiment
    for path in args.configs:
        exp = load_experiment(path, args.overrides, max_runs=args.max_runs)
        print(f"{printable(path)}: ok ({len(exp.points)} point(s) x {len(exp.seeds)} seed(s), study '{exp.study}')")
    return 0


def _list(args) -> int:
    from .policy import registry
    from .studies.studies import STUDIES
    from .workloads import DISTRIBUTIONS

    def first_line(obj) -> str:
        doc = (obj.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""

    plugins = []
    for spec in args.plugin:      # resolve first: a bad plug-in fails before any output
        errors = []
        for kind in ("placement", "spillover", "estimator"):
            try:
                plugins.append((spec, kind, registry.resolve(kind, spec, "--plugin")))
                break
            except TestbedError as exc:
                errors.append(str(exc).removeprefix("--plugin: "))
        else:
            from .core.errors import ConfigError
            reason = errors[0] if "cannot import" in errors[0] or "has no attribute" in errors[0] else \
                "not a subclass of PlacementPolicy, SpilloverPolicy or Estimator"
            raise ConfigError(f"{spec!r}: {reason}", key="--plugin")
    print("studies (run.study):")
    for name, s in STUDIES.items():
        print(f"  {name:26s} {s.description}")
    for kind, title in (("placement", "placement policies (scheduler.placement)"),
                        ("spillover", "spillover policies (scheduler.spillover)"),
                        ("estimator", "estimators (scheduler.task_time, scheduler.bandwidth)")):
        print(f"{title}:")
        for name, cls in registry.builtins(kind).items():
            print(f"  {name:26s} {first_line(cls)}")
    print("distributions (workload.duration, workload.output_bytes):")
    for name, cls in DISTRIBUTIONS.items():
        print(f"  {name:26s} {first_line(cls)}")
    if plugins:
        print("plug-ins:")
    for spec, kind, cls in plugins:
        print(f"  {spec:26s} {kind}: {first_line(cls)}")
    print("plug-ins: any key above also takes 'package.module:ClassName' (a subclass of the matching base class).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
