"""Closed forms of queueing theory, and which one a simulator config is the textbook case of.

The study ``theory`` (:class:`testbed.studies.studies.Theory`) runs the simulator configured
as a textbook system (all overheads zero) and compares a per-run quantity with the value
below. Notation: ``lam`` arrival rate (1/s), ``mu`` service rate of one server (1/s), ``c``
servers, ``rho = lam / (c mu)`` the load; "wait" is the time in queue, "response" wait +
service.

- :func:`erlang_c`, :func:`mmc_wait`: M/M/c (Erlang C).
- :func:`pk_wait`: M/G/1 (Pollaczek–Khinchine) from the service time's first two moments;
  M/D/1 is ``es2 = D**2``, a lognormal of mean m and log-sd s has ``es2 = m**2 exp(s**2)``.
- N nodes under uniformly random routing are N independent M/M/c queues at ``lam / N``.
- :func:`power_of_d_tail`, :func:`power_of_d_response`: the mean-field limit of power-of-d
  choices over N -> inf single-server queues (Mitzenmacher 1996; Vvedenskaya et al. 1996).
- :func:`md1_over_link`: a fixed-service server reached over a link: latency + wait + D.
- :func:`lindley`: the exact FIFO single-server recursion for given arrivals and services.
- Little's law L = lam W ties the time-average number in system to the mean response.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from ..policy.registry import split_spec


def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in M/M/c with offered load ``a = lam / mu`` (< c)."""
    if not 0 <= a < c:
        raise ValueError(f"offered load {a} must be in [0, c={c})")
    rho = a / c
    # Erlang B by its stable recursion, then C = B / (1 - rho (1 - B))
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b / (1 - rho * (1 - b))


def mmc_wait(lam: float, mu: float, c: int) -> float:
    """Mean time in queue of M/M/c, seconds."""
    return erlang_c(c, lam / mu) / (c * mu - lam)


def mmc_response(lam: float, mu: float, c: int) -> float:
    """Mean response time (queue + service) of M/M/c, seconds."""
    return mmc_wait(lam, mu, c) + 1 / mu


def pk_wait(lam: float, es: float, es2: float) -> float:
    """Mean time in queue of M/G/1 (Pollaczek–Khinchine) from E[S] and E[S^2], seconds."""
    rho = lam * es
    if not 0 <= rho < 1:
        raise ValueError(f"load {rho} must be in [0, 1)")
    return lam * es2 / (2 * (1 - rho))


def lognormal_second_moment(mean: float, sigma: float) -> float:
    """E[S^2] of a lognormal with mean ``mean`` and standard deviation of ln S ``sigma``."""
    return mean * mean * math.exp(sigma * sigma)


def power_of_d_tail(rho: float, d: int, imax: int = 64) -> np.ndarray:
    """Mean-field fraction of queues with at least i tasks, i = 0..imax: rho^((d^i - 1)/(d - 1))
    (d = 1: rho^i, independent M/M/1 queues)."""
    i = np.arange(imax + 1, dtype=float)
    expo = i if d == 1 else (np.power(float(d), i) - 1) / (d - 1)
    return np.power(rho, np.minimum(expo, 1e6))


def power_of_d_queue_length(rho: float, d: int) -> float:
    """Mean-field mean number of tasks per queue (in service included): sum_{i>=1} s_i."""
    if d == 1:
        return rho / (1 - rho)
    return float(power_of_d_tail(rho, d)[1:].sum())


def power_of_d_response(rho: float, d: int, mu: float) -> float:
    """Mean-field mean response time under power-of-d (Little: L / per-queue rate), seconds."""
    return power_of_d_queue_length(rho, d) / (rho * mu)


def md1_over_link(lam: float, service_s: float, latency_s: float) -> float:
    """Mean time from issuing a request to a fixed-service server over a link until it is
    served: latency + M/D/1 wait + service, seconds."""
    return latency_s + pk_wait(lam, service_s, service_s ** 2) + service_s


