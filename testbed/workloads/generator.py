"""A :class:`WorkloadSpec` plus a seed -> a streamed, deterministic sequence of jobs.

::

    engine ──next_job(driver, now)──▶ Workload ──job j──▶ chunk c = j // chunk_jobs
                                          │                 (LRU of 2 chunks; a miss draws
                                          │                  the whole chunk, vectorised)
           ──next_arrival_gap(driver)──▶  └── per-driver gap chunks (poisson)

**Which jobs a driver submits** (one rule, both engines): driver d of D submits jobs
d, d + D, d + 2D, ... below ``total_jobs`` (:meth:`Workload.driver_jobs`), in that order —
its k-th job is d + kD, whenever it asks and whatever the other drivers do. The simulator
takes them through ``next_job(d, now)`` / ``next_task(d, now)``, the real runtime's driver
processes by number (``job(j, ...)``), so job j has the same submitter in both. The *content* of job j (its tasks' functions, durations, output sizes and DAG)
depends only on (seed, j, regime): chunk c draws its arrays from its own stream
``SeedSequence([seed, JOB_STREAM, c])``, so two runs with different policies see the
same job j even when their drivers ask in a different order (common random numbers).
Durations are drawn both before and after the regime shift, so choosing by regime keeps
the draws common too. Poisson gaps come from each driver's own stream
``SeedSequence([seed, GAP_STREAM, driver, k])``, chunk k of ``GAP_CHUNK`` gaps: driver d's
i-th gap (the wait before its i-th job, d + iD) depends only on (seed, d, i). So the two
engines share every draw: job j's submitter, functions, durations, output sizes and its
arrival gap.

Only the current chunks are held, never the whole workload: memory is flat in the
number of jobs.

**Drift** (``workload.drift``, per function too) multiplies a task's drawn duration by
``DriftSpec.factor(now)`` at its submission time ``now``, so the draws stay common and only
the submission time moves them (as with a shift at ``at_s``). **Shape "trace"** takes job j
from the trace file's row j (function, duration, demand, output size; shift and drift still
apply), and ``arrival = "trace"`` gives driver d's i-th gap as the difference of the arrival
times of its jobs d + (i - 1)D and d + iD (the first: job d's arrival time), so each job is
submitted at its row's time whatever the number of drivers.
"""
from __future__ import annotations

import operator
from collections import OrderedDict

import numpy as np

from ..core.task import Job, TaskSpec
from .distributions import pick
from .spec import WorkloadSpec

#: stream tags (second SeedSequence word), keeping job draws, gap draws and any other
#: user of the run's seed apart
JOB_STREAM = 0x6A6F6273
GAP_STREAM = 1_000_003
#: a chunk holds at most this many jobs ...
MAX_JOBS_PER_CHUNK = 4096
#: ... and at most this many tasks (unless one job alone has more)
MAX_TASKS_PER_CHUNK = 1 << 16
#: chunks of job draws kept when jobs are taken by number (``Workload.job``). Drivers that
#: take theirs in order keep instead every chunk from their slowest one's next job on: they
#: take interleaved job numbers, d + kD, and drift apart (open-loop drivers by about the
#: square root of their job counts), and a chunk dropped before a straggler read it would be
#: drawn again for it — an LRU of 4 drew 8,415 chunks instead of 49 for ``testbed bench
#: sim``'s 100 Poisson drivers, twice its run time (see ``Workload._evict``)
CACHE_CHUNKS = 4
#: Poisson gaps drawn per driver at a time
GAP_CHUNK = 512
#: output sizes are clipped to this many bytes (int64 safe)
MAX_OUTPUT_BYTES = float(2 ** 62)


