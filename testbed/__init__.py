"""testbed: a research testbed for Ray-style distributed runtimes.

``import testbed`` is cheap: it starts no process and imports no SimPy machinery. The
runtime's API (``tb.init``, ``tb.remote``, ``tb.get``, ...) loads on first use; the
simulator lives in :mod:`testbed.sim`, the shared policy layer in :mod:`testbed.policy`,
the experiment runner in :mod:`testbed.studies`.
"""

__version__ = "0.1.0"

#: names served lazily from testbed.real.api / testbed.real.errors / testbed.real.core
_API = {
    "init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "nodes",
    "cluster_resources", "available_resources", "kill", "timeline", "kill_node", "add_node", "kill_worker",
    "kill_actor_process", "kill_gcs_replica", "gcs_chains", "method", "get_gpu_ids",
}
_ERRORS = {"TaskError", "GetTimeoutError", "InfeasibleError", "WorkerCrashedError", "ClusterError",
           "ActorDiedError", "ObjectLostError", "ObjectStoreFullError"}


def __getattr__(name):
    if name in _API:
        from .real import api
        return getattr(api, name)
    if name in _ERRORS:
        from .real import errors
        return getattr(errors, name)
    if name == "ObjectRef":
        from .real.core import ObjectRef
        return ObjectRef
    raise AttributeError(f"module 'testbed' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _API | _ERRORS | {"ObjectRef"})
