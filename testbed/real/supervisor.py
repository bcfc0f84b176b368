"""The supervisor: starts every process of a cluster and cleans up after all of them.

    driver ──stdin (bootstrap: folder, secret, config; then commands)──> supervisor
    driver <─stdout (one JSON line per event: "ready", "spawned", "exited")── supervisor
    supervisor ──fork──> GCS chain master and shard replicas, global scheduler, node managers, workers
    node manager ──private pipe ("spawn_worker")──> supervisor
    chain master ──private pipe ("spawn_replica shard replica")──> supervisor

It is a fresh interpreter that imports the runtime once and then *forks* each role, so a
process starts in milliseconds instead of a Python start-up each. It stays single-threaded
(forking a threaded process is unsafe). Children die with it (PR_SET_PDEATHSIG); it dies
with the driver: EOF on stdin (driver exited, crashed or was SIGKILLed) means clean up —
stop every child, unlink every /dev/shm file with the cluster's prefix, remove the folder.
It is a child subreaper (PR_SET_CHILD_SUBREAPER): a process a task starts and leaves behind
(orphaned, even in a session of its own) becomes its child, so the clean-up kills every
descendant, not only the roles it forked.
"""
from __future__ import annotations

import ctypes
import importlib
import json
import os
import select
import shutil
import signal
import sys
import time
import traceback

from . import params
from ..core.errors import one_line
from .context import Context
from .objstore import cleanup_prefix

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _die_with_parent(sig: int = signal.SIGKILL) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except Exception:   # noqa: BLE001 - not Linux: the lifeline (stdin EOF) still works
        pass


def _become_subreaper() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    except Exception:   # noqa: BLE001 - not Linux: a task's orphans escape the clean-up
        pass


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc; Linux's per-thread children lists)."""
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            for k in kids:
                if k not in out:
                    out.append(k)
                    stack.append(k)
    return out