def job_deps(spec: WorkloadSpec) -> tuple[tuple[int, ...], ...]:
    """Each task's dependencies (indices within the job, lower only) for the spec's shape."""
    if spec.shape in ("independent", "actors", "gcs_client", "trace"):
        return ((),)           # actors: one method call; gcs_client: one GCS request; trace: one row
    if spec.shape == "chains":
        return ((),) + tuple((i - 1,) for i in range(1, spec.chain_length))
    if spec.shape == "map_reduce":
        maps = tuple(range(spec.map_tasks))
        return ((),) * spec.map_tasks + (maps,) * spec.reduce_tasks
    if spec.shape == "tree_reduce":
        deps: list[tuple[int, ...]] = [()] * spec.tree_leaves
        level = list(range(spec.tree_leaves))
        while len(level) > 1:
            nxt = []
            for g in range(0, len(level), spec.tree_fanin):
                nxt.append(len(deps))
                deps.append(tuple(level[g:g + spec.tree_fanin]))
            level = nxt
        return tuple(deps)
    raise ValueError(f"unknown shape {spec.shape!r}")


class _Chunk:
    """The draws of one chunk, as Python lists (cheap to index per job)."""
    __slots__ = ("fn", "before", "after", "out", "res")

    def __init__(self, fn, before, after, out, res=None):
        #: function index of each task
        self.fn: list[int] = fn
        #: duration before / after the shift, seconds (after is None without a shift)
        self.before: list[float] = before
        self.after: list[float] | None = after
        #: output size, bytes
        self.out: list[int] = out
        #: shape trace: each task's resource demand (shared dicts, one per distinct demand);
        #: None = its function's
        self.res: list[dict] | None = res


