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
        """This error as an instance of a class deriving from TaskError *and* the cause's type."""
        ct = self.cause_type
        if ct is None or not isinstance(ct, type) or issubclass(TaskError, ct) or not issubclass(ct, BaseException):
            return self
        try:
            cls = _DERIVED.get(ct)
            if cls is None:
                cls = type(f"TaskError({ct.__name__})", (TaskError, ct), {
                    "__init__": lambda s, *a: None, "__str__": lambda s: TaskError.__str__(s),
                    "__reduce__": TaskError.__reduce__})
                _DERIVED[ct] = cls
            err = cls.__new__(cls)
            TaskError.__init__(err, self.function, ct, self.cause_repr, self.traceback_str, self.cause)
            return err
        except TypeError:    # a cause type that cannot be subclassed (final, or layout conflict)
            return self


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
    """The actor is dead (killed, crashed, or its constructor raised); the call did not run."""


class ObjectLostError(TestbedRuntimeError):
    """An object was lost with its node and cannot be rebuilt (a put, no lineage, or too
    many re-executions)."""