def lindley(arrivals: np.ndarray, services: np.ndarray | float) -> np.ndarray:
    """Completion times of a FIFO single server for sorted ``arrivals`` (the Lindley
    recursion: start_k = max(arrival_k, end_{k-1}))."""
    a = np.asarray(arrivals, dtype=float)
    s = np.broadcast_to(np.asarray(services, dtype=float), a.shape)
    end = np.empty_like(a)
    prev = -math.inf
    for k in range(len(a)):
        prev = (a[k] if a[k] > prev else prev) + s[k]
        end[k] = prev
    return end


def service_moments(dist: dict) -> tuple[float, float]:
    """E[S] and E[S^2] of a workload duration table (constant, exponential, lognormal)."""
    kind = dist["dist"]
    if kind == "constant":
        v = float(dist["value"])
        return v, v * v
    if kind == "exponential":
        m = float(dist["mean"])
        return m, 2 * m * m
    if kind == "lognormal":
        m = float(dist["mean"])
        return m, lognormal_second_moment(m, float(dist["sigma"]))
    raise ValueError(f"no closed form for duration dist {kind!r}")


def check_textbook(cfg: dict[str, Any]) -> None:
    """Raise ValueError unless the resolved config is a textbook system :func:`textbook_case`
    has a closed form for: Poisson arrivals of independent one-CPU tasks from one duration
    distribution, identical nodes, no faults (a workload it cannot read fails before any run)."""
    c, w, f = cfg["cluster"], cfg["workload"], cfg["faults"]
    if w["shape"] != "independent" or w["arrival"] != "poisson":
        raise ValueError(f"needs Poisson arrivals of independent tasks (workload.shape = 'independent', "
                         f"arrival = 'poisson'), got shape {w['shape']!r}, arrival {w['arrival']!r}")
    if len(w["functions"]) > 1:
        raise ValueError("has no closed form for a mix of functions (workload.functions)")
    if any(fn.get("resources", {}) != {"CPU": 1.0} for fn in w["functions"]):
        raise ValueError("needs tasks of one CPU each (workload.resources)")
    for key in ("shift", "drift", "slowdowns"):
        if w.get(key):
            raise ValueError(f"has no closed form with workload.{key} set")
    if w.get("trace_file"):
        raise ValueError("has no closed form for a replayed trace (workload.trace_file)")
    if c["slow_nodes"] and c["slow_factor"] != 1.0 or c["node_groups"]:
        raise ValueError("needs identical nodes (no cluster.slow_nodes, no cluster.node_groups)")
    if f["node_failures"] or f["kill_every_s"] or f["worker_failures"]:
        raise ValueError("has no closed form with [faults]")
    textbook_case(cfg)


