"""A worker process: runs one task at a time for its node manager.

    node manager ──("run", task)──> worker ──("done", task id, results, timing)──> node manager
    worker ──("get"|"wait"|"create"|"submit", ...)──> node manager   (a task's own calls)

Arguments arrive resolved: inline bytes, or a place in the node's shared memory (read
zero-copy). Results go back inline when small, else the worker writes them into shared
memory itself and sends only where. An exception — any BaseException the body raises,
KeyboardInterrupt and SystemExit included — becomes a TaskError value for every return.
"""
from __future__ import annotations

import os
import time
import traceback

import cloudpickle

from . import api, objstore
from .context import Context
from .core import Core, object_id, to_bytes
from .errors import TaskError, is_failure
from .gcsclient import connect_retry


class Worker:
    def __init__(self, ctx: Context, node: int, wid: int):
        self.node = node
        self.wid = wid
        ch = connect_retry(ctx.node(node), ctx.secret)
        self.core = Core(ch, node, "worker")
        self.core.unexpected = self._unexpected
        self.functions: dict[str, object] = {}
        #: the actor instance this worker holds (None for a task worker), its checkpoint
        #: interval (calls) and the calls it has run
        self.instance = None
        self.ckpt_every = 0
        self.calls = 0
        api._worker_core = self.core
        self.core.send(("hello_worker", wid, os.getpid()))

    def _unexpected(self, msg) -> None:
        if msg[0] == "exit":
            raise _Exit(0)
        raise RuntimeError(f"worker {self.wid}: unexpected {msg[0]!r} while waiting for a reply")

    def serve(self) -> None:
        ch = self.core.ch
        while True:
            try:
                msg = ch.recv()
            except (EOFError, OSError):
                return                     # the node manager is gone
            if msg[0] == "run":
                self.run(msg[1])
            elif msg[0] == "actor_init":
                self.run(msg[1], create=True)
            elif msg[0] == "exit":
                return

    def _arg(self, a):
        kind = a[0]
        if kind == "v":
            return objstore.deserialize_bytes(a[1])
        return self.core.decode(a[1], a[2])        # ("o", oid, descriptor)

    def run(self, task: dict, create: bool = False) -> None:
        fid = task["fn_id"]
        fn = self.functions.get(fid) if fid is not None else None
        _set_gpu_ids(task.get("gpu_ids", ()))     # the node's: a task's, or its actor's for life
        start = time.time()
        try:
            if create and task.get("restore") is not None:
                fn = None
            elif task.get("method") is not None:
                fn = getattr(self.instance, task["method"])
            elif fn is None:
                fn = self.functions[fid] = cloudpickle.loads(task["fn"])
            args = [self._arg(a) for a in task["args"]]
            kwargs = {k: self._arg(a) for k, a in task["kwargs"].items()}
            for v in list(args) + list(kwargs.values()):
                if isinstance(v, TaskError):
                    raise _Propagate(v)            # an input's task failed: the same error
                if is_failure(v):                  # the runtime's error in an input's place (a dead
                    raise _Propagate(TaskError(    # actor's result, a lost object): as in Ray, a task
                        task["name"], type(v),     # error caused by it, also an instance of its type
                        f"{type(v).__name__}: an input of this task could not be computed: {v}",
                        "", v))
            if create and task.get("restore") is not None:
                value = cloudpickle.loads(task["restore"])       # the last checkpoint
            else:
                value = fn(*args, **kwargs)
            if create:
                self.instance, value = value, None
                self.ckpt_every = task.get("checkpoint_interval", 0)
                self.calls = task.get("calls_done", 0)
            n = task["num_returns"]
            if n == 1:
                values = [value]
            elif n == 0:
                values = []                        # num_returns=0: the value is dropped (as in Ray)
            else:
                values = list(value) if isinstance(value, (list, tuple)) else None
                if values is None or len(values) != n:
                    raise ValueError(f"task {task['name']} declared num_returns={n} but returned "
                                     f"{type(value).__name__}" + (f" of length {len(values)}" if values else ""))
            results = [self._result(task["task_id"], i, v) for i, v in enumerate(values)]
            failed = False
        except _Propagate as p:
            results = [self._result(task["task_id"], i, p.error) for i in range(task["num_returns"])]
            failed = True
        except _Exit:
            raise                                  # the node manager ends this worker
        except TaskError as exc:       # raised by a get inside the body and not caught: its cause,
            #                           with this task's traceback before the one it came from
            err = TaskError(task["name"], exc.cause_type, exc.cause_repr,
                            traceback.format_exc() + f"\nwhich came from task {exc.function}:\n{exc.traceback_str}",
                            exc.cause)
            results = [self._result(task["task_id"], i, err) for i in range(task["num_returns"])]
            failed = True
        except BaseException as exc:  # noqa: BLE001 - the user's task may raise anything (as in Ray,
            #                           KeyboardInterrupt or SystemExit too: a task error, not a crash)
            err = TaskError(task["name"], type(exc), f"{type(exc).__name__}: {exc}", traceback.format_exc(),
                            exc if _picklable(exc) else None)
            results = [self._result(task["task_id"], i, err) for i in range(task["num_returns"])]
            failed = True
        end = time.time()
        ckpt = None
        if task.get("method") is not None:
            self.calls += 1
            if self.ckpt_every and self.calls % self.ckpt_every == 0:
                try:
                    ckpt = cloudpickle.dumps(self.instance)    # the class controls it (__getstate__)
                except Exception:  # noqa: BLE001 - an unpicklable actor just never checkpoints
                    ckpt = None
        self.core.send(("done", task["task_id"], results, failed, start, end, ckpt))

    def _result(self, task_id: bytes, index: int, value):
        oid = object_id(task_id, index)
        inline, ser = to_bytes(value)
        if inline is not None:
            return ("inline", inline)
        self.core.put_serialized(oid, ser)
        return ("shm", ser.size)


#: the worker's CUDA_VISIBLE_DEVICES as inherited, restored for a task given no GPU
_CUDA_INHERITED = os.environ.get("CUDA_VISIBLE_DEVICES")


def _set_gpu_ids(ids) -> None:
    """What tb.get_gpu_ids() returns in the task or actor about to run, and (as Ray does) the
    CUDA_VISIBLE_DEVICES its code sees when it was given GPUs (the environment is touched only
    when that changes: a task without GPUs after one without costs nothing)."""
    if not ids and not api._gpu_ids:
        return
    api._gpu_ids = [int(i) for i in ids]
    if api._gpu_ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, api._gpu_ids))
    elif _CUDA_INHERITED is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = _CUDA_INHERITED


class _Exit(SystemExit):
    """The node manager told this worker to exit while its task waited for a reply."""


class _Propagate(Exception):
    def __init__(self, error: TaskError):
        self.error = error


def _picklable(exc: BaseException) -> bool:
    try:
        cloudpickle.loads(cloudpickle.dumps(exc))     # the driver must be able to load it too
        return True
    except Exception:  # noqa: BLE001
        return False


def main(ctx: Context, node: int, wid: int) -> None:
    w = Worker(ctx, node, wid)
    try:
        w.serve()
    finally:
        w.core.close()
