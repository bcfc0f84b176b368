"""Run one resolved config with one seed on its engine."""
from __future__ import annotations

from typing import Any

from ..workloads import Workload, parse_workload
from ..core.result import RunResult
from ..policy.base import EstimateError
from ..policy.build import build_policies

#: run.trace = "auto" keeps per-task rows up to this many tasks
AUTO_ROWS_MAX_TASKS = 200_000


def make_simulation(cfg: dict[str, Any], seed: int, keep_rows: bool | None = None):
    from ..sim import Simulation   # SimPy is imported only when a simulation is made
    placement, spillover = build_policies(cfg["scheduler"])
    workload = Workload(parse_workload(cfg["workload"]), seed)
    if keep_rows is None:
        mode = cfg["run"]["trace"]
        keep_rows = mode == "rows" or (
            mode == "auto" and workload.total_jobs * workload.tasks_per_job <= AUTO_ROWS_MAX_TASKS)
    if cfg["run"]["track_estimates"]:
        placement.estimate_error = EstimateError()
    return Simulation(cfg["cluster"], workload, placement, spillover, seed=seed, keep_rows=keep_rows,
                      validate=cfg["run"]["validate"], max_sim_time_s=cfg["run"]["max_sim_time_s"],
                      faults=cfg.get("faults"), decide_at=cfg["scheduler"]["decide_at"])


def run_once(cfg: dict[str, Any], seed: int, keep_rows: bool | None = None):
    """Run ``cfg`` with ``seed``; returns the engine's result (trace, metrics, info)."""
    engine = cfg["run"]["engine"]
    if engine == "real":
        from ..real.engine import run_real
        trace, metrics, info = run_real(cfg, seed)
        return RunResult(trace=trace if keep_rows is not False else None, metrics=metrics, info=info)
    sim = make_simulation(cfg, seed, keep_rows)
    res = sim.run()
    if sim.placement.estimate_error is not None:
        res.metrics.update(sim.placement.estimate_error.result())
    return res
