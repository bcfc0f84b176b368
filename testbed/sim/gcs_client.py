"""Workload shape ``"gcs_client"`` (the paper's Fig. 10a): a GCS client's requests, one
Trace row each, through the chain model of :mod:`testbed.sim.gcs`."""
from __future__ import annotations

from ..core.task import TaskState
from ..core.trace import TraceRow
from .engine import NAN
from .faults import FaultySimulation


class GcsClientSimulation(FaultySimulation):
    """Workload shape ``"gcs_client"``: each job is one GCS request (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        spec = self.workload.spec
        #: bytes a write stores (key + value)
        self._kv = spec.gcs_key_bytes + spec.gcs_value_bytes
        #: writes acknowledged so far (every one is on every live chain member)
        self.gcs_writes_acked = 0

    def run(self):
        res = super().run()
        res.info["gcs_writes_acked"] = self.gcs_writes_acked
        return res

    def _ended_tasks(self) -> int:
        return 0                           # a client's keys are data, not lineage: never flushed

    def _submit(self, driver: int, t_sub: float) -> bool:
        nxt = self.workload.next_task(driver, t_sub)
        if nxt is None:
            return False
        j = nxt[0]
        kind, key = self.workload.gcs_request(j)
        write = kind == "write"
        lat = self._lat
        reply = self._gcs_op(key % self._n_gcs, t_sub + lat, write) + lat
        self._later(reply - self.env._now, (j, driver, write, t_sub), self._reply)
        return True

    def _reply(self, arg) -> None:
        self.pending -= 1
        j, driver, write, t_sub = arg
        now = self.env._now
        if write:
            self.gcs_kv_bytes += self._kv
            self.gcs_writes_acked += 1
        self.trace.add(TraceRow(task_id=j, job_id=j, function="gcs.write" if write else "gcs.read",
                                submitter=self.driver_nodes[driver], node=-1, submitted_s=t_sub, placed_s=t_sub,
                                started_s=t_sub, finished_s=now, spilled=False, predicted_wait_s=NAN,
                                bytes_transferred=0, attempt=1, state=TaskState.FINISHED.value))
        self.jobs_done += 1
        if self.jobs_done >= self.workload.total_jobs:
            self._stop()
        elif self.workload.arrival == "closed":
            self._submit(driver, now)