def textbook_case(cfg: dict[str, Any], lam: float | None = None) -> dict[str, Any]:
    """Which textbook system a resolved config is, and its closed-form values (at arrival
    rate ``lam``, 1/s; default the config's ``rate_per_s`` x ``drivers``).

    Returns ``{"system", "quantity", "theory", "lam", ...}`` where ``quantity`` names the
    per-task time the simulated value is the mean of: ``response`` (finished - submitted),
    ``wait`` (started - submitted) or ``decision`` (placed - submitted). Rules, in order:
    a positive ``global_decision_s`` with zero-length tasks is the server over a link;
    one node is M/M/c (exponential) or M/G/1 (otherwise, one slot); several nodes under
    ``Random`` are N independent queues, under ``PowerOfTwoChoices`` the mean-field limit.
    """
    c, w, sch = cfg["cluster"], cfg["workload"], cfg["scheduler"]
    lam = float(w["rate_per_s"]) * int(w["drivers"]) if lam is None else float(lam)
    es, es2 = service_moments(w["duration"])
    n, slots = int(c["nodes"]), int(c["cpus_per_node"])
    place, place_args = split_spec(sch["placement"], "scheduler.placement")
    if c["global_decision_s"] > 0 and es == 0:
        d = float(c["global_decision_s"])
        return {"system": "M/D/1 + link", "quantity": "decision", "lam": lam,
                "theory": md1_over_link(lam, d, float(c["latency_s"])), "service_s": d,
                "latency_s": float(c["latency_s"]), "rho": lam * d}
    rho = lam * es / (n * slots)
    if n == 1 or place == "Random":
        per = lam / n
        if w["duration"]["dist"] == "exponential":
            wait = mmc_wait(per, 1 / es, slots)
            system = f"M/M/{slots}" + (f" x {n} (random routing)" if n > 1 else "")
        elif slots == 1:
            wait = pk_wait(per, es, es2)
            system = ("M/D/1" if w["duration"]["dist"] == "constant" else "M/G/1") + \
                (f" x {n} (random routing)" if n > 1 else "")
        else:
            raise ValueError("no closed form for M/G/c with c > 1")
        return {"system": system, "quantity": "response", "lam": lam, "rho": rho, "theory": wait + es,
                "theory_wait": wait}
    if place == "PowerOfTwoChoices":
        if slots != 1 or w["duration"]["dist"] != "exponential":
            raise ValueError("the power-of-d mean field is for single-slot nodes, exponential service")
        d = int(place_args.get("d", 2))
        fresh = bool(c["view_fresh_per_decision"])
        # the mean field assumes fresh queue lengths; with a stale view the gap is the effect
        # of herding (measured, not a test of the simulator)
        return {"system": f"power-of-{d}, N={n}" + ("" if fresh else f", view {c['heartbeat_interval_s'] * 1e3:g} ms stale"),
                "quantity": "response", "lam": lam, "rho": rho, "d": d,
                "theory": power_of_d_response(rho, d, 1 / es), "effect": not fresh}
    raise ValueError(f"no closed form for placement {place!r} on {n} nodes")


def theory_at_rate(cfg: dict[str, Any], lam: float) -> float:
    """The config's closed-form value at arrival rate ``lam`` (e.g. the rate a run realized),
    NaN where the system is not stable at that rate."""
    try:
        return float(textbook_case(cfg, lam)["theory"])
    except ValueError:
        return math.nan


def time_average_in_system(submitted: np.ndarray, finished: np.ndarray, t0: float, t1: float,
                           points: int = 2000) -> float:
    """Time-average number of tasks in the system over [t0, t1], sampled on a grid."""
    grid = np.linspace(t0, t1, points)
    sub = np.sort(submitted)
    fin = np.sort(finished)
    return float(np.mean(np.searchsorted(sub, grid, side="right") - np.searchsorted(fin, grid, side="right")))



def power_of_d_reference(n: int, lam: float, mean_s: float, tasks: int, seed: int, d: int = 2,
                         warmup_fraction: float = 0.1) -> float:
    """Mean response of power-of-d over ``n`` FIFO single-server queues (Poisson arrivals,
    exponential service), by direct event simulation — independent of the simulator: each
    arrival samples ``d`` distinct queues and joins the one with fewest tasks (ties: the
    lower index). The finite-N reference the mean field (N -> inf) is a limit of."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7E0]))
    arr = np.cumsum(rng.exponential(1 / lam, tasks))
    svc = rng.exponential(mean_s, tasks)
    queues = [deque() for _ in range(n)]
    last = [0.0] * n
    resp = np.empty(tasks)
    for k in range(tasks):
        t = arr[k]
        picks = sorted(int(x) for x in rng.choice(n, d, replace=False))
        best, best_len = -1, 0
        for i in picks:
            q = queues[i]
            while q and q[0] <= t:
                q.popleft()
            if best < 0 or len(q) < best_len:
                best, best_len = i, len(q)
        end = max(t, last[best]) + svc[k]
        last[best] = end
        queues[best].append(end)
        resp[k] = end - t
    return float(resp[int(tasks * warmup_fraction):].mean())
