"""The user's API: ``import testbed as tb``; ``tb.init()``, ``@tb.remote``, ``tb.get``, ...

It reads like Ray's core API. State is one process-wide cluster handle (as in Ray) in the
driver, or the worker's connection when the code runs inside a task.
"""
from __future__ import annotations

import atexit
import inspect
import json
import math
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from numbers import Real
from typing import Any

from ..core.trace import NAMES as TRACE_NAMES
from . import leftovers, transport
from . import params
from .context import Context
from .core import Core, ObjectRef, escape, new_task_id, object_id, to_bytes
from .errors import ClusterError
from .objstore import cleanup_prefix

#: the driver's cluster (None when not initialised); workers set _worker_core instead
_cluster: "Cluster | None" = None
_worker_core: Core | None = None
_lock = threading.RLock()

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: object store per node, bytes, when tb.init is not given one (and the cap of the real engine's
#: cluster.object_store_bytes): what this machine's /dev/shm holds, not the schema's 8 GB
OBJECT_STORE_BYTES = 1 << 30


def _core() -> Core:
    if _worker_core is not None:
        return _worker_core
    if _cluster is None:
        raise ClusterError("testbed is not initialised: call tb.init() first")
    return _cluster.core


# --- options ---------------------------------------------------------------------------

def _check_amount(name: str, v, *, integer: bool = False) -> float:
    """``v`` as a float; anything but a finite number >= 0 is a ValueError naming ``name``
    (an infinite amount of CPUs, bytes or seconds is never meant: use None where "no
    limit" is allowed)."""
    if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if integer and int(v) != v:
        raise ValueError(f"{name} must be a whole number, got {v!r}")
    return float(v)


def _resources(num_cpus, num_gpus, resources, where: str) -> dict[str, float]:
    out: dict[str, float] = {}
    if num_cpus is not None:
        out["CPU"] = _check_amount(f"{where}num_cpus", num_cpus)
    if num_gpus is not None:
        out["GPU"] = _check_amount(f"{where}num_gpus", num_gpus)
    if resources is not None:
        if not isinstance(resources, dict):
            raise TypeError(f"{where}resources must be a dict of name -> amount, got {type(resources).__name__}")
        for k, v in resources.items():
            if not isinstance(k, str) or k in ("CPU", "GPU"):
                raise ValueError(f"{where}resources: use num_cpus/num_gpus for CPU/GPU; bad key {k!r}")
            out[k] = _check_amount(f"{where}resources[{k!r}]", v)
    return {k: v for k, v in sorted(out.items()) if v > 0}


# --- the cluster -----------------------------------------------------------------------

class Cluster:
    """A running cluster: the supervisor process and the driver's connection."""

    def __init__(self, config: dict[str, Any], preload: list[str] | None = None):
        self.config = config
        self.dir = tempfile.mkdtemp(prefix="testbed-")        # 0700
        self.secret = transport.new_secret()
        self.shm_prefix = f"tb-{uuid.uuid4().hex[:10]}-"
        leftovers.write_owner(self.dir, self.shm_prefix, [os.getpid()])   # before anything is made
        #: where the cluster's processes listen, and its names (config is the same dict)
        self.ctx = Context(dir=self.dir, secret=self.secret, config=config, shm_prefix=self.shm_prefix)
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.proc = subprocess.Popen([sys.executable, "-m", "testbed.real.supervisor"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, close_fds=True)
        leftovers.write_owner(self.dir, self.shm_prefix, [os.getpid(), self.proc.pid])
        boot = {"dir": self.dir, "secret": self.secret.hex(), "config": config, "shm_prefix": self.shm_prefix,
                "sys_path": [p for p in sys.path if p], "cwd": os.getcwd(), "preload": list(preload or ())}
        self.proc.stdin.write((json.dumps(boot) + "\n").encode())
        self.proc.stdin.flush()
        self.pids: dict[int, tuple[str, list]] = {}
        #: nodes tb.kill_node has killed (the node table says so only after the heartbeat timeout)
        self.killed_nodes: set[int] = set()
        threading.Thread(target=self._read_events, name="testbed-supervisor-events", daemon=True).start()
        self._wait_for("started")
        from .gcsclient import connect_retry
        start_timeout_s = params.of(self.ctx, "start_timeout_s")
        ch = connect_retry(self.ctx.node(0), self.secret, start_timeout_s)
        self.core = Core(ch, 0, "driver")
        self.core.request("hello_driver", os.getpid())
        # init returns once every node has reported (its first heartbeat is in the GCS)
        end = time.monotonic() + start_timeout_s
        while len(self.core.request("nodes")) < len(config["nodes"]):
            if time.monotonic() > end:
                self.shutdown()
                raise ClusterError(f"not every node reported within {start_timeout_s:.0f} s")
            time.sleep(params.of(self.ctx, "start_poll_s"))   # bounded poll while the other node managers start

    def _read_events(self) -> None:
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "spawned":
                self.pids[ev["pid"]] = (ev["role"], ev["args"])
            elif ev.get("event") == "exited":
                self.pids.pop(ev["pid"], None)
            self.events.put(ev)
        self.events.put({"event": "supervisor-exited"})

    def _wait_for(self, name: str, during: str = "start-up") -> None:
        """Wait for the supervisor's event ``name``; a cluster that cannot get there is shut down."""
        start_timeout_s = params.of(self.ctx, "start_timeout_s")
        end = time.monotonic() + start_timeout_s
        while True:
            try:
                ev = self.events.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                self.shutdown()
                raise ClusterError(f"the cluster's supervisor did not finish {during} within "
                                   f"{start_timeout_s:.0f} s") from None
            if ev.get("event") == name:
                return
            if ev.get("event") == "failed":
                self.shutdown()
                raise ClusterError(f"the cluster did not start: {ev.get('why', 'unknown reason')}")
            if ev.get("event") == "supervisor-exited":
                self.shutdown()
                raise ClusterError(f"the cluster's supervisor exited during {during} (see its output above)")

    def command(self, **cmd) -> None:
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def node_id(self, index: int) -> str:
        return self.ctx.node_id(index)

    def gcs_rss(self) -> int:
        """Resident memory of one copy of the GCS: per shard the largest of its live
        replicas (they hold the same state), summed over the shards; bytes."""
        per_shard: dict[int, int] = {}
        for pid, (role, args) in list(self.pids.items()):
            if role != "gcs":
                continue
            try:
                with open(f"/proc/{pid}/statm") as f:
                    rss = int(f.read().split()[1]) * PAGE_SIZE
            except (OSError, ValueError, IndexError):
                continue                                 # it just died
            per_shard[int(args[0])] = max(per_shard.get(int(args[0]), 0), rss)
        return sum(per_shard.values())

    def shutdown(self) -> None:
        core = getattr(self, "core", None)
        if core is not None:
            core.close()
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.write(b'{"cmd": "shutdown"}\n')
                self.proc.stdin.flush()
                self.proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        cleanup_prefix(self.shm_prefix)       # a supervisor killed above left them; the folder goes last
        shutil.rmtree(self.dir, ignore_errors=True)

    # context manager: `with tb.init(...):`
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        shutdown()
        return False


class WorkerConnection:
    """What ``tb.init(ignore_reinit_error=True)`` returns inside a task: the worker's existing
    connection (no cluster starts). As a context manager it does nothing on exit: the cluster
    is the driver's to shut down."""

    def __init__(self, core: Core):
        self.core = core
        #: the node the worker runs on
        self.node_index = core.node

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


#: tb.init keyword -> the config key whose schema default it takes when left at None
INIT_DEFAULTS: dict[str, tuple[str, str]] = {
    **{k: ("scheduler", k) for k in ("placement", "spillover", "task_time", "task_time_key", "bandwidth",
                                     "bandwidth_key", "decide_at")},
    **{k: ("cluster", k) for k in ("gcs_shards", "heartbeat_interval_s", "num_heartbeats_timeout",
                                   "gcs_chain_length", "gcs_flush_interval_s")},
    **{k: ("faults", k) for k in ("lineage", "gcs_replace_replicas")},
}


def schema_default(keyword: str) -> Any:
    """The default of ``tb.init(keyword=None)``: the schema's, through :data:`INIT_DEFAULTS`."""
    from ..core.config import default
    return default(*INIT_DEFAULTS[keyword])


def init(num_cpus: float | None = None, num_gpus: float | None = None, resources: dict | None = None, *,
         num_nodes: int = 1, nodes: list[dict] | None = None,
         placement: Any = None, spillover: Any = None,
         task_time: Any = None, task_time_key: str | None = None,
         bandwidth: Any = None, bandwidth_key: str | None = None, decide_at: str | None = None,
         gcs_shards: int | None = None, heartbeat_interval_s: float | None = None,
         object_store_bytes: int | None = None, object_store_memory: int | None = None,
         link_bandwidth_bytes_per_s: float | None = None,
         link_latency_s: float = 0.0, link_bandwidth_per_node: list[float] | None = None,
         num_heartbeats_timeout: int | None = None, lineage: bool | None = None,
         gcs_chain_length: int | None = None, gcs_flush_interval_s: float | None = None,
         gcs_replace_replicas: bool | None = None, seed: int | None = None,
         preload: list[str] | tuple[str, ...] = (),
         _system_config: dict | None = None, ignore_reinit_error: bool = False) -> Cluster:
    """Start a cluster of logical nodes on this machine and connect this process as its driver.

    ``init(num_cpus=2, num_gpus=0, resources={"accel": 1})`` is one node with those resources
    (as in Ray); ``num_nodes=4`` makes four such nodes; ``nodes=[{"CPU": 2}, {"CPU": 4, "GPU": 1}]``
    gives heterogeneous ones. Policies and estimators take the names (or "pkg.module:Name")
    of the config's [scheduler] section; ``decide_at`` says when a task with inputs is placed (at
    submission, or once its inputs exist: testbed.policy.base.decides_now). A node that misses ``num_heartbeats_timeout``
    heartbeats is declared dead; with ``lineage`` (the default) the GCS keeps every task's
    spec so lost objects can be rebuilt. Each GCS shard is a chain of ``gcs_chain_length``
    replicas (a replica can then die without losing state; with ``gcs_replace_replicas`` a
    fresh one joins); ``gcs_flush_interval_s`` > 0 moves finished tasks' lineage to disk at
    that interval. Returns a handle usable as a context manager.

    A keyword left at ``None`` takes the config schema's default for the same key
    (:data:`INIT_DEFAULTS` names it: ``heartbeat_interval_s`` is ``cluster.heartbeat_interval_s``,
    ``placement`` is ``scheduler.placement``, ...), so ``tb.init`` and a config file agree.
    ``object_store_bytes`` (1 GiB: what this machine's /dev/shm holds; ``object_store_memory`` is
    Ray's name for it, and giving both with different values is a ValueError) and ``link_latency_s``
    (0: no emulated link unless asked) are the runtime's own; ``link_bandwidth_per_node`` (bytes/s,
    one per node of ``nodes``, in order) gives those nodes their own link bandwidth for the inputs
    they fetch, instead of ``link_bandwidth_bytes_per_s`` (which nodes added later keep). ``seed`` seeds every policy's
    generator (testbed.core.seeding: the streams the simulator uses for the same seed); ``None``
    is the schema's first ``run.seeds`` (0). ``preload`` names modules to import once in the
    process the workers fork from, before it forks them, so a task's first call on each worker
    does not pay their import (a module that imports numpy costs a worker ~0.1 s; eight workers
    starting on two cores turned that into the runtime's first-second warm-up). ``_system_config`` overrides the runtime's timing
    parameters (testbed.real.params, README "Runtime parameters"), as Ray's does; an unknown
    key or a bad value is a ValueError naming it.
    """
    global _cluster
    if _worker_core is not None:
        # inside a task (or an actor) the process is connected to its cluster already: as in
        # Ray, init is an error there, or a no-op returning that connection
        if ignore_reinit_error:
            return WorkerConnection(_worker_core)
        raise ClusterError("tb.init() was called inside a task: the worker is connected to its cluster "
                           "already (pass ignore_reinit_error=True to get that connection, or drop the call)")
    given = dict(placement=placement, spillover=spillover, task_time=task_time, task_time_key=task_time_key,
                 bandwidth=bandwidth, bandwidth_key=bandwidth_key, decide_at=decide_at, gcs_shards=gcs_shards,
                 heartbeat_interval_s=heartbeat_interval_s, num_heartbeats_timeout=num_heartbeats_timeout,
                 lineage=lineage, gcs_chain_length=gcs_chain_length, gcs_flush_interval_s=gcs_flush_interval_s,
                 gcs_replace_replicas=gcs_replace_replicas)
    opt = {k: schema_default(k) if v is None else v for k, v in given.items()}
    placement, spillover, task_time, bandwidth = opt["placement"], opt["spillover"], opt["task_time"], opt["bandwidth"]
    task_time_key, bandwidth_key, gcs_shards = opt["task_time_key"], opt["bandwidth_key"], opt["gcs_shards"]
    heartbeat_interval_s, num_heartbeats_timeout = opt["heartbeat_interval_s"], opt["num_heartbeats_timeout"]
    lineage, gcs_chain_length, gcs_flush_interval_s = opt["lineage"], opt["gcs_chain_length"], opt["gcs_flush_interval_s"]
    gcs_replace_replicas = opt["gcs_replace_replicas"]
    if seed is None:
        from ..core.config import default
        seed = default("run", "seeds")[0]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    with _lock:
        if _cluster is not None:
            if ignore_reinit_error:
                return _cluster
            raise ClusterError("tb.init() was already called; call tb.shutdown() first")
        if nodes is not None:
            if not isinstance(nodes, list) or not nodes or not all(isinstance(n, dict) for n in nodes):
                raise TypeError("nodes must be a non-empty list of resource dicts, e.g. [{'CPU': 2}]")
            node_list = []
            for i, n in enumerate(nodes):
                res = {}
                for k, v in n.items():
                    if not isinstance(k, str):
                        raise ValueError(f"nodes[{i}]: resource names must be strings, got {k!r}")
                    res[k] = _check_amount(f"nodes[{i}][{k!r}]", v)
                node_list.append({k: v for k, v in res.items() if v > 0})
        else:
            if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
                raise ValueError(f"num_nodes must be an integer >= 1, got {num_nodes!r}")
            res = _resources(num_cpus if num_cpus is not None else (os.cpu_count() or 1), num_gpus, resources, "")
            node_list = [dict(res) for _ in range(num_nodes)]
        for name, v in (("gcs_shards", gcs_shards), ("gcs_chain_length", gcs_chain_length)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        _check_amount("gcs_flush_interval_s", gcs_flush_interval_s)
        for name, v in (("heartbeat_interval_s", heartbeat_interval_s), ("link_latency_s", link_latency_s)):
            _check_amount(name, v)
        store_key = "object_store_bytes" if object_store_memory is None else "object_store_memory"
        object_store_bytes = _store_bytes(object_store_bytes, object_store_memory)
        if not _check_amount(store_key, object_store_bytes, integer=True) > 0:
            raise ValueError(f"{store_key} must be > 0, got {object_store_bytes!r}")
        if heartbeat_interval_s <= 0:
            raise ValueError(f"heartbeat_interval_s must be > 0, got {heartbeat_interval_s}")
        if link_bandwidth_bytes_per_s is not None and not _check_amount("link_bandwidth_bytes_per_s",
                                                                         link_bandwidth_bytes_per_s) > 0:
            raise ValueError("link_bandwidth_bytes_per_s must be > 0 (or None for no emulated link)")
        if link_bandwidth_per_node is not None:
            if not isinstance(link_bandwidth_per_node, (list, tuple)) or len(link_bandwidth_per_node) != len(node_list):
                raise ValueError(f"link_bandwidth_per_node must be a list of one bandwidth per node "
                                 f"({len(node_list)}), got {link_bandwidth_per_node!r}")
            for v in link_bandwidth_per_node:
                if not _check_amount("link_bandwidth_per_node", v) > 0:
                    raise ValueError(f"link_bandwidth_per_node: each bandwidth must be > 0, got {v!r}")
            link_bandwidth_per_node = [float(v) for v in link_bandwidth_per_node]
        from ..policy.base import DECIDE_AT
        if opt["decide_at"] not in DECIDE_AT:
            raise ValueError(f"decide_at must be one of {DECIDE_AT}, got {opt['decide_at']!r}")
        scheduler = {"placement": placement, "spillover": spillover, "task_time": task_time,
                     "task_time_key": task_time_key, "bandwidth": bandwidth, "bandwidth_key": bandwidth_key,
                     "decide_at": opt["decide_at"]}
        _check_policies(scheduler)
        system = params.resolve(_system_config)
        preload = _check_preload(preload)
        if isinstance(num_heartbeats_timeout, bool) or not isinstance(num_heartbeats_timeout, int) \
                or num_heartbeats_timeout < 1:
            raise ValueError(f"num_heartbeats_timeout must be an integer >= 1, got {num_heartbeats_timeout!r}")
        config = {"nodes": node_list, "gcs_shards": gcs_shards, "gcs_chain_length": gcs_chain_length,
                  "gcs_flush_interval_s": float(gcs_flush_interval_s), "gcs_replace_replicas": bool(gcs_replace_replicas),
                  "heartbeat_interval_s": float(heartbeat_interval_s),
                  "num_heartbeats_timeout": num_heartbeats_timeout, "lineage": bool(lineage),
                  "object_store_bytes": int(object_store_bytes), "scheduler": scheduler,
                  "link_bandwidth_bytes_per_s": link_bandwidth_bytes_per_s, "link_latency_s": float(link_latency_s),
                  "link_bandwidth_per_node": link_bandwidth_per_node,
                  "seed": seed, "system": system}
        leftovers.remove_dead()      # clusters whose driver and supervisor were killed together
        _cluster = Cluster(config, preload)
        return _cluster


def _store_bytes(object_store_bytes, object_store_memory):
    """The per-node store size from testbed's ``object_store_bytes`` or Ray's name for it,
    ``object_store_memory`` (either, or both if equal); OBJECT_STORE_BYTES when neither."""
    if object_store_memory is None:
        return OBJECT_STORE_BYTES if object_store_bytes is None else object_store_bytes
    if object_store_bytes is not None and object_store_bytes != object_store_memory:
        raise ValueError(f"object_store_memory ({object_store_memory!r}) is Ray's name for object_store_bytes "
                         f"({object_store_bytes!r}): give one of them, or the same value")
    return object_store_memory


def _check_preload(preload) -> list[str]:
    """``preload`` as a list of module names that can be found here (else a ValueError naming one)."""
    import importlib.util
    if isinstance(preload, str) or not isinstance(preload, (list, tuple)):
        raise TypeError(f"preload must be a list of module names, got {type(preload).__name__}")
    for name in preload:
        if not isinstance(name, str) or not name:
            raise ValueError(f"preload: expected module names, got {name!r}")
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ValueError(f"preload: no module named {name!r}")
    return list(preload)


def _check_policies(scheduler: dict) -> None:
    """Build the policies once in the driver so a bad name fails here, naming the argument."""
    from ..core.errors import ConfigError
    from ..policy.build import build_policies
    try:
        build_policies(scheduler)
    except ConfigError as exc:
        raise ValueError(str(exc).replace("scheduler.", "init(): ")) from None


def shutdown() -> None:
    """Stop the cluster: every process it started exits and its shared memory is freed."""
    global _cluster
    with _lock:
        c, _cluster = _cluster, None
    if c is not None:
        c.shutdown()


@atexit.register
def _at_exit() -> None:
    shutdown()


def is_initialized() -> bool:
    return _cluster is not None or _worker_core is not None


# --- remote functions ------------------------------------------------------------------

_TASK_OPTIONS = ("num_cpus", "num_gpus", "resources", "num_returns", "max_retries", "name")
#: internal options (the experiment runner's): pin to a node; tag with a workload job id
_INTERNAL_OPTIONS = ("_node", "_job_id")


def _check_options(opts: dict, for_class: bool) -> dict:
    allowed = _TASK_OPTIONS + (("max_restarts", "max_task_retries", "checkpoint_interval") if for_class else ())
    for k in opts:
        if k not in allowed and k not in _INTERNAL_OPTIONS:
            raise TypeError(f"unknown option {k!r}; options: {', '.join(allowed)}")
    out = dict(opts)
    _resources(opts.get("num_cpus"), opts.get("num_gpus"), opts.get("resources"), "")
    gpus = opts.get("num_gpus")
    if gpus is not None and gpus > 1 and int(gpus) != gpus:
        # as in Ray: a fraction of one GPU can be shared, more than one GPU comes in whole GPUs
        raise ValueError(f"num_gpus above 1 must be a whole number (a fraction is for sharing one GPU), "
                         f"got {gpus!r}")
    _check_num_returns(opts.get("num_returns", 1))
    if for_class:
        for name, lo in (("max_restarts", -1), ("max_task_retries", -1), ("checkpoint_interval", 0)):
            v = opts.get(name, 0)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    mr = opts.get("max_retries", 3)
    if isinstance(mr, bool) or not isinstance(mr, int) or mr < -1:
        raise ValueError(f"max_retries must be an integer >= 0 (or -1 for unlimited), got {mr!r}")
    return out


def _check_num_returns(nr) -> int:
    """``num_returns`` of a task or actor method: an integer >= 0 (0: the call returns None)."""
    if isinstance(nr, bool) or not isinstance(nr, int) or nr < 0:
        raise ValueError(f"num_returns must be an integer >= 0, got {nr!r}")
    return nr


#: a parameter's default in a call signature kept for checking calls (see call_signature)
_DEFAULT = object()


class CallSignature:
    """A callable's parameters as far as checking a call needs them (names, kinds, whether
    each has a default), so it pickles with an actor handle whatever the defaults and
    annotations are. A call with positional arguments only, to parameters that take them,
    is checked by counting (the common case, ~0.2 us); anything else by ``Signature.bind``
    (~7 us)."""
    __slots__ = ("sig", "lo", "hi")

    def __init__(self, sig: inspect.Signature):
        self.sig = sig
        P = inspect.Parameter
        ps = list(sig.parameters.values())
        positional = [p for p in ps if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
        needs_keyword = any(p.kind is P.KEYWORD_ONLY and p.default is P.empty for p in ps)
        #: a call with lo..hi positional arguments and no keywords fits (lo None: always bind)
        self.lo = None if needs_keyword else sum(1 for p in positional if p.default is P.empty)
        self.hi = math.inf if any(p.kind is P.VAR_POSITIONAL for p in ps) else len(positional)

    def __reduce__(self):
        return (CallSignature, (self.sig,))

    def check(self, what: str, args: tuple, kwargs: dict) -> None:
        """A call that does not fit is a TypeError at the call site naming ``what`` (Ray raises
        there too; the task would only fail when it ran)."""
        if not kwargs and self.lo is not None and self.lo <= len(args) <= self.hi:
            return
        try:
            self.sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{what}.remote(): {exc}") from None


def call_signature(fn, skip_first: bool = False) -> CallSignature | None:
    """``fn``'s signature for checking a call's arguments at ``.remote()`` (as Ray does), or
    None when it has none (some built-ins). ``skip_first``: drop ``self`` of a method taken
    from its class."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if skip_first and params and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                    inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]
    return CallSignature(inspect.Signature([
        p.replace(annotation=inspect.Parameter.empty,
                  default=inspect.Parameter.empty if p.default is inspect.Parameter.empty else _DEFAULT)
        for p in params]))


def check_call(sig: CallSignature | None, what: str, args: tuple, kwargs: dict) -> None:
    """``sig.check(...)``; nothing to check without a signature."""
    if sig is not None:
        sig.check(what, args, kwargs)


class RemoteFunction:
    def __init__(self, fn, options: dict):
        self._fn = fn
        self._options = options
        self.__name__ = getattr(fn, "__name__", "remote_function")
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        # what every .remote() sends, worked out once (options are fixed per RemoteFunction)
        self._demand = _resources(options.get("num_cpus", 1), options.get("num_gpus"), options.get("resources"), "")
        self._task_name = options.get("name") or getattr(fn, "__qualname__", self.__name__)
        self._signature = call_signature(fn)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"remote function {self.__name__} cannot be called directly; "
                        f"use {self.__name__}.remote(...)")

    def options(self, **opts) -> "RemoteFunction":
        return RemoteFunction(self._fn, _check_options({**self._options, **opts}, False))

    def remote(self, *args, **kwargs):
        check_call(self._signature, self.__name__, args, kwargs)
        core = _core()
        opts = self._options
        num_returns = opts.get("num_returns", 1)
        fid, data = core.function_id(self._fn)
        res = self._demand
        task_id = new_task_id()
        name = self._task_name
        args, kwargs = _encode_args(core, args, kwargs, name)
        spec = {"task_id": task_id, "fn_id": fid, "fn": data, "name": name, "submitted_at": time.time(),
                "job_id": opts.get("_job_id", -1), "pin_node": opts.get("_node"), "args": args, "kwargs": kwargs,
                "num_returns": num_returns, "resources": res, "max_retries": opts.get("max_retries", 3)}
        core.send(("submit", spec))
        return _return_refs(task_id, num_returns)


def _serialize(value, what: str):
    """``to_bytes(value)``; a value that cannot be pickled is a TypeError naming ``what``."""
    try:
        return to_bytes(value)
    except Exception as exc:  # noqa: BLE001 - pickling can raise anything
        raise TypeError(f"{what} cannot be pickled: {type(exc).__name__}: {exc}") from None


def _encode_args(core: Core, args: tuple, kwargs: dict, fname: str) -> tuple[list, dict]:
    """A call's positional and keyword arguments as its spec carries them (see ``_encode``)."""
    return ([_encode(core, a, i, fname) for i, a in enumerate(args)],
            {k: _encode(core, v, k, fname) for k, v in kwargs.items()})


def _encode(core: Core, value, where, fname: str):
    if isinstance(value, ObjectRef):
        escape(value.id)          # the task needs it, whatever this process does with its ref
        return ("r", value.id)
    what = f"argument {where!r}" if isinstance(where, str) else f"argument {where}"
    inline, ser = _serialize(value, f"{what} of {fname}")
    if inline is not None:
        return ("v", inline)
    oid = object_id(new_task_id(), 0)
    core.put_serialized(oid, ser)
    escape(oid)                   # no ref of it exists here: only the task holds it
    return ("r", oid)


def _return_refs(task_id: bytes, num_returns: int):
    """What ``.remote()`` returns: the ref of the task's one return value, a list of them, or
    None for ``num_returns=0`` (as in Ray)."""
    if num_returns == 0:
        return None
    refs = [ObjectRef(object_id(task_id, i)) for i in range(num_returns)]
    return refs[0] if num_returns == 1 else refs


def remote(*args, **options):
    """``@tb.remote`` or ``@tb.remote(num_cpus=..., num_gpus=..., resources=..., num_returns=...,
    max_retries=...)`` on a function or a class. ``@tb.remote()`` with no options is refused,
    as Ray refuses it."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make(args[0], {})
    if args or not options:
        raise TypeError("use @tb.remote (no parentheses) or @tb.remote(option=value, ...) with at least one "
                        "option, as in Ray")
    return lambda obj: _make(obj, options)


def method(*args, **options):
    """``@tb.method(num_returns=N)`` on an actor method: its calls return N refs (0: None) unless
    a call's ``.options(num_returns=...)`` says otherwise (Ray's ``@ray.method``). It needs at
    least one option, as Ray's does."""
    if args or not options:
        raise TypeError("use @tb.method(num_returns=N) on an actor method")
    for k in options:
        if k != "num_returns":
            raise TypeError(f"unknown option {k!r} of @tb.method; options: num_returns")
    nr = _check_num_returns(options["num_returns"])

    def mark(fn):
        if not callable(fn):
            raise TypeError(f"@tb.method applies to a method, not {type(fn).__name__}")
        fn.__tb_num_returns__ = nr
        return fn
    return mark


def _make(obj, options: dict):
    if inspect.isclass(obj):
        from .actors import ActorClass
        return ActorClass(obj, _check_options(options, True))
    if not callable(obj):
        raise TypeError(f"@tb.remote applies to a function or a class, not {type(obj).__name__}")
    return RemoteFunction(obj, _check_options(options, False))


# --- objects ---------------------------------------------------------------------------

def _refs_arg(name: str, value) -> tuple[list[ObjectRef], bool]:
    if isinstance(value, ObjectRef):
        return [value], True
    if isinstance(value, (list, tuple)) and all(isinstance(r, ObjectRef) for r in value):
        return list(value), False
    bad = value if not isinstance(value, (list, tuple)) else next(r for r in value if not isinstance(r, ObjectRef))
    raise TypeError(f"{name}() expects an ObjectRef or a list of ObjectRefs, got {type(bad).__name__}")


def get(refs, *, timeout: float | None = None):
    """The value(s) of ``refs`` (an ObjectRef or a list), blocking until they exist.
    A task's exception is re-raised (TaskError, also an instance of the original type)."""
    lst, single = _refs_arg("get", refs)
    if timeout is not None:
        _check_amount("timeout", timeout)
    values = _core().get(lst, timeout)
    return values[0] if single else values


def put(value) -> ObjectRef:
    """Store ``value`` in the local object store; returns its ObjectRef."""
    if isinstance(value, ObjectRef):
        raise TypeError("put() of an ObjectRef is not allowed; pass the ObjectRef itself")
    core = _core()
    return core.put_parts(*_serialize(value, "put(): the value"))


def wait(refs, *, num_returns: int = 1, timeout: float | None = None):
    """``(ready, not_ready)``: the first ``num_returns`` refs that exist, once they do (or
    whatever exists when ``timeout`` seconds have passed); both lists in input order."""
    lst, single = _refs_arg("wait", refs)
    if single:
        raise TypeError("wait() expects a list of ObjectRefs")
    if len(set(lst)) != len(lst):
        raise ValueError("wait() expects distinct ObjectRefs")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or not 1 <= num_returns <= max(1, len(lst)):
        raise ValueError(f"num_returns must be between 1 and {len(lst)}, got {num_returns!r}")
    if timeout is not None:
        _check_amount("timeout", timeout)
    if not lst:
        return [], []
    ready_ids = _core().wait(lst, num_returns, timeout)
    ready, not_ready = [], []
    for r in lst:
        (ready if r.id in ready_ids and len(ready) < num_returns else not_ready).append(r)
    return ready, not_ready


# --- cluster information ---------------------------------------------------------------

#: the GPU ids the node assigned to the task or actor this worker runs (the node manager's
#: per-node pool, NodeManager.take_gpus); set by the worker, empty in the driver
_gpu_ids: list[int] = []


def get_gpu_ids() -> list[int]:
    """The ids of the GPUs assigned to the calling task or actor (Ray's ``ray.get_gpu_ids()``):
    a node with G GPUs has ids 0..G-1; a task or actor asking for ``num_gpus=k`` (whole) gets k
    ids for as long as it runs (an actor: for its life), one asking for a fraction gets the one
    id whose GPU it shares. ``[]`` in the driver and in a task that asked for no GPU. The ids are
    logical: testbed runs no GPU code, but sets ``CUDA_VISIBLE_DEVICES`` to them, as Ray does."""
    return list(_gpu_ids)


def nodes() -> list[dict]:
    """One dict per node: "NodeID", "Alive", "Resources" (as in Ray), plus "Index", "Available"."""
    return _core().request("nodes")


def _alive_total(field: str) -> dict[str, float]:
    """``field`` ("Resources" or "Available") summed over the live nodes."""
    out: dict[str, float] = {}
    for n in nodes():
        if n["Alive"]:
            for k, v in n[field].items():
                out[k] = out.get(k, 0.0) + v
    return out


def cluster_resources() -> dict[str, float]:
    return _alive_total("Resources")


def available_resources() -> dict[str, float]:
    return {k: v for k, v in _alive_total("Available").items() if v > 0}


def kill(handle, *, no_restart: bool = True) -> None:
    """Kill an actor (``tb.kill(handle)``). As in Ray, it is not restarted (``no_restart=True``,
    the default) even with ``max_restarts`` left; ``no_restart=False`` kills its process as a
    crash would: it restarts if restarts remain."""
    from .actors import kill as _kill
    _kill(handle, no_restart=no_restart)


#: columns of the rows node managers record (the Trace's, plus the worker's pid)
RECORD_COLUMNS = (*TRACE_NAMES, "pid")


def task_records() -> list[tuple]:
    """Every task attempt that ended so far, one row each (see RECORD_COLUMNS; wall-clock times)."""
    return _core().request("records")


def timeline(path=None):
    """Write every task and actor call so far as Chrome trace events (open the file in
    Perfetto or chrome://tracing): one track per node and worker process. Returns the events."""
    rows = [dict(zip(RECORD_COLUMNS, r)) for r in task_records()]
    starts = [r["started_s"] for r in rows if r["started_s"] == r["started_s"]]
    t0 = min(starts) if starts else 0.0
    events = []
    for node in sorted({r["node"] for r in rows}):
        events.append({"name": "process_name", "ph": "M", "pid": node,
                       "args": {"name": f"node {node}" if node >= 0 else "never placed"}})
    for r in rows:
        if r["started_s"] != r["started_s"]:       # never ran (infeasible, failed before running)
            events.append({"name": r["function"], "cat": r["state"], "ph": "i", "s": "p", "pid": r["node"],
                           "tid": 0, "ts": (r["finished_s"] - t0) * 1e6, "args": {"state": r["state"]}})
            continue
        events.append({"name": r["function"], "cat": "task", "ph": "X", "pid": r["node"], "tid": r["pid"],
                       "ts": (r["started_s"] - t0) * 1e6, "dur": max(0.0, r["finished_s"] - r["started_s"]) * 1e6,
                       "args": {"task_id": r["task_id"].hex(), "state": r["state"], "attempt": r["attempt"],
                                "spilled": r["spilled"], "queued_ms": (r["started_s"] - r["placed_s"]) * 1e3}})
    if path is not None:
        with open(path, "w") as f:
            json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)
    return events


# --- failure injection -------------------------------------------------------------------

def _driver_cluster() -> Cluster:
    if _cluster is None:
        raise ClusterError("failure injection is for the driver: call tb.init() first")
    return _cluster


def _node_entry(node_id: str) -> dict:
    for n in nodes():
        if n["NodeID"] == node_id:
            return n
    raise ValueError(f"no node with NodeID {node_id!r} (see tb.nodes())")


def _node_index(node_id: str) -> int:
    return _node_entry(node_id)["Index"]


def kill_node(node_id: str) -> None:
    """Crash a node (a NodeID from tb.nodes()): its node manager and workers die at once
    (they are dead when this returns) and its objects are lost. Node 0 hosts the driver
    and cannot be killed. A node that is already dead (killed, or declared dead) is a
    ValueError: a test that kills it twice has lost track of its cluster."""
    c = _driver_cluster()
    entry = _node_entry(node_id)
    index = entry["Index"]
    if index == 0:
        raise ValueError("node 0 hosts the driver's connection and cannot be killed")
    if index in c.killed_nodes or not entry["Alive"]:
        raise ValueError(f"node {node_id} (index {index}) is already dead; tb.nodes() says which are alive")
    c.killed_nodes.add(index)
    c.command(cmd="kill_node", index=index)
    c._wait_for("node_killed", "killing a node")          # its processes are dead when this returns


def add_node(num_cpus: float = 1, num_gpus: float | None = None, resources: dict | None = None) -> str:
    """Start a new node with these resources; returns its NodeID once it has reported."""
    c = _driver_cluster()
    res = _resources(num_cpus, num_gpus, resources, "")
    index = len(c.config["nodes"])
    c.config["nodes"].append(res)
    c.command(cmd="add_node", resources=res)
    node_id = c.node_id(index)
    start_timeout_s = params.of(c.ctx, "start_timeout_s")
    end = time.monotonic() + start_timeout_s
    while not any(n["NodeID"] == node_id for n in nodes()):
        if time.monotonic() > end:
            raise ClusterError(f"the new node did not report within {start_timeout_s:.0f} s")
        time.sleep(params.of(c.ctx, "start_poll_s"))       # bounded poll while the new node manager starts
    return node_id


def _master_request(kind: str, *args):
    """One request to the GCS chain master (a short-lived authenticated connection)."""
    c = _driver_cluster()
    ch = transport.connect(c.ctx.gcs_master(), c.secret)
    try:
        ch.send((kind, 1, *args))
        if not ch.poll(params.of(c.ctx, "start_timeout_s")):
            raise ClusterError("the GCS chain master did not answer")
        return ch.recv()[2]
    finally:
        ch.close()


def kill_gcs_replica(shard: int = 0, replica: int = 0) -> int:
    """Kill one replica of a GCS shard's chain: ``replica`` is its position (0 = the head,
    -1 = the tail). The chain master reconfigures the chain and, unless the cluster was
    started with ``gcs_replace_replicas=False``, a fresh replica joins. Returns the killed
    replica's id. A shard whose chain has one replica cannot lose it (ValueError)."""
    for name, v in (("shard", shard), ("replica", replica)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an integer, got {v!r}")
    status, what = _master_request("kill_replica", shard, replica)
    if status != "ok":
        raise ValueError(what)
    return what


def gcs_chains() -> dict[int, list[int]]:
    """Each GCS shard's chain as the master publishes it: replica ids, head first."""
    return {int(k): v for k, v in _master_request("chains")["chains"].items()}


def _gcs_client():
    """A blocking GCS client of the driver's cluster (benchmarks, tests, the real engine)."""
    from .gcsclient import BlockingGcs
    return BlockingGcs(_driver_cluster().ctx)


def _gcs_stats() -> dict[tuple[int, int], dict]:
    """Every live replica's table sizes, flushed entries and pid: (shard, replica) -> stats."""
    g = _gcs_client()
    try:
        return {(k, r): g.stats(k, r) for k, chain in g.view.items() for r in chain}
    finally:
        g.close()


def _set_link_bandwidth(index: int, bytes_per_s: float) -> None:
    """Node ``index``'s emulated link runs at ``bytes_per_s`` for the objects it fetches from
    now on (the real engine's cluster.bandwidth_changes)."""
    if not _check_amount("bytes_per_s", bytes_per_s) > 0:
        raise ValueError(f"bytes_per_s must be > 0, got {bytes_per_s!r}")
    _core().send(("link_bandwidth", int(index), float(bytes_per_s)))


def kill_worker(node_id: str | None = None) -> None:
    """Kill one worker process of a node (a busy one if any; node 0 by default): its task is
    retried (max_retries) or fails with WorkerCrashedError."""
    index = 0 if node_id is None else _node_index(node_id)
    _core().send(("kill_worker", index))


def kill_actor_process(handle) -> None:
    """Kill an actor's worker process as a crash would (unlike tb.kill): with max_restarts
    left, the actor is rebuilt from its last checkpoint and the calls since."""
    from .actors import ActorHandle
    if not isinstance(handle, ActorHandle):
        raise TypeError(f"kill_actor_process() expects an actor handle, got {type(handle).__name__}")
    _core().send(("kill_actor", handle._actor_id, True))