class Workload:
    """Streams the jobs of ``spec`` for one run seeded with ``seed``.

    Not thread-safe; one instance per run, shared by all of the run's drivers.
    """

    def __init__(self, spec: WorkloadSpec, seed: int):
        seed = operator.index(seed)
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.spec = spec
        self.seed = seed
        #: drivers submitting at once; valid driver arguments are 0 .. n_drivers - 1
        self.n_drivers: int = spec.drivers
        #: jobs handed out over the whole run
        self.total_jobs: int = spec.jobs
        #: "closed" (in_flight jobs outstanding per driver) or "poisson" (open)
        self.arrival: str = spec.arrival
        #: closed loop: jobs outstanding per driver
        self.in_flight: int = spec.in_flight
        #: poisson: jobs per second per driver
        self.rate_per_s: float = spec.rate_per_s
        #: node index of each driver; () = the engine spreads drivers evenly
        self.driver_nodes: tuple[int, ...] = spec.driver_nodes
        #: function names, config order
        self.functions: tuple[str, ...] = tuple(f.name for f in spec.functions)
        self._deps = job_deps(spec)
        #: tasks in every job (fixed by the shape)
        self.tasks_per_job: int = len(self._deps)
        self._chunk_jobs = max(1, min(MAX_JOBS_PER_CHUNK, MAX_TASKS_PER_CHUNK // self.tasks_per_job))
        self._weights = tuple(f.weight for f in spec.functions)
        self._resources = tuple(dict(f.resources) for f in spec.functions)
        shift = spec.shift
        self._shift_at_s = shift.at_s if shift is not None else None
        self._shift_after_jobs = shift.after_jobs if shift is not None else None
        total_w = sum(self._weights)
        self._mean = ({}, {})  # regime (0 before, 1 after) -> function -> mean seconds
        for f in spec.functions:
            before = f.duration.mean()
            if f.duration_after_shift is not None:
                after = f.duration_after_shift.mean()
            else:
                after = before * (shift.scale if shift is not None else 1.0)
            self._mean[0][f.name] = before
            self._mean[1][f.name] = after
        self._mean_all = tuple(sum(f.weight * m[f.name] for f in spec.functions) / total_w
                               for m in self._mean)
        #: per function its DriftSpec (None: no drift); None when no function drifts
        self._drift = (tuple(f.drift for f in spec.functions)
                       if any(f.drift is not None for f in spec.functions) else None)
        #: shape trace: the file's rows, and one shared dict per distinct demand
        self._trace = spec.trace
        self._trace_res = (tuple(dict(d) for d in spec.trace.demands) if spec.trace is not None else ())
        #: per driver: jobs it has taken so far (its next job is d + k * n_drivers)
        self._taken = [0] * self.n_drivers
        #: jobs handed out over all drivers
        self._next = 0
        self._cache: OrderedDict[int, _Chunk] = OrderedDict()
        self._cur_c = -1
        self._cur: _Chunk | None = None
        #: per driver: [gaps, position, chunk index] or None before the first gap
        self._gaps: list[list | None] = [None] * self.n_drivers

    # --- jobs -----------------------------------------------------------------

    @property
    def jobs_generated(self) -> int:
        """Jobs handed out so far, over all drivers."""
        return self._next

    def driver_jobs(self, driver: int) -> range:
        """The jobs ``driver`` submits, in order: driver, driver + D, driver + 2D, ... (D =
        ``n_drivers``) below ``total_jobs``. The one split rule of both engines."""
        if not 0 <= driver < self.n_drivers:
            raise ValueError(f"driver must be in 0..{self.n_drivers - 1}, got {driver!r}")
        return range(driver, self.total_jobs, self.n_drivers)

    def next_job(self, driver: int, now: float) -> Job | None:
        """``driver``'s next job (see :meth:`driver_jobs`), submitted at time ``now``
        (seconds); None when that driver has submitted all of its jobs."""
        if not 0 <= driver < self.n_drivers:
            raise ValueError(f"driver must be in 0..{self.n_drivers - 1}, got {driver!r}")
        j = self._take(driver)
        if j is None:
            return None
        return self._build(j, driver, self._shifted(j, now), now)

    def job(self, j: int, driver: int, now: float) -> Job:
        """Job ``j`` as ``next_job`` would hand it out at ``now`` — for engines whose drivers
        live in separate processes and take jobs by number (its content depends only on the
        seed, j and the regime, so the draws are the same)."""
        if not 0 <= j < self.total_jobs:
            raise ValueError(f"job must be in 0..{self.total_jobs - 1}, got {j!r}")
        return self._build(j, driver, self._shifted(j, now), now)

    def next_task(self, driver: int, now: float):
        """Fast path for single-task shapes (``tasks_per_job == 1``): ``driver``'s next job's
        only task as ``(job_id, function, duration_s, resources, output_bytes)``, the same draws
        as :meth:`next_job` gives, without building Job and TaskSpec objects; None when the
        driver has submitted all of its jobs. ``resources`` is shared by every task of the
        function: read it, never change it."""
        j = self._take(driver)
        if j is None:
            return None
        shifted = (self._shift_after_jobs is not None or self._shift_at_s is not None) and self._shifted(j, now)
        c, r = divmod(j, self._chunk_jobs)
        if c == self._cur_c:
            chunk = self._cur
        else:
            # drivers that take jobs in order interleave their chunks; the cache's recency
            # order is not used then (see _evict), so a chunk drawn already is looked up
            chunk = self._cache.get(c)
            if chunk is None:
                chunk = self._chunk(c)
        f = chunk.fn[r]
        d = (chunk.after if shifted else chunk.before)[r]
        if self._drift is not None and self._drift[f] is not None:
            d *= self._drift[f].factor(now)
        res = self._resources[f] if chunk.res is None else chunk.res[r]
        return j, self.functions[f], d, res, chunk.out[r]

    def _take(self, driver: int) -> int | None:
        """Hand out ``driver``'s next job number (its k-th is driver + k * n_drivers, see
        :meth:`driver_jobs`); None when it has submitted all of its jobs."""
        k = self._taken[driver]
        j = driver + k * self.n_drivers
        if j >= self.total_jobs:
            return None
        self._taken[driver] = k + 1
        self._next += 1
        return j

    def _shifted(self, j: int, now: float) -> bool:
        """Whether job ``j``, submitted at ``now`` (seconds), runs in the shifted regime."""
        after = self._shift_after_jobs
        at = self._shift_at_s
        return (after is not None and j >= after) or (at is not None and now >= at)

    def _build(self, j: int, driver: int, shifted: bool, now: float) -> Job:
        c, r = divmod(j, self._chunk_jobs)
        chunk = self._cur if c == self._cur_c else self._chunk(c)
        durs = chunk.after if shifted else chunk.before
        names = self.functions
        res = self._resources
        t = self.tasks_per_job
        if t == 1:
            f = chunk.fn[r]
            d = durs[r]
            if self._drift is not None and self._drift[f] is not None:
                d *= self._drift[f].factor(now)
            demand = res[f] if chunk.res is None else chunk.res[r]
            return Job(j, driver, [TaskSpec(0, names[f], d, dict(demand), chunk.out[r])])
        base = r * t
        end = base + t
        fns = chunk.fn[base:end]
        durs = durs[base:end]
        if self._drift is not None:
            scale = [1.0 if x is None else x.factor(now) for x in self._drift]
            durs = [d * scale[f] for f, d in zip(fns, durs)]
        return Job(j, driver, [
            TaskSpec(i, names[f], d, dict(res[f]), o, deps)
            for i, (f, d, o, deps) in enumerate(zip(fns, durs, chunk.out[base:end], self._deps))])

    def _chunk(self, c: int) -> _Chunk:
        chunk = self._cache.get(c)
        if chunk is None:
            chunk = self._draw(c)
            self._cache[c] = chunk
            self._evict(c)
        else:
            self._cache.move_to_end(c)
        self._cur_c, self._cur = c, chunk
        return chunk

    def _evict(self, keep: int) -> None:
        """After drawing chunk ``keep``: drop the chunks no one reads again. Drivers that
        take their jobs in order (``next_job`` / ``next_task``) still need every chunk from
        their slowest one's next job on, so exactly the chunks before it go (O(drivers), once
        per chunk drawn). Taken by number only (``job``, the runtime's drivers), the least
        recently used go, down to ``CACHE_CHUNKS``."""
        if self._next:
            D, total, size = self.n_drivers, self.total_jobs, self._chunk_jobs
            ahead = [d + k * D for d, k in enumerate(self._taken) if d + k * D < total]
            low = min(ahead) // size if ahead else keep
            for c in [c for c in self._cache if c < low and c != keep]:
                del self._cache[c]
            return
        while len(self._cache) > CACHE_CHUNKS:
            self._cache.popitem(last=False)

    def _draw(self, c: int) -> _Chunk:
        """Every draw of chunk c, vectorised; each quantity from its own child stream so
        that, e.g., changing output sizes leaves durations alone."""
        spec = self.spec
        if self._trace is not None:
            return self._trace_chunk(c)
        n = self._chunk_jobs * self.tasks_per_job
        fn_ss, dur_ss, after_ss, out_ss = np.random.SeedSequence([self.seed, JOB_STREAM, c]).spawn(4)
        rng_dur = np.random.default_rng(dur_ss)
        rng_after = np.random.default_rng(after_ss)
        rng_out = np.random.default_rng(out_ss)
        fn = pick(np.random.default_rng(fn_ss), self._weights, n)
        funcs = spec.functions
        if len(funcs) == 1:
            masks = [slice(None)]
            counts = [n]
        else:
            masks = [fn == k for k in range(len(funcs))]
            counts = [int(np.count_nonzero(m)) for m in masks]
        before = np.empty(n)
        out = np.empty(n)
        for f, m, k in zip(funcs, masks, counts):
            before[m] = f.duration.sample(rng_dur, k)
            out[m] = f.output_bytes.sample(rng_out, k)
        after = None
        if spec.shift is not None:
            after = before * spec.shift.scale
            for f, m, k in zip(funcs, masks, counts):
                if f.duration_after_shift is not None:
                    after[m] = f.duration_after_shift.sample(rng_after, k)
            after = after.tolist()
        out = np.rint(np.clip(out, 0.0, MAX_OUTPUT_BYTES)).astype(np.int64)
        return _Chunk(fn.tolist(), before.tolist(), after, out.tolist())

    def _trace_chunk(self, c: int) -> _Chunk:
        """Shape trace: chunk c is the trace file's rows c * chunk_jobs, ... (no draws)."""
        tr = self._trace
        lo = c * self._chunk_jobs
        hi = min(lo + self._chunk_jobs, len(tr))
        before = tr.duration_s[lo:hi]
        after = None
        if self.spec.shift is not None:
            after = (before * self.spec.shift.scale).tolist()
        res = self._trace_res
        return _Chunk(tr.fn[lo:hi].tolist(), before.tolist(), after, tr.output_bytes[lo:hi].tolist(),
                      [res[k] for k in tr.demand[lo:hi].tolist()])

    # --- what a job does, for the single-call shapes ---------------------------

    def actor_of(self, j: int) -> int:
        """Shape "actors": the actor job ``j`` calls (``Actor.step`` on actor j % actors)."""
        return j % self.spec.actors

    @staticmethod
    def gcs_request(j: int) -> tuple[str, int]:
        """Shape "gcs_client": job ``j`` is ``("write", key)`` for even j, ``("read", key)`` for
        odd j, with key j // 2 (each read follows the write of its key)."""
        return ("write" if j % 2 == 0 else "read"), j // 2

    # --- arrivals -------------------------------------------------------------

    def next_arrival_gap(self, driver: int) -> float:
        """Open arrivals: seconds until ``driver``'s next job. Poisson: exponential, mean
        1 / rate_per_s, from the driver's own stream; trace: the gap between the arrival times
        of its previous job and its next one (the first: its first job's time), 0 once its
        jobs are all out."""
        if self.arrival not in ("poisson", "trace"):
            raise RuntimeError(f"next_arrival_gap is for poisson or trace arrivals; this workload's arrival "
                               f"is {self.arrival!r}")
        if not 0 <= driver < self.n_drivers:
            raise ValueError(f"driver must be in 0..{self.n_drivers - 1}, got {driver!r}")
        if self.arrival == "trace":
            i = self._gaps[driver] or 0
            self._gaps[driver] = i + 1
            j = driver + i * self.n_drivers
            if j >= self.total_jobs:
                return 0.0
            arr = self._trace.arrival_s
            return float(arr[j] - arr[j - self.n_drivers]) if i else float(arr[j])
        st = self._gaps[driver]
        if st is None or st[1] >= GAP_CHUNK:
            k = 0 if st is None else st[2] + 1
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, GAP_STREAM, driver, k]))
            st = self._gaps[driver] = [rng.exponential(1.0 / self.rate_per_s, GAP_CHUNK), 0, k]
        gap = float(st[0][st[1]])
        st[1] += 1
        return gap

    # --- truth ----------------------------------------------------------------

    def shifted(self, now: float) -> bool:
        """Whether the regime after the shift is in force at ``now`` (given the jobs
        generated so far)."""
        if self._shift_at_s is not None:
            return now >= self._shift_at_s
        if self._shift_after_jobs is not None:
            return self._next >= self._shift_after_jobs
        return False

    def mean_duration(self, function: str | None, now: float) -> float:
        """The true expected duration (seconds) of ``function``'s tasks under the regime
        in force at ``now``; None = the weight-averaged mean over all functions."""
        regime = 1 if self.shifted(now) else 0
        if self._drift is not None:
            means = self._mean[regime]
            if function is None:
                fs = self.spec.functions
                return (sum(f.weight * means[f.name] * (1.0 if f.drift is None else f.drift.factor(now)) for f in fs)
                        / sum(f.weight for f in fs))
            if function in means:
                drift = self._drift[self.functions.index(function)]
                return means[function] * (1.0 if drift is None else drift.factor(now))
        elif function is None:
            return self._mean_all[regime]
        try:
            return self._mean[regime][function]
        except KeyError:
            raise KeyError(f"unknown function {function!r}; known: {', '.join(self.functions)}") from None
