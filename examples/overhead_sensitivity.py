"""Does the simulator need overhead distributions, or are constants enough? (issue 8)

    python examples/overhead_sensitivity.py experiments/calibration/this_machine.toml --seeds 30

Runs experiments/validate_sim.toml's two open-arrival cases that miss most ("independent,
load 0.6" and "load 0.85": 4 nodes x 2 CPUs, 2 Poisson drivers, exponential 20 ms tasks,
PaperWaitTime + QueueThreshold 2) on the simulator only, with the calibration's values for
every [cluster] key except the per-task overheads, which it varies:

  mean        task_overhead_s and duration_inflation_s = the mean at that load ([meta], load_<rho>)
  median      the same keys at the median
  lognormal   a fresh draw per task, lognormal with the mean's mean and sigma 1.2 or 2.0
  zero        no per-task overhead

and prints, per variant, the change of the mean queueing delay, mean latency and p99 latency
against "mean" (paired by seed: same jobs and draws), with a 95% interval over seeds. The draws
come from their own generator (seeded per seed), so the workload's draws are the same in every
variant. The lognormal variants wrap the simulation's ``_start`` for this script only; the
simulator itself keeps constants.
"""
from __future__ import annotations

import argparse
import math
import tomllib
from pathlib import Path

import numpy as np

from testbed.studies.execute import make_simulation
from testbed.studies.experiment import load_experiment

ROOT = Path(__file__).resolve().parents[1]
CASES = (("independent, load 0.6", 0.6, 120.0, 1200), ("independent, load 0.85", 0.85, 170.0, 1600))
METRICS = ("queue_delay_mean_s", "latency_mean_s", "latency_p99_s")


def simulate(cfg: dict, overhead: float, inflation: float, sigma: float | None, seed: int) -> dict:
    cfg = dict(cfg, cluster=dict(cfg["cluster"], task_overhead_s=overhead, duration_inflation_s=inflation))
    sim = make_simulation(cfg, seed, keep_rows=True)
    if sigma and overhead > 0 and inflation > 0:
        rng = np.random.default_rng([seed, 8])
        mu_o, mu_i = math.log(overhead) - sigma ** 2 / 2, math.log(inflation) - sigma ** 2 / 2
        start = sim._start

        def drawn(t, m):
            sim._overhead = rng.lognormal(mu_o, sigma)
            sim._inflation = rng.lognormal(mu_i, sigma)
            start(t, m)
        sim._start = drawn
    return sim.run().metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("calibration", help="a file written by `testbed calibrate` (with phase D's load_<rho> levels)")
    ap.add_argument("--seeds", type=int, default=30, help="seeds per variant (default 30)")
    args = ap.parse_args()
    cal = Path(args.calibration).resolve()
    meta = tomllib.loads(cal.read_text())["meta"]
    for label, rho, rate, jobs in CASES:
        level = f"load_{rho:g}"
        if level not in meta.get("task_overhead_s", {}):
            raise SystemExit(f"{cal}: no [meta.task_overhead_s.{level}] (calibrate with phase D)")
        over, infl = meta["task_overhead_s"][level], meta["duration_inflation_s"][level]
        exp = load_experiment(ROOT / "experiments" / "validate_sim.toml",
                              [f"cluster.calibration={cal}", "run.seeds=[0]"])
        cfg = next(p.config for p in exp.points if p.label.startswith(label) and p.label.endswith(" sim"))
        cfg = dict(cfg, workload=dict(cfg["workload"], rate_per_s=rate, jobs=jobs))
        variants = {"mean (constant)": (over["mean"], infl["mean"], None),
                    "median (constant)": (over["median"], infl["median"], None),
                    "lognormal, same mean, sigma 1.2": (over["mean"], infl["mean"], 1.2),
                    "lognormal, same mean, sigma 2.0": (over["mean"], infl["mean"], 2.0),
                    "zero": (0.0, 0.0, None)}
        print(f"{label}: task_overhead_s mean {over['mean'] * 1e3:.3f} / median {over['median'] * 1e3:.3f} ms, "
              f"duration_inflation_s mean {infl['mean'] * 1e3:.3f} / median {infl['median'] * 1e3:.3f} ms; "
              f"{args.seeds} seeds")
        res = {name: [simulate(cfg, o, i, s, seed) for seed in range(args.seeds)]
               for name, (o, i, s) in variants.items()}
        ref = {k: np.array([r[k] for r in res["mean (constant)"]]) for k in METRICS}
        for name, runs in res.items():
            cells = []
            for k in METRICS:
                x = np.array([r[k] for r in runs])
                d = (x - ref[k]) / ref[k]
                half = 1.96 * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
                cells.append(f"{k.removesuffix('_s')} {x.mean() * 1e3:7.2f} ms {d.mean():+6.1%} ±{half:.1%}")
            print(f"  {name:32s} " + " | ".join(cells))


if __name__ == "__main__":
    main()
