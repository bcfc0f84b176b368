"""Where a sweep's runs execute: this machine's process pool (the default) or a Dask cluster.

::

    run_experiment --(i, point, seed)...--> Executor.results(fn, tasks)
         ^                                      |  local: fork pool of --jobs processes
         |                                      |  dask:  LocalCluster of --jobs worker processes
         +------ one row per run, as each ------+  dask://HOST:PORT: a running Dask scheduler
                 finishes (any order)

An executor is a context manager: entering it starts its workers (or connects to them),
leaving it cancels what has not run and stops what it started, whether the runs finished,
failed or were interrupted. Each run is a pure function of its point and seed, so where it runs
does not change its row: ``runs.csv`` is the same for every executor but for wall-clock
columns (``engine_wall_s``).

``--executor`` takes:

- ``local`` (default): ``--jobs`` forked processes (one run in this process if ``--jobs 1``).
- ``dask``: a ``dask.distributed.LocalCluster`` on this machine, ``--jobs`` worker processes of
  one thread each, bound to 127.0.0.1, stopped when the sweep ends.
- ``dask://HOST:PORT``: the Dask scheduler at ``tcp://HOST:PORT`` and whatever workers it has
  (``--jobs`` does not apply: the cluster's workers decide how many runs go at once). Every
  worker must import the same testbed as this machine; that is checked on connect.

dask.distributed is an optional extra (``pip install 'testbed[dask]'``). The LocalCluster's
workers are spawned, so they re-import the ``__main__`` module: from a Python script, call
``run_experiment(..., executor="dask")`` under ``if __name__ == "__main__":`` (the ``testbed``
command does). A remote cluster's workers keep running a run that was cancelled until it ends
(a Python thread cannot be stopped); its result is dropped.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import importlib.util
import multiprocessing
import signal
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..core.errors import TestbedError

#: how long connecting to a Dask scheduler (and waiting for its first worker) may take, seconds
DASK_CONNECT_TIMEOUT_S = 5.0

INSTALL_DASK = "pip install 'testbed[dask]'"


class ExecutorError(TestbedError):
    pass


def parse_executor(text: str) -> tuple[str, str | None]:
    """``("local", None)``, ``("dask", None)`` or ``("dask", "tcp://HOST:PORT")``; anything
    else, or ``dask`` without dask.distributed installed, is one ExecutorError line."""
    where = f"--executor {text}"
    if text == "local":
        return "local", None
    if text == "dask" or text.startswith("dask://"):
        address = None
        if text != "dask":
            hostport = text.removeprefix("dask://")
            host, sep, port = hostport.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in hostport:
                raise ExecutorError(f"{where}: expected dask://HOST:PORT with a port number, e.g. dask://10.0.0.5:8786")
            address = f"tcp://{hostport}"
        if importlib.util.find_spec("distributed") is None:
            raise ExecutorError(f"{where}: needs dask.distributed, which is not installed here; {INSTALL_DASK}")
        return "dask", address
    raise ExecutorError(f"{where}: expected local, dask or dask://HOST:PORT")


def make_executor(text: str, jobs: int, n_tasks: int):
    """The executor ``text`` names (see :func:`parse_executor`), sized for ``n_tasks`` runs."""
    kind, address = parse_executor(text)
    if kind == "local":
        return LocalExecutor(jobs, n_tasks)
    return DaskExecutor(address, jobs)


class LocalExecutor:
    """``jobs`` forked processes (this process alone if ``jobs`` is 1 or there is one run)."""

    def __init__(self, jobs: int, n_tasks: int):
        self.jobs = jobs
        self.serial = jobs <= 1 or n_tasks <= 1
        self._pool: cf.ProcessPoolExecutor | None = None
        self._futs: list[cf.Future] = []

    def __enter__(self) -> "LocalExecutor":
        if not self.serial:
            ctx = multiprocessing.get_context("fork")
            self._pool = cf.ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx, initializer=_quiet_worker)
        return self

    def results(self, fn: Callable, tasks: Iterable) -> Iterator[Any]:
        if self._pool is None:
            for t in tasks:
                yield fn(t)
            return
        self._futs = [self._pool.submit(fn, t) for t in tasks]
        for f in cf.as_completed(self._futs):
            yield f.result()

    def __exit__(self, *exc) -> None:
        pool = self._pool
        if pool is None:
            return
        if not all(f.done() for f in self._futs):      # failed or interrupted: stop now
            for f in self._futs:
                f.cancel()
            for p in list((getattr(pool, "_processes", None) or {}).values()):
                p.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _quiet_worker() -> None:
    # Ctrl-C is the parent's to handle: it stops the pool and saves what finished
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class DaskExecutor:
    """A Dask cluster: a LocalCluster of ``jobs`` processes (``address`` None) or the running
    scheduler at ``address``."""

    def __init__(self, address: str | None, jobs: int):
        self.address = address
        self.jobs = max(1, jobs)
        self._cluster = None
        self._client = None
        self._futs: list = []

    @property
    def _where(self) -> str:
        return f"--executor dask://{self.address.removeprefix('tcp://')}" if self.address else "--executor dask"

    def __enter__(self) -> "DaskExecutor":
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        import logging

        import distributed
        logging.getLogger("distributed").setLevel(logging.ERROR)   # its INFO chatter is not ours to show
        if self.address is None:
            try:
                self._cluster = distributed.LocalCluster(
                    n_workers=self.jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
                    dashboard_address=None, silence_logs=logging.ERROR)
            except Exception as exc:  # noqa: BLE001 - e.g. a worker process that could not start
                cause = exc.__cause__ or exc
                raise ExecutorError(f"{self._where}: the local Dask cluster did not start "
                                    f"({type(cause).__name__}: {cause}); from a Python script, call "
                                    f"run_experiment under 'if __name__ == \"__main__\":'") from None
            self._client = distributed.Client(self._cluster, timeout=DASK_CONNECT_TIMEOUT_S)
            # Ctrl-C reaches the worker processes too (same terminal): it is this process's to
            # handle, as for the local pool (a remote cluster's workers keep their own Ctrl-C)
            # (run on each worker's event loop, its main thread)
            self._client.run(_ignore_sigint)
        else:
            try:
                self._client = distributed.Client(self.address, timeout=DASK_CONNECT_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - refused, timed out, or not a Dask scheduler at all
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ExecutorError(f"{self._where}: cannot reach a Dask scheduler at {self.address} "
                                    f"({first})") from None
            try:
                self._client.wait_for_workers(1, timeout=DASK_CONNECT_TIMEOUT_S)
            except TimeoutError:
                raise ExecutorError(f"{self._where}: the scheduler has no worker (none joined within "
                                    f"{DASK_CONNECT_TIMEOUT_S:g} s); start 'dask worker {self.address}' "
                                    f"on each machine") from None
        self._check_workers()

    def _check_workers(self) -> None:
        """Every worker imports the testbed this process runs (same version, same source):
        a run's row must not depend on where it ran."""
        mine = fingerprint()
        # eval is a builtin, so it reaches a worker that lacks testbed, where it fails readably
        theirs = self._client.run(eval, _FINGERPRINT_EXPR, on_error="return")
        for worker, fp in sorted(theirs.items()):
            if isinstance(fp, BaseException):
                raise ExecutorError(f"{self._where}: worker {worker} cannot import testbed "
                                    f"({type(fp).__name__}: {fp}); run pip install testbed=={mine[0]} "
                                    f"on each worker machine")
            fp = tuple(fp)
            if fp[0] != mine[0]:
                raise ExecutorError(f"{self._where}: worker {worker} has testbed {fp[0]}, this machine "
                                    f"{mine[0]}; install the same version on every machine")
            if fp != mine:
                raise ExecutorError(f"{self._where}: worker {worker} has testbed {fp[0]} with other source "
                                    f"files than this machine's (an edited checkout?); every machine must "
                                    f"run the same code")

    def results(self, fn: Callable, tasks: Iterable) -> Iterator[Any]:
        import distributed
        tasks = list(tasks)
        token = uuid.uuid4().hex[:8]      # keys are the scheduler's: unique to this sweep
        self._futs = [self._client.submit(fn, t, key=f"testbed-{token}-point{t[0]}-seed{t[2]}", pure=False)
                      for t in tasks]
        which = {f.key: t for f, t in zip(self._futs, tasks)}
        for f in distributed.as_completed(self._futs):
            try:
                row = f.result()
            except distributed.client.FutureCancelledError as exc:
                raise ExecutorError(f"{self._where}: {_run_name(which[f.key])} was cancelled "
                                    f"by the cluster ({exc})") from None
            except TestbedError:
                raise
            except Exception as exc:  # noqa: BLE001 - KilledWorker, lost connection, ...
                if isinstance(exc, KeyboardInterrupt):
                    raise
                first = (str(exc).strip().splitlines() or [""])[0]
                raise ExecutorError(f"{self._where}: {_run_name(which[f.key])} did not finish on the "
                                    f"cluster: {type(exc).__name__}: {first}") from None
            f.release()
            yield row

    def __exit__(self, *exc) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        try:
            if client is not None:
                pending = [f for f in self._futs if not f.done()]
                if pending:
                    client.cancel(pending)
                client.close(timeout=DASK_CONNECT_TIMEOUT_S)
        finally:
            if cluster is not None:
                cluster.close(timeout=DASK_CONNECT_TIMEOUT_S)


def _run_name(task: tuple) -> str:
    i, point, seed = task
    return f"point {i}" + (f" [{point.label}]" if point.label else "") + f", seed {seed}"


def _ignore_sigint() -> None:
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


_FINGERPRINT_EXPR = "__import__('testbed.studies.executors', fromlist=['fingerprint']).fingerprint()"

_FP: tuple[str, str] | None = None


def fingerprint() -> tuple[str, str]:
    """(testbed version, sha256 of its .py sources by relative path): what a worker must match."""
    global _FP
    if _FP is None:
        import testbed
        root = Path(testbed.__file__).parent
        h = hashlib.sha256()
        for p in sorted(root.rglob("*.py")):
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
        _FP = (testbed.__version__, h.hexdigest())
    return _FP
