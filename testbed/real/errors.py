"""Errors the runtime raises to user code."""
from __future__ import annotations


class TestbedRuntimeError(Exception):
    """Base of the runtime's errors."""


class TaskError(TestbedRuntimeError):
    """A task raised. ``get`` re-raises it as an instance of both TaskError and the original
    exception's type, so ``except ValueError`` still works; ``str()`` shows the remote traceback."""

    def __init__(self, function: str, cause_type: type | None, cause_repr: str, traceback_str: str,
                 cause: BaseException | None = None):
        self.function = function
        self.cause_type = cause_type
        self.cause_repr = cause_repr
        self.traceback_str = traceback_str
        self.cause = cause
        super().__init__(f"task {function} failed: {cause_repr}\n\nremote traceback:\n{traceback_str}")

    def __reduce__(self):
        return (TaskError, (self.function, self.cause_type, self.cause_repr, self.traceback_str, self.cause))

    def as_instanceof_cause(self) -> "TaskError":
        """This error as an instance of a class deriving from the cause's type *and* TaskError
        (``except MemoryError`` catches it), carrying the cause's attributes; itself when the
        cause's type cannot be derived from, and for KeyboardInterrupt, SystemExit and
        GeneratorExit, which the interpreter treats as control flow (an uncaught SystemExit
        from ``get`` would end the driver quietly)."""
        ct = self.cause_type
        if ct is None or not isinstance(ct, type) or issubclass(TaskError, ct) or not issubclass(ct, BaseException) \
                or issubclass(ct, _CONTROL):
            return self
        cause = self.cause if type(self.cause) is ct else None
        try:
            cls = _DERIVED.get(ct)
            if cls is None:
                # the cause's type first: its constructor (__new__) builds the instance, so
                # types with their own layout or __new__ (MemoryError, UnicodeError,
                # ExceptionGroup) work; TaskError's methods override the cause's
                cls = type(f"TaskError({ct.__name__})", (ct, TaskError), {
                    "__init__": _no_init, "__str__": TaskError.__str__, "__reduce__": TaskError.__reduce__,
                    "__module__": __name__})
                _DERIVED[ct] = cls
            err = ct.__new__(cls, *(cause.args if cause is not None else ()))
        except Exception:  # noqa: BLE001 - a type that cannot be subclassed or built without its arguments
            return self
        if cause is not None:
            if ct.__module__ == "builtins":
                try:      # a built-in type's fields are set by its __init__ (UnicodeError's, OSError's)
                    ct.__init__(err, *cause.args)
                except Exception:  # noqa: BLE001 - the fields just stay unset
                    pass
            if isinstance(cause, OSError):      # filename(2) are not in OSError's args
                err.errno, err.strerror = cause.errno, cause.strerror
                err.filename, err.filename2 = cause.filename, cause.filename2
            err.__dict__.update(getattr(cause, "__dict__", {}))   # a user type's attributes
        TaskError.__init__(err, self.function, ct, self.cause_repr, self.traceback_str, self.cause)
        return err


def _no_init(self, *args, **kwargs) -> None:
    """A derived TaskError is built by as_instanceof_cause, never by calling its class."""


#: exceptions the interpreter treats as control flow: get raises a plain TaskError for them
_CONTROL = (KeyboardInterrupt, SystemExit, GeneratorExit)

_DERIVED: dict[type, type] = {}


def as_failure(error: BaseException) -> BaseException:
    """Mark ``error`` as standing for a failure when stored in an object's place (see is_failure)."""
    error._testbed_raise = True
    return error


def is_failure(value) -> bool:
    """Whether an object's value stands for a failure, not a result: a task's TaskError, or an
    error the node manager stored in the object's place (marked ``_testbed_raise``). ``get``
    raises it; a task given it as an argument fails with it."""
    return isinstance(value, TaskError) or (isinstance(value, BaseException)
                                            and getattr(value, "_testbed_raise", False))


class GetTimeoutError(TestbedRuntimeError, TimeoutError):
    """``get`` did not see the object within its timeout."""


class InfeasibleError(TestbedRuntimeError):
    """No node of the cluster has the resources the task or actor asks for."""


class WorkerCrashedError(TestbedRuntimeError):
    """The worker running the task died (and no retry was left)."""


class ClusterError(TestbedRuntimeError):
    """The cluster could not start, or is not running."""


class ActorDiedError(TestbedRuntimeError):
    """The actor is dead (killed, crashed, or its constructor raised); the call did not run.
    ``actor_id`` is the dead actor's id as a hex string (as in Ray), the same as
    ``handle._actor_id.hex()``; None when unknown."""

    def __init__(self, message: str = "", actor_id: str | None = None):
        super().__init__(message)
        self.actor_id = actor_id


class ObjectLostError(TestbedRuntimeError):
    """An object was lost with its node and cannot be rebuilt (a put, no lineage, or too
    many re-executions)."""


class ObjectStoreFullError(TestbedRuntimeError, MemoryError):
    """A node's object store cannot hold what is asked of it at once: a ``put`` or a task's
    result that does not fit, or a ``get`` of more objects than fit in the store together
    (a get pins every object it returns). Also a MemoryError."""
