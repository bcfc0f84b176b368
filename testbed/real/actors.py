"""Actors: ``@tb.remote`` on a class.

    Cls.remote(...) ──("submit", {"kind": "actor_create", ...})──> local node manager
        placed like a task (spillover / global scheduler); the chosen node dedicates a worker
        to it and holds the actor's resources for its lifetime; the GCS actor table then
        says where it lives
    handle.method.remote(...) ──("submit", {"kind": "actor_call", ...})──> caller's node manager
        ──(routed to the actor's node, in order)──> actor's node manager ──("run")──> its worker

An actor runs one call at a time. Each caller's calls (a caller is a process: the driver, or a
worker running tasks) run in its submission order: they travel one FIFO path (caller -> its
node manager -> the actor's node manager -> the actor's queue), numbered per caller. As in Ray,
callers do not wait for each other: the actor runs the oldest call whose inputs are here and
whose caller has no earlier call still waiting (node.Actor.next_call).
"""
from __future__ import annotations

import inspect
import time

from .core import new_task_id


class ActorClass:
    def __init__(self, cls, options: dict):
        self._cls = cls
        self._options = options
        self.__name__ = cls.__name__
        self.__doc__ = cls.__doc__
        self._methods = tuple(n for n, _ in inspect.getmembers(cls, callable)
                              if not n.startswith("__") or n == "__call__")

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor class {self.__name__} cannot be instantiated directly; "
                        f"use {self.__name__}.remote(...)")

    def options(self, **opts) -> "ActorClass":
        from .api import _check_options
        return ActorClass(self._cls, _check_options({**self._options, **opts}, True))

    def remote(self, *args, **kwargs) -> "ActorHandle":
        from .api import _core, _encode_args, _resources
        core = _core()
        opts = self._options
        fid, data = core.function_id(self._cls)
        actor_id = new_task_id()
        name = self.__name__
        args, kwargs = _encode_args(core, args, kwargs, name)
        spec = {"kind": "actor_create", "task_id": actor_id, "actor_id": actor_id, "fn_id": fid, "fn": data,
                "name": f"{name}.__init__", "class_name": name, "args": args, "kwargs": kwargs,
                "num_returns": 1, "max_retries": 0, "pin_node": opts.get("_node"),
                "max_restarts": opts.get("max_restarts", 0), "max_task_retries": opts.get("max_task_retries", 0),
                "checkpoint_interval": opts.get("checkpoint_interval", 0),
                "resources": _resources(opts.get("num_cpus", 0), opts.get("num_gpus"), opts.get("resources"), "")}
        core.send(("submit", spec))
        return ActorHandle(actor_id, name, self._methods)


class ActorHandle:
    """A reference to a running actor; can be passed to tasks and other actors."""

    def __init__(self, actor_id: bytes, class_name: str, methods: tuple[str, ...]):
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = methods

    def __reduce__(self):
        return (ActorHandle, (self._actor_id, self._class_name, self._methods))

    def __getattr__(self, name: str) -> "ActorMethod":
        if name.startswith("_") and name != "__call__":
            raise AttributeError(name)
        if name not in self._methods:
            raise AttributeError(f"actor {self._class_name} has no method {name!r}")
        return ActorMethod(self, name, 1)

    def __repr__(self):
        return f"ActorHandle({self._class_name}, {self._actor_id.hex()[:12]})"

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self):
        return hash(self._actor_id)


class ActorMethod:
    def __init__(self, handle: ActorHandle, name: str, num_returns: int):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor methods cannot be called directly; use .{self._name}.remote(...)")

    def options(self, num_returns: int = 1) -> "ActorMethod":
        if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns < 1:
            raise ValueError(f"num_returns must be an integer >= 1, got {num_returns!r}")
        return ActorMethod(self._handle, self._name, num_returns)

    def remote(self, *args, **kwargs):
        from .api import _core, _encode_args, _return_refs
        core = _core()
        h = self._handle
        task_id = new_task_id()
        name = f"{h._class_name}.{self._name}"
        args, kwargs = _encode_args(core, args, kwargs, name)
        spec = {"kind": "actor_call", "task_id": task_id, "actor_id": h._actor_id, "method": self._name,
                "submitted_at": time.time(), "name": name, "fn_id": None, "fn": None, "args": args, "kwargs": kwargs,
                "num_returns": self._num_returns, "max_retries": 0, "resources": {}}
        core.send(("submit", spec))
        return _return_refs(task_id, self._num_returns)


#: fields of a creation spec that belong to one (re)creation of the actor, not to the actor
ONE_CREATION = ("restore", "rebuild", "calls_done", "attempt")


def actor_entry(spec: dict, node: int, state: str | None = None, restarts: int | None = None) -> dict:
    """The actor table's entry for an actor at ``node``: on its way there (being created, or
    rebuilt after its node died) unless ``state`` says otherwise ("alive"). It holds enough for
    the global scheduler to place the actor again if that node dies."""
    base = {k: v for k, v in spec.items() if k not in ONE_CREATION + ("pred", "spilled", "pin_node")}
    rebuild = bool(spec.get("rebuild"))
    if restarts is None:
        restarts = spec.get("attempt", 1) - 1 if rebuild else 0
    return {"node": node, "state": state or ("restarting" if rebuild else "pending"), "name": spec["class_name"],
            "spec": base, "restarts": restarts}


def kill(handle: ActorHandle) -> None:
    """Kill an actor's process now; its pending and future calls fail with ActorDiedError.
    Anything but an actor handle is a ValueError (as in Ray); killing a dead actor again
    does nothing."""
    from .api import _core
    if not isinstance(handle, ActorHandle):
        raise ValueError(f"kill() is for actors: it expects an actor handle, got {type(handle).__name__} "
                         f"{handle!r:.60}")
    _core().send(("kill_actor", handle._actor_id))
