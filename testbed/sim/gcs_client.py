"""Workload shape ``"gcs_client"`` (the paper's Fig. 10a): a GCS client's requests, one
Trace row each, through the chain model of :mod:`testbed.sim.gcs`."""
from __future__ import annotations

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
        self.trace.add((j, j, "gcs.write" if write else "gcs.read", self.driver_nodes[driver], -1, t_sub, t_sub,
                        t_sub, now, False, NAN, 0, 1, "finished"))
        self.jobs_done += 1
        if self.jobs_done >= self.workload.total_jobs:
            self._stop()
        elif self.workload.arrival == "closed":
            self._submit(driver, now)