class Supervisor:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        #: pid -> (role, args)
        self.children: dict[int, tuple[str, tuple]] = {}
        #: read end of each request pipe -> node index (a node manager's) or -1 (the chain master's)
        self.requests: dict[int, int] = {}
        self.next_worker = 0
        self.stdin_buf = b""
        #: nodes killed on purpose: their workers are not replaced
        self.dead_nodes: set[int] = set()

    def emit(self, **event) -> None:
        try:
            os.write(1, (json.dumps(event) + "\n").encode())
        except OSError:
            pass

    def spawn(self, role: str, *args) -> int:
        extra_r = extra_w = None
        if role in ("node", "gcsmaster"):
            extra_r, extra_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:   # child
            code = 0
            try:
                _die_with_parent()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)   # the driver's Ctrl-C is the driver's
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(2, 1)              # our stdout is the driver's event pipe: never write to it
                for fd in list(self.requests):
                    os.close(fd)
                if extra_r is not None:
                    os.close(extra_r)
                _run_role(self.ctx, role, args, extra_w)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0
            except BaseException:   # noqa: BLE001
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        if extra_w is not None:
            os.close(extra_w)
            self.requests[extra_r] = args[0] if role == "node" else -1
        self.children[pid] = (role, args)
        self.emit(event="spawned", role=role, args=list(args), pid=pid)
        return pid

    def start_cluster(self) -> None:
        cfg = self.ctx.config
        self.spawn("gcsmaster")
        for k in range(cfg["gcs_shards"]):
            for r in range(int(cfg["gcs_chain_length"])):
                self.spawn("gcs", k, r, False)
        self.spawn("gsched")
        for i, _ in enumerate(cfg["nodes"]):
            self.spawn("node", i)
        for i, res in enumerate(cfg["nodes"]):
            for _ in range(max(1, int(res.get("CPU", 1)))):
                self.spawn_worker(i)
        self.emit(event="started")

    def spawn_worker(self, node: int) -> None:
        self.next_worker += 1
        self.spawn("worker", node, self.next_worker)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            role, args = self.children.pop(pid, ("?", ()))
            self.emit(event="exited", role=role, args=list(args), pid=pid,
                      status=os.waitstatus_to_exitcode(status))

    def serve(self) -> None:
        """Until the driver goes away (stdin EOF) or asks to shut down."""
        while True:
            fds = [0] + list(self.requests)
            try:
                ready, _, _ = select.select(fds, [], [], params.of(self.ctx, "supervisor_poll_s"))
            except InterruptedError:
                ready = []
            self.reap()
            for fd in ready:
                if fd == 0:
                    data = os.read(0, 65536)
                    if not data:
                        return            # the driver is gone
                    self.stdin_buf += data
                    while b"\n" in self.stdin_buf:
                        line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
                        if self.command(json.loads(line)) == "stop":
                            return
                else:
                    self.node_request(fd)

    def command(self, cmd: dict) -> str | None:
        op = cmd.get("cmd")
        if op == "shutdown":
            return "stop"
        if op == "kill_node":
            self.kill_node(int(cmd["index"]))
        elif op == "add_node":
            self.add_node(cmd["resources"])
        elif op == "kill_worker":
            workers = sorted(pid for pid, (role, args) in self.children.items()
                             if role == "worker" and args and args[0] == int(cmd["index"]))
            if workers:                      # the newest: most likely a busy one, not an actor's
                try:
                    os.kill(workers[-1], signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return None

    def kill_node(self, index: int) -> None:
        """A node crashes: its node manager and workers die at once, its objects are lost."""
        self.dead_nodes.add(index)
        victims = [pid for pid, (role, args) in self.children.items()
                   if role in ("node", "worker") and args and args[0] == index]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in victims:           # reap them now so nothing of the node is left running
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            role, args = self.children.pop(pid, ("?", ()))
            self.emit(event="exited", role=role, args=list(args), pid=pid, status=-9)
        cleanup_prefix(self.ctx.store_prefix(index), self.ctx.spill_dir(index))
        try:
            os.unlink(self.ctx.node(index))      # no one may connect to the dead node's socket
        except OSError:
            pass
        self.emit(event="node_killed", index=index)

    def add_node(self, resources: dict) -> None:
        index = len(self.ctx.config["nodes"])
        self.ctx.config["nodes"].append(dict(resources))
        self.spawn("node", index)
        for _ in range(max(1, int(resources.get("CPU", 1)))):
            self.spawn_worker(index)
        self.emit(event="node_added", index=index)

    def node_request(self, fd: int) -> None:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if not data:
            os.close(fd)
            self.requests.pop(fd, None)
            return
        node = self.requests[fd]
        for line in data.decode().splitlines():
            words = line.split()
            if words == ["spawn_worker"] and node >= 0 and node not in self.dead_nodes:
                self.spawn_worker(node)
            elif len(words) == 3 and words[0] == "spawn_replica" and node == -1:
                self.spawn("gcs", int(words[1]), int(words[2]), True)

    def cleanup(self) -> None:
        # the driver's death sends both EOF and SIGTERM (PDEATHSIG): the second must not
        # cut this clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2.0
        while self.children and time.monotonic() < deadline:
            self.reap()
            if self.children:
                time.sleep(0.01)
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.children.pop(pid, None)
        self.kill_descendants()
        if self.ctx.shm_prefix:
            cleanup_prefix(self.ctx.shm_prefix)      # it ends in "-": every file of the cluster
        shutil.rmtree(self.ctx.dir, ignore_errors=True)


    def kill_descendants(self, timeout_s: float = 5.0) -> None:
        """Kill and reap whatever tasks left running: their children, orphaned to us (the
        subreaper) when the workers died, and anything those started meanwhile."""
        me = os.getpid()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for pid in descendants(me):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return                       # no child left at all
            if pid == 0:
                time.sleep(0.005)            # SIGKILLed, not exited yet (a bounded wait)


def _run_role(ctx: Context, role: str, args: tuple, extra_fd) -> None:
    if role == "gcs":
        from .gcs import main
        main(ctx, *args)
    elif role == "gcsmaster":
        from .gcsmaster import main
        main(ctx, extra_fd)
    elif role == "gsched":
        from .gsched import main
        main(ctx)
    elif role == "node":
        from .node import main
        main(ctx, args[0], extra_fd)
    elif role == "worker":
        from .worker import main
        main(ctx, *args)
    else:
        raise ValueError(role)


def main() -> None:
    line = b""
    while not line.endswith(b"\n"):      # unbuffered: later commands must reach select()
        chunk = os.read(0, 1)
        if not chunk:
            return
        line += chunk
    boot = json.loads(line)
    ctx = Context(dir=boot["dir"], secret=bytes.fromhex(boot["secret"]), config=boot["config"],
                  shm_prefix=boot["shm_prefix"])
    params.install(ctx.config["system"])      # the roles fork from here and inherit it
    sys.path[:0] = [p for p in boot.get("sys_path", []) if p not in sys.path]
    if boot.get("cwd"):
        os.chdir(boot["cwd"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(signal.SIGTERM)
    _become_subreaper()
    sup = Supervisor(ctx)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    # import the roles once, so that forked children start warm (and what the driver preloads:
    # a worker's first task would otherwise import its function's module, ~0.1 s with numpy)
    from . import gcs, gcsmaster, gsched, node, worker  # noqa: F401
    for name in boot.get("preload", []):
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - any failure of a user's module is reported, one line
            sup.emit(event="failed", why=one_line(f"preload: importing {name!r} failed: {type(exc).__name__}: {exc}"))
            raise SystemExit(1) from None
    try:
        sup.start_cluster()
        sup.serve()
    except SystemExit:
        pass
    finally:
        sup.cleanup()


if __name__ == "__main__":
    main()
