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

As in Ray, the decorated class stands for the class: its class and static attributes are
reachable through it (``Cls.X`` inside a method, where ``Cls`` is the module's name for the
actor class), it cannot be subclassed, and a creation or a call whose arguments do not fit the
constructor's or method's signature is a TypeError at ``.remote()``. An actor asking for no
resources holds none while it lives but needs 1 CPU free to be placed (Ray's rule; so a
cluster without CPUs cannot hold it). A handle's ``_actor_id`` (bytes, as Ray's handle has an
``_actor_id``) is the actor's id; ``ActorDiedError.actor_id`` is ``handle._actor_id.hex()``.
"""
from __future__ import annotations

import inspect
import time

from .core import new_task_id


#: what an actor that asks for no resources needs free on a node to be placed (Ray: 1 CPU for
#: scheduling, none while it runs)
DEFAULT_ACTOR_PLACEMENT = {"CPU": 1.0}


def _method_info(cls, name: str) -> tuple[int, object]:
    """(default num_returns from @tb.method, call signature without ``self``) of a method."""
    from .api import call_signature
    try:
        raw = inspect.getattr_static(cls, name)
    except AttributeError:                  # dynamic (a metaclass's __getattr__): not checked
        return 1, None
    if isinstance(raw, staticmethod):
        fn, sig = raw.__func__, call_signature(raw.__func__)
    elif isinstance(raw, classmethod):
        fn, sig = raw.__func__, call_signature(getattr(cls, name))
    elif inspect.isfunction(raw):
        fn, sig = raw, call_signature(raw, skip_first=True)
    else:                                   # another callable attribute: its calls are not checked
        fn, sig = raw, None
    return getattr(fn, "__tb_num_returns__", 1), sig


class ActorClass:
    def __init__(self, cls, options: dict):
        from .api import _resources, call_signature
        self._cls = cls
        self._options = options
        self.__name__ = cls.__name__
        self.__qualname__ = getattr(cls, "__qualname__", cls.__name__)
        self.__doc__ = cls.__doc__
        self.__module__ = cls.__module__
        #: method name -> (default num_returns, call signature)
        self._methods = {n: _method_info(cls, n) for n, _ in inspect.getmembers(cls, callable)
                         if not n.startswith("__") or n == "__call__"}
        self._init_signature = call_signature(cls)
        #: what the actor holds while it lives, and (when it asks for nothing) what it needs to be placed
        self._demand = _resources(options.get("num_cpus", 0), options.get("num_gpus"), options.get("resources"), "")
        asks = any(options.get(k) is not None for k in ("num_cpus", "num_gpus")) or bool(options.get("resources"))
        self._placement = None if asks else dict(DEFAULT_ACTOR_PLACEMENT)

    def __getattr__(self, name: str):
        # only reached for names the wrapper lacks: the class's own attributes (class and static
        # attributes, methods), as with Ray's actor class, which derives from the class
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        cls = self.__dict__.get("_cls")
        if cls is None:                      # being unpickled: no class yet
            raise AttributeError(name)
        try:
            return getattr(cls, name)
        except AttributeError:
            raise AttributeError(f"actor class {cls.__name__} has no attribute {name!r}") from None

    def __mro_entries__(self, bases):
        raise TypeError(f"cannot subclass actor class {self.__name__}: inheriting from actor classes is not "
                        f"supported (as in Ray); subclass the plain class and put @tb.remote on the subclass")

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor class {self.__name__} cannot be instantiated directly; "
                        f"use {self.__name__}.remote(...)")

    def options(self, **opts) -> "ActorClass":
        from .api import _check_options
        return ActorClass(self._cls, _check_options({**self._options, **opts}, True))

    def remote(self, *args, **kwargs) -> "ActorHandle":
        from .api import _core, _encode_args, check_call
        check_call(self._init_signature, self.__name__, args, kwargs)
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
                "checkpoint_interval": opts.get("checkpoint_interval", 0), "resources": self._demand}
        if self._placement is not None:
            spec["placement_resources"] = self._placement      # see placement_demand
        core.send(("submit", spec))
        return ActorHandle(actor_id, name, self._methods)


def placement_demand(spec: dict) -> dict:
    """What a task or actor creation needs free on a node to start there (and some node's total
    to be feasible): its resources, or for an actor that asks for none, DEFAULT_ACTOR_PLACEMENT."""
    return spec.get("placement_resources", spec["resources"])


class ActorHandle:
    """A reference to a running actor; can be passed to tasks and other actors."""

    def __init__(self, actor_id: bytes, class_name: str, methods: dict[str, tuple]):
        #: the actor's id (Ray's handles have ``_actor_id`` too); ``.hex()`` is ActorDiedError.actor_id
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = methods

    def __reduce__(self):
        return (ActorHandle, (self._actor_id, self._class_name, self._methods))

    def __getattr__(self, name: str) -> "ActorMethod":
        if name.startswith("_") and name != "__call__":
            raise AttributeError(name)
        info = self._methods.get(name)
        if info is None:
            raise AttributeError(f"actor {self._class_name} has no method {name!r}")
        return ActorMethod(self, name, *info)

    def __repr__(self):
        return f"ActorHandle({self._class_name}, {self._actor_id.hex()[:12]})"

    def __eq__(self, other):
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self):
        return hash(self._actor_id)


class ActorMethod:
    def __init__(self, handle: ActorHandle, name: str, num_returns: int, signature=None):
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._signature = signature

    def __call__(self, *args, **kwargs):
        raise TypeError(f"actor methods cannot be called directly; use .{self._name}.remote(...)")

    def options(self, **opts) -> "ActorMethod":
        """``.options(num_returns=N)`` for this call (0: it returns None), as in Ray."""
        from .api import _check_num_returns
        for k in opts:
            if k != "num_returns":
                raise TypeError(f"unknown option {k!r} of an actor method call; options: num_returns")
        nr = _check_num_returns(opts.get("num_returns", self._num_returns))
        return ActorMethod(self._handle, self._name, nr, self._signature)

    def remote(self, *args, **kwargs):
        from .api import _core, _encode_args, _return_refs, check_call
        h = self._handle
        check_call(self._signature, f"{h._class_name}.{self._name}", args, kwargs)
        core = _core()
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


def kill(handle: ActorHandle, no_restart: bool = True) -> None:
    """Kill an actor's process now. With ``no_restart`` (the default, as in Ray) it stays dead
    whatever its ``max_restarts``: its pending and future calls fail with ActorDiedError.
    ``no_restart=False`` kills it as a crash would (the node manager's crash path: it restarts
    while restarts remain). Anything but an actor handle is a ValueError (as in Ray); killing a
    dead actor again does nothing."""
    from .api import _core
    if not isinstance(handle, ActorHandle):
        raise ValueError(f"kill() is for actors: it expects an actor handle, got {type(handle).__name__} "
                         f"{handle!r:.60}")
    if not isinstance(no_restart, bool):
        raise TypeError(f"no_restart must be True or False, got {no_restart!r}")
    _core().send(("kill_actor", handle._actor_id, not no_restart))
