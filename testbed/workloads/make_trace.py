"""Write a synthetic cluster trace in the trace-file format (:mod:`testbed.workloads.tracefile`).

    python -m testbed.workloads.make_trace --rows 3000 --seed 0 --out experiments/traces/synthetic.csv

The trace mimics what public cluster traces show, at a size a test can replay: arrivals
are a Poisson process whose rate swings by +-60% around ``--rate`` over a 10 s period
(bursts), and four functions differ in every column:

=========  ======  ==================================  ====  ==================
function   share   duration_s                          cpus  output_bytes
=========  ======  ==================================  ====  ==================
serve      40%     exponential, mean 10 ms             1     10 kB
etl        35%     lognormal, mean 50 ms, sigma 1      1     uniform 0-1 MB
train      10%     Pareto, alpha 1.8, mean 400 ms      2     0
shuffle    15%     exponential, mean 100 ms            1     4 MB
=========  ======  ==================================  ====  ==================

Deterministic: the same ``--seed`` and ``--rows`` give the same file byte for byte.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from .tracefile import COLUMNS

#: (name, share, draw(rng, n) -> seconds, cpus, draw(rng, n) -> bytes)
FUNCTIONS = (
    ("serve", 0.40, lambda g, n: g.exponential(0.01, n), 1, lambda g, n: np.full(n, 10_000.0)),
    ("etl", 0.35, lambda g, n: g.lognormal(math.log(0.05) - 0.5, 1.0, n), 1, lambda g, n: g.uniform(0, 1e6, n)),
    ("train", 0.10, lambda g, n: (g.pareto(1.8, n) + 1.0) * 0.4 * 0.8 / 1.8, 2, lambda g, n: np.zeros(n)),
    ("shuffle", 0.15, lambda g, n: g.exponential(0.1, n), 1, lambda g, n: np.full(n, 4e6)),
)
#: period of the arrival rate's swing, seconds, and its relative amplitude
PERIOD_S = 10.0
AMPLITUDE = 0.6


def make_trace(rows: int, seed: int, rate_per_s: float) -> list[tuple]:
    """``rows`` rows (arrival_s, function, duration_s, cpus, gpus, output_bytes), by arrival."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x74726163]))
    # a non-homogeneous Poisson process by thinning a homogeneous one at the peak rate
    peak = rate_per_s * (1 + AMPLITUDE)
    times: list[float] = []
    t = 0.0
    while len(times) < rows:
        gaps = rng.exponential(1.0 / peak, rows)
        keep = rng.random(rows)
        for gap, u in zip(gaps.tolist(), keep.tolist()):
            t += gap
            if u * peak <= rate_per_s * (1 + AMPLITUDE * math.sin(2 * math.pi * t / PERIOD_S)):
                times.append(t)
                if len(times) == rows:
                    break
    shares = np.array([f[1] for f in FUNCTIONS])
    which = rng.choice(len(FUNCTIONS), size=rows, p=shares / shares.sum())
    dur = np.empty(rows)
    out = np.empty(rows)
    for k, (_, _, draw_d, _, draw_o) in enumerate(FUNCTIONS):
        mask = which == k
        dur[mask] = draw_d(rng, int(mask.sum()))
        out[mask] = draw_o(rng, int(mask.sum()))
    return [(times[i], FUNCTIONS[k][0], float(dur[i]), FUNCTIONS[k][3], 0, int(round(out[i])))
            for i, k in enumerate(which.tolist())]


def write_trace(path: str | Path, rows: list[tuple], comment: str = "") -> None:
    """Write ``rows`` with the header line (and a ``#`` comment line first, if given)."""
    lines = [f"# {comment}"] if comment else []
    lines.append(",".join(COLUMNS))
    for a, f, d, c, g, o in rows:
        lines.append(f"{a:.6f},{f},{d:.6f},{c},{g},{o}")
    p = Path(path)
    tmp = p.with_name(p.name + ".part")
    try:
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(p)                  # nothing half-written
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.workloads.make_trace", description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=3000, help="rows (tasks) to write (default 3000)")
    ap.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    ap.add_argument("--rate", type=float, default=100.0, help="mean arrivals per second (default 100)")
    ap.add_argument("--out", required=True, help="the CSV file to write")
    a = ap.parse_args(argv)
    if a.rows < 1 or a.seed < 0 or not (a.rate > 0 and math.isfinite(a.rate)):
        print("make_trace: --rows must be >= 1, --seed >= 0 and --rate > 0", file=sys.stderr)
        return 2
    rows = make_trace(a.rows, a.seed, a.rate)
    try:
        write_trace(a.out, rows, f"python -m testbed.workloads.make_trace --rows {a.rows} --seed {a.seed} "
                                 f"--rate {a.rate:g}")
    except OSError as exc:
        print(f"make_trace: {a.out}: cannot write: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
