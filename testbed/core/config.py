"""Experiment configs: TOML in, a validated dict with every default filled out.

This module knows the sections that belong to the core — ``[cluster]``, ``[scheduler]``
(the policy *specs*; the policy layer checks them), ``[run]``, ``[faults]`` — and the
mechanics shared by every config: loading with a clear error, ``--set`` overrides, and
the ``[sweep]`` grid. Whole-experiment validation, which also builds the policies and the
workload, is :func:`testbed.studies.experiment.load_experiment`.

Every default is defined once, here (or in the workload/policy modules for theirs).
"""
from __future__ import annotations

import copy
import functools
import itertools
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import LINE_BREAKS, ConfigError
from .schema import REQUIRED, Field, _copy, at_most, between, check_table, count_rule, non_negative, positive

_num = (float,)
_int = (int,)
_str = (str,)
_spec = (str, dict)

#: upper bounds of counts (the simulator's largest studied cluster is 10,000 nodes; the
#: real engine starts processes on this machine, so its counts are bounded lower)
MAX_NODES = 1_000_000
MAX_REPLICAS = 10_000        # global scheduler replicas, GCS shards
MAX_CHAIN = 100              # replicas per GCS shard
MAX_REAL_NODES = 1024        # real engine: logical nodes, each a set of processes here
MAX_JOBS = 10**9             # also workload.jobs (testbed.workloads.spec)
#: the shortest heartbeat and random-kill interval, seconds: below it a simulated second is
#: more than 10,000 rounds and a run does not end in any useful time
MIN_INTERVAL_S = 1e-4


def _resource_table(x) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in x.values())


def _resources_field(doc: str) -> Field:
    return Field((dict,), {}, _resource_table, "a table of non-negative numbers", doc)


CLUSTER: dict[str, Field] = {
    "nodes": Field(_int, 4, at_most(MAX_NODES), count_rule(MAX_NODES),
                   "number of nodes (ignored when node_groups is given)"),
    "cpus_per_node": Field(_num, 8.0, positive, "> 0", "CPUs (worker slots) per node"),
    "gpus_per_node": Field(_num, 0.0, non_negative, ">= 0", "GPUs per node"),
    "resources": _resources_field("custom resources per node, e.g. {accel = 1}"),
    "node_groups": Field((list,), [], None, "", "heterogeneous nodes: a list of {count, cpus, gpus, resources, speed}; "
                         "replaces nodes/cpus_per_node/gpus_per_node/resources", items=(dict,)),
    "slow_nodes": Field(_int, 0, between(0, MAX_NODES), count_rule(MAX_NODES, 0),
                        "how many nodes (the last ones) compute slow_factor times slower"),
    "slow_factor": Field(_num, 1.0, lambda x: x >= 1, ">= 1", "slowdown of the slow nodes (task time multiplier)"),
    "bandwidth_bytes_per_s": Field(_num, 3.125e9, positive, "> 0",
                                   "each node's network link, bytes/s (25 Gbit/s, the paper's AWS network, §5.1)"),
    "slowdowns": Field((list,), [], None, "", "stragglers: nodes that slow down mid-run, a list of {node, at_s, "
                       "factor}: from at_s (seconds) on, tasks starting on that node take factor times as long "
                       "as before (factor < 1 speeds it up; tasks running then keep their time)", items=(dict,)),
    "link_bandwidth": Field((list,), [], None, "", "links that differ: a list of {nodes, bytes_per_s}, each "
                            "listed node's link (its input fetches) at bytes_per_s instead of "
                            "bandwidth_bytes_per_s", items=(dict,)),
    "bandwidth_changes": Field((list,), [], None, "", "links that change: a list of {at_s, factor, nodes}: from "
                               "at_s (seconds) on, transfers onto those nodes (nodes = [] : every node) run at "
                               "factor times the link bandwidth they had (simulator: transfers booked before keep theirs; "
                               "real engine: objects landing after the change)",
                               items=(dict,)),
    "latency_s": Field(_num, 1e-4, non_negative, ">= 0", "one-way network latency between nodes, seconds. "
                       "Simulator: every hop between processes on different nodes pays it once — a task "
                       "forwarded to the global scheduler, its assignment to a node, a result (or actor "
                       "call result) sent to a driver on another node, an actor call sent to another "
                       "node, each input fetched from another node (after its object-table read), each "
                       "GCS chain member after the head, a GCS client's request and its reply (the "
                       "scheduler's and nodes' own GCS reads and writes pay none). Real engine: only the "
                       "emulated link's latency (tb.init link_latency_s), added once to each object "
                       "fetched from another node; its messages cost their natural hop on this machine "
                       "(~0.03 ms, the latency_s `testbed calibrate` measures)"),
    "object_store_bytes": Field(_num, 8e9, positive, "> 0", "object store capacity per node, bytes (LRU spill beyond it)"),
    "heartbeat_interval_s": Field(_num, 0.1, lambda x: x >= MIN_INTERVAL_S, f">= {MIN_INTERVAL_S:g}",
                                  "how often nodes report load to the global scheduler (paper's code: 100 ms)"),
    "view_fresh_per_decision": Field((bool,), False, None, "", "simulator: the global scheduler sees a ClusterView "
                                     "taken at each decision instead of the last heartbeat's (no staleness; for "
                                     "the queueing-theory checks, e.g. power-of-d choices with fresh information)"),
    "num_heartbeats_timeout": Field(_int, 100, positive, "> 0", "a node that misses this many heartbeats is "
                                    "declared dead (paper's code: 100 x 100 ms)"),
    "local_decision_s": Field(_num, 0.0, non_negative, ">= 0", "local scheduler service time per task, seconds"),
    "global_decision_s": Field(_num, 1e-4, non_negative, ">= 0", "global scheduler service time per decision, seconds"),
    "global_schedulers": Field(_int, 1, at_most(MAX_REPLICAS), count_rule(MAX_REPLICAS),
                               "global scheduler replicas (forwarded tasks go round-robin)"),
    "gcs_shards": Field(_int, 1, at_most(MAX_REPLICAS), count_rule(MAX_REPLICAS),
                        "GCS shards (keys sharded by task/object id)"),
    "gcs_write_s": Field(_num, 1e-5, non_negative, ">= 0", "GCS service time per table write, seconds"),
    "gcs_read_s": Field(_num, 1e-5, non_negative, ">= 0", "GCS service time per table read, seconds"),
    "gcs_on_critical_path": Field((bool,), True, None, "", "a task is dispatched only once its task-table write is "
                                  "acknowledged, and results are seen once their object-table write is"),
    "gcs_chain_length": Field(_int, 1, at_most(MAX_CHAIN), count_rule(MAX_CHAIN),
                              "replicas per GCS shard (chain replication: writes enter "
                              "at the head, the tail acknowledges them and serves reads; paper Fig. 10a: 2)"),
    "gcs_flush_interval_s": Field(_num, 0.0, non_negative, ">= 0", "> 0: every this many seconds the lineage of "
                                  "finished tasks is written to disk and dropped from GCS memory (0: never)"),
    "gcs_reconfigure_s": Field(_num, 0.01, non_negative, ">= 0", "simulator: seconds from a GCS replica's death "
                               "until the chain master has reconfigured its chain and clients proceed"),
    "gcs_entry_bytes": Field(_num, 3600.0, positive, "> 0", "simulator: modelled GCS memory per task, bytes (its "
                             "task-table entry with the spec, its object-table entry, its Trace row; measured on "
                             "the real runtime: 1M empty tasks without flushing held 3,605 MB, "
                             "examples/gcs_memory.py)"),
    # overheads of the real runtime the simulator can model (0: none; `testbed calibrate` measures them)
    "task_overhead_s": Field(_num, 0.0, non_negative, ">= 0", "simulator: seconds a worker slot is held per task "
                             "(and an actor per call or replay) before it starts (dispatch to the worker and the "
                             "slot's turnaround after the previous task); the Trace's started_s is after it"),
    "duration_inflation_s": Field(_num, 0.0, non_negative, ">= 0", "simulator: seconds each task runs beyond its "
                                  "drawn duration x the node's slowdown (a constant added to its run time; it holds "
                                  "the slot and estimators observe it); actor calls and replays too"),
    "result_return_s": Field(_num, 0.0, non_negative, ">= 0", "simulator: seconds from a task's (or actor call's) end "
                             "until its result is visible to its dependents and its driver, beyond the GCS write "
                             "and the hop"),
    "heartbeat_delay_s": Field(_num, 0.0, non_negative, ">= 0", "simulator: age of a heartbeat's view when the global "
                               "scheduler gets it (the view of the tick at t, the estimator samples sent with it and, "
                               "with [faults], the nodes declared dead at t reach it at t + heartbeat_delay_s)"),
    "heartbeat_stagger_s": Field(_num, 0.0, non_negative, ">= 0", "simulator: each node's heartbeats tick at "
                                 "its own offset from the round, drawn uniformly in [0, this) seconds per node from "
                                 "the run's seed, and the global scheduler's view changes at each node's report, as "
                                 "in the real runtime, where every node runs its own timer from its start (0: every "
                                 "node reports in one synchronized round; heartbeat_interval_s: uniform phases; not "
                                 "yet applied in runs with [faults])"),
    "worker_start_s": Field(_num, 0.0, non_negative, ">= 0", "simulator: seconds from the run's start until a node's "
                            "workers accept tasks (no task starts before it)"),
    "calibration": Field(_str, "", None, "", "a calibration file (TOML, from `testbed calibrate`) whose [cluster] "
                         "table fills every [cluster] key this config does not set (explicit keys, --set and sweep "
                         "values win); a path relative to the config file (to the current folder with --set); "
                         "'' for none"),
}

SLOWDOWN: dict[str, Field] = {
    "node": Field(_int, REQUIRED, non_negative, ">= 0", "which node (index)"),
    "at_s": Field(_num, REQUIRED, non_negative, ">= 0", "when, seconds from the start"),
    "factor": Field(_num, REQUIRED, positive, "> 0", "task-time multiplier applied from then on (4 = four times slower)"),
}
LINK_BANDWIDTH: dict[str, Field] = {
    "nodes": Field((list,), REQUIRED, lambda x: len(x) > 0, "a non-empty list", "node indices", items=(int,)),
    "bytes_per_s": Field(_num, REQUIRED, positive, "> 0", "their links' bandwidth, bytes/s"),
}
BANDWIDTH_CHANGE: dict[str, Field] = {
    "at_s": Field(_num, REQUIRED, non_negative, ">= 0", "when, seconds from the start"),
    "factor": Field(_num, REQUIRED, positive, "> 0", "bandwidth multiplier from then on (0.25 = four times slower)"),
    "nodes": Field((list,), [], None, "", "node indices whose links change; [] = every node", items=(int,)),
}

NODE_GROUP: dict[str, Field] = {
    "count": Field(_int, 1, at_most(MAX_NODES), count_rule(MAX_NODES), "nodes in this group"),
    "cpus": Field(_num, 8.0, non_negative, ">= 0", "CPUs per node"),
    "gpus": Field(_num, 0.0, non_negative, ">= 0", "GPUs per node"),
    "resources": _resources_field("custom resources per node"),
    "speed": Field(_num, 1.0, positive, "> 0", "relative compute speed (0.25 = four times slower)"),
}

SCHEDULER: dict[str, Field] = {
    "placement": Field(_spec, "PaperWaitTime", None, "", "global placement policy: a name or {name=..., args}"),
    "spillover": Field(_spec, {"name": "ResourceAware", "threshold": 8}, None, "",
                       "local scheduler's spillover policy (ResourceAware: keep what can start here now, forward "
                       "what another node has room for, spill queued work back at heartbeats; the paper's literal "
                       "rule is QueueThreshold)"),
    "task_time": Field(_spec, {"name": "ExponentialAverage", "alpha": 0.1}, None, "",
                       "estimator of task execution time, seconds. Its table also takes the keying's "
                       "cold-start options (testbed.policy.base.COLD_START): prior (s, the estimator's value "
                       "before any sample), min_samples (samples a finer key needs before it is trusted, "
                       "default 1), fallback ('global' or 'coarser': function_node -> function -> global; "
                       "default 'global'), floor (least estimate, s; default 0), reset_factor (a sample "
                       "above this x its key's estimate restarts that key's estimator; > 1, default 0 = off)"),
    "task_time_key": Field(_str, "function_node", None, "", "keying of task_time",
                           choices=("global", "node", "function", "function_node")),
    "bandwidth": Field(_spec, {"name": "ExponentialAverage", "alpha": 0.1}, None, "",
                       "estimator of transfer bandwidth, bytes/s (the same cold-start options as "
                       "task_time, floor and prior in bytes/s)"),
    "bandwidth_key": Field(_str, "node", None, "", "keying of bandwidth",
                           choices=("global", "node", "function", "function_node")),
    "decide_at": Field(_str, "submit", None, "", "when the local scheduler decides where a task with inputs "
                       "runs: at submission, before its inputs exist, as Ray's raylet and the runtime do "
                       "('submit'), or once every input exists ('inputs_ready'); the task then waits on its "
                       "node, pulling each input as it appears, and queues when all are local "
                       "(testbed.policy.base.decides_now)", choices=("submit", "inputs_ready")),
}

RUN: dict[str, Field] = {
    "engine": Field(_str, "sim", None, "", "which engine runs the experiment", choices=("sim", "real")),
    "seeds": Field((list,), [0], lambda s: len(s) > 0 and all(x >= 0 for x in s) and len(set(s)) == len(s),
                   "a non-empty list of distinct integers >= 0",
                   "one run per seed per sweep point", items=(int,)),
    "study": Field(_str, "compare", None, "", "how results are tabulated and plotted (`testbed list`)"),
    "trace": Field(_str, "auto", None, "", "keep per-task rows ('rows'), only streaming aggregates ('aggregate'), "
                   "or rows for runs of at most 200,000 tasks ('auto')", choices=("auto", "rows", "aggregate")),
    "trace_out": Field(_str, "none", None, "", "write each run's Trace (one row per task attempt) to the results "
                       "folder as trace-<point>-<seed>.csv or .parquet (parquet needs pyarrow)",
                       choices=("none", "csv", "parquet")),
    "validate": Field((bool,), False, None, "", "check every task-state transition (slower; for tests)"),
    "track_estimates": Field((bool,), False, None, "", "measure the task-time estimator's one-step-ahead error: "
                             "when a sample arrives, the estimate its key had against the sample "
                             "(policy.base.EstimateError; ~1 us per task; simulator)"),
    "baseline": Field(_str, "", None, "", "studies that compare (estimator_study): the case every other case "
                      "of its group is compared with, paired per seed (its label; '' = the group's first case)"),
    "max_sim_time_s": Field(_num, 1e7, positive, "> 0", "stop a simulation at this simulated time"),
    "warmup_fraction": Field(_num, 0.1, lambda x: 0 <= x < 1, "in [0, 1)", "study theory: the first this fraction "
                             "of tasks (by submission) is left out of its means, as the queues' warm-up transient"),
    "timeseries_bin_s": Field(_num, 1.0, positive, "> 0", "width of the time bins of studies that plot over "
                              "time (simulated seconds; x real_time_scale on the real engine)"),
    # the real engine runs on this machine's 2 cores: how to scale the experiment down
    "real_nodes": Field(_int, 4, at_most(MAX_REAL_NODES), count_rule(MAX_REAL_NODES),
                        "real engine: logical nodes (the first ones of [cluster])"),
    "real_cpus_per_node": Field(_num, 2.0, positive, "> 0", "real engine: CPUs per node at most"),
    "real_max_jobs": Field(_int, 2000, at_most(MAX_JOBS), count_rule(MAX_JOBS),
                           "real engine: run at most this many of the workload's jobs"),
    "real_time_scale": Field(_num, 1.0, positive, "> 0", "real engine: multiply every task duration "
                             "and arrival gap by this"),
    "real_actors": Field(_int, 0, between(0, MAX_NODES), count_rule(MAX_NODES, 0),
                         "real engine, shape actors: at most this many actors "
                         "(job j calls actor j % min(workload.actors, real_actors)); 0: workload.actors"),
    "real_work": Field(_str, "sleep", None, "", "real engine: how a task spends its duration "
                       "(sleep: logical CPUs; spin: burns a core)", choices=("sleep", "spin")),
}

#: [faults]: failures both engines inject, at times in seconds from the run's start
FAULTS: dict[str, Field] = {
    "node_failures": Field((list,), [], None, "", "nodes to kill: a list of {at_s, node} (node index); "
                           "the node's processes die as in a crash and its objects are lost. The simulator "
                           "kills any node; on the real engine node k is node k % real_nodes, and one that is "
                           "node 0 there (the driver's) is a config error", items=(dict,)),
    "node_additions": Field((list,), [], None, "", "nodes to add: a list of {at_s, cpus, gpus, resources, speed}",
                            items=(dict,)),
    "kill_every_s": Field(_num, 0.0, lambda x: x == 0 or x >= MIN_INTERVAL_S, f"0 or >= {MIN_INTERVAL_S:g}",
                          "> 0: kill a random live node every this many "
                          "seconds (seeded), keeping at least min_live_nodes"),
    "min_live_nodes": Field(_int, 1, at_most(MAX_NODES), count_rule(MAX_NODES),
                            "random kills never go below this many live nodes"),
    "restore_after_s": Field(_num, 0.0, non_negative, ">= 0", "> 0: a killed node comes back, empty, this "
                             "long after it died (the paper's Fig. 11a)"),
    "worker_failures": Field((list,), [], None, "", "workers to kill: a list of {at_s, node}; a busy worker's "
                             "task is retried", items=(dict,)),
    "lineage": Field((bool,), True, None, "", "record lineage; without it a lost object cannot be rebuilt "
                     "(its readers fail)"),
    "max_retries": Field(_int, 3, lambda x: x >= -1, ">= -1", "re-executions allowed per task whose node or "
                         "worker died (-1: unlimited)"),
    "gcs_replica_failures": Field((list,), [], None, "", "GCS chain members to kill: a list of {at_s, shard, "
                                  "replica} (replica 0 = the head; negative counts from the tail, -1 = the tail)",
                                  items=(dict,)),
    "gcs_replace_replicas": Field((bool,), True, None, "", "after a GCS replica dies the chain master adds a fresh "
                                  "one (it copies the chain's state, then the chain is back to full length)"),
}

NODE_FAILURE: dict[str, Field] = {
    "at_s": Field(_num, REQUIRED, non_negative, ">= 0", "when, seconds from the start"),
    "node": Field(_int, REQUIRED, non_negative, ">= 0", "which node (index)"),
}
GCS_REPLICA_FAILURE: dict[str, Field] = {
    "at_s": Field(_num, REQUIRED, non_negative, ">= 0", "when, seconds from the start"),
    "shard": Field(_int, 0, non_negative, ">= 0", "which GCS shard (index)"),
    "replica": Field(_int, 0, None, "", "which member of the shard's chain at that time: 0 = the head, "
                     "1 = the next, ...; -1 = the tail, -2 = the one before it, ..."),
}
NODE_ADDITION: dict[str, Field] = {
    "at_s": Field(_num, REQUIRED, non_negative, ">= 0", "when, seconds from the start"),
    "cpus": Field(_num, 8.0, non_negative, ">= 0", "CPUs of the new node"),
    "gpus": Field(_num, 0.0, non_negative, ">= 0", "GPUs of the new node"),
    "resources": _resources_field("custom resources of the new node"),
    "speed": Field(_num, 1.0, positive, "> 0", "relative compute speed"),
}

#: Sections the core validates; "workload" and "sweep" are validated elsewhere/here.
SECTIONS: dict[str, dict[str, Field]] = {
    "cluster": CLUSTER, "scheduler": SCHEDULER, "run": RUN, "faults": FAULTS,
}
ALL_SECTIONS = ("cluster", "scheduler", "workload", "faults", "run", "sweep")


#: a config file larger than this is refused (the shipped ones are under 16 KB)
MAX_CONFIG_BYTES = 4 * 1024 * 1024
#: tables and arrays nested deeper than this are refused (a config needs about 6 levels)
MAX_NESTING = 32


def load_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; any problem is one ConfigError naming the file.

    Only a regular file of at most ``MAX_CONFIG_BYTES`` is read (a FIFO would block, a
    device never end), and its tables and arrays may nest ``MAX_NESTING`` deep."""
    import os
    import stat
    file = str(path) or "''"
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer; fstat then refuses it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError("no such file", file=file) from None
    except (OSError, ValueError) as exc:      # ValueError: a path with a NUL byte
        raise ConfigError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", file=file) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError("is a directory, not a config file", file=file)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"not a regular file ({_file_kind(st.st_mode)}), not a config file", file=file)
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"is {st.st_size:,} bytes, more than a config file may be "
                              f"({MAX_CONFIG_BYTES:,})", file=file)
        with os.fdopen(fd, "rb", closefd=False) as f:
            text = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=file) from None
    finally:
        os.close(fd)
    if len(text) > MAX_CONFIG_BYTES:          # it grew while being read
        raise ConfigError(f"is more than {MAX_CONFIG_BYTES:,} bytes, more than a config file may be", file=file)
    try:
        data = _parse_toml(text.decode("utf-8-sig"))   # a BOM from some editors is fine
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", file=file) from None
    except ConfigError as exc:
        raise exc.with_file(file) from None
    return data


def _file_kind(mode: int) -> str:
    import stat
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def _parse_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads`` with every failure a ConfigError, and a nesting limit."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"malformed TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"arrays or tables nested too deep to parse (at most {MAX_NESTING} levels)") from None
    except ValueError as exc:                 # an integer of more than 4,300 digits
        raise ConfigError(f"malformed TOML: a value cannot be read ({str(exc).split(';')[0]})") from None
    check_nesting(data)
    return data


def check_nesting(value: Any, limit: int = MAX_NESTING) -> None:
    """Refuse tables/arrays nested more than ``limit`` deep (iteratively: no recursion to overflow)."""
    stack = [(value, 0, "")]
    while stack:
        v, depth, where = stack.pop()
        if isinstance(v, Mapping):
            items = [(f"{where}.{k}" if where else str(k), x) for k, x in v.items()]
        elif isinstance(v, list):
            items = [(f"{where}[{i}]", x) for i, x in enumerate(v)]
        else:
            continue
        if depth >= limit:
            key = where.split("[", 1)[0].split(".")
            raise ConfigError(f"tables or arrays nested more than {limit} deep", key=".".join(key[:2]) or None)
        stack.extend((x, depth + 1, w) for w, x in items)


def parse_value(text: str) -> Any:
    """A ``--set`` value: any TOML value (``0.5``, ``true``, ``[1, 2]``, ``{name="X"}``),
    else the text as a string."""
    try:
        data = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    except (RecursionError, ValueError):
        raise ConfigError(f"--set: value {_clip(text)!r} is nested too deep or too large to parse") from None
    check_nesting(data["v"])
    return data["v"]


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[:n] + "..."


def set_path(cfg: dict, dotted: str, value: Any, *, what: str = "--set") -> None:
    """Set ``a.b.c`` in nested dicts; the first part must be a known section."""
    parts = dotted.split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"{what}: key must look like 'section.key', got {dotted!r}", key=dotted)
    if parts[0] not in ALL_SECTIONS:
        raise ConfigError(f"{what}: unknown section {parts[0]!r}; sections: {', '.join(ALL_SECTIONS)}", key=dotted)
    node = cfg
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"{what}: {p!r} is not a table", key=dotted)
        node = nxt
    node[parts[-1]] = value


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """Apply ``KEY=VALUE`` strings (``testbed run --set``) to a copy of ``cfg``."""
    out = copy.deepcopy(cfg)
    for item in overrides:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {_clip(item)!r}")
        if any(c in item for c in LINE_BREAKS):   # TOML would read a value only up to the line break
            raise ConfigError(f"--set {_clip(item)!r}: KEY=VALUE must be one line (it holds a line break)")
        key = key.strip()
        parts = key.split(".")
        if len(parts) > 2 and parts[1] in SECTIONS.get(parts[0], {}):
            # a policy's argument (scheduler.task_time.alpha) keeps the default's name and arguments
            base = SECTIONS[parts[0]][parts[1]].default
            if isinstance(base, str) and dict in SECTIONS[parts[0]][parts[1]].types:
                base = {"name": base}                  # a policy given by name: "PaperWaitTime"
            _materialise(out, {parts[0]: {parts[1]: base}}, parts[:2])
        set_path(out, key, parse_value(text.strip()))
    return out


# --- calibration files (`testbed calibrate`) --------------------------------------------

#: sections a calibration file may have: [cluster] (simulator parameters) and [meta]
#: (how each value was measured, its spread, the raw measurements; not read by the loader)
CALIBRATION_SECTIONS = ("cluster", "meta")
#: [cluster] keys a calibration file may not set (they are about the file itself)
NOT_CALIBRATED = ("calibration",)


def load_calibration(path: str | Path) -> dict[str, Any]:
    """The ``[cluster]`` table of a calibration file, each key a known [cluster] parameter
    with a valid value; anything wrong is one ConfigError naming the file and key.

    An experiment applies its calibration to every sweep point and variant (a validation: ~40
    times), so the checked table is read once per file version (path, modification time, size)."""
    try:
        st = Path(path).stat()
        version = (st.st_mtime_ns, st.st_size)
    except OSError:
        version = None             # load_toml names what is wrong
    return dict(_load_calibration(str(path), version))


@functools.lru_cache(maxsize=16)
def _load_calibration(path: str, version: tuple | None) -> dict[str, Any]:
    raw = load_toml(path)
    for name in raw:
        if name not in CALIBRATION_SECTIONS:
            raise ConfigError(f"unknown section of a calibration file; sections: {', '.join(CALIBRATION_SECTIONS)}",
                              key=name, file=str(path))
    table = raw.get("cluster")
    if not isinstance(table, dict):
        raise ConfigError("a calibration file needs a [cluster] table of simulator parameters", key="cluster",
                          file=str(path))
    for k in table:
        if k not in CLUSTER or k in NOT_CALIBRATED:
            raise ConfigError("unknown parameter (not a [cluster] key)", key=f"cluster.{k}", file=str(path))
    try:
        check_table(table, {k: CLUSTER[k] for k in table}, "cluster")
    except ConfigError as exc:
        raise ConfigError(exc.message, key=exc.key, file=str(path)) from None
    return dict(table)


def apply_calibration(cfg: dict, base_dir: str | Path) -> dict:
    """``cfg`` with the ``[cluster]`` keys of its ``cluster.calibration`` file filled in.

    Precedence: a key the config sets (in the file, by ``--set`` or by a sweep point) wins over
    the calibration; the calibration wins over the schema's default. A relative path is taken
    from ``base_dir`` (the config file's folder). ``cluster.calibration`` stays as given.
    """
    cluster = cfg.get("cluster")
    if not isinstance(cluster, dict):
        return cfg
    name = cluster.get("calibration", "")
    if not isinstance(name, str) or not name:
        return cfg     # not a string: the schema check names it
    path = Path(name)
    if not path.is_absolute():
        path = Path(base_dir) / path
    try:
        table = load_calibration(path)
    except ConfigError as exc:
        raise ConfigError(f"cluster.calibration = {name!r}: {exc}") from None
    out = copy.deepcopy(cfg)
    for k, v in table.items():
        out["cluster"].setdefault(k, v)
    return out


def check_sections(cfg: Mapping[str, Any]) -> None:
    for name in cfg:
        if name not in ALL_SECTIONS:
            raise ConfigError(f"unknown section; sections: {', '.join(ALL_SECTIONS)}", key=name)


def validate_core(cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Check [cluster], [scheduler], [run], [faults]; return them with defaults filled."""
    out: dict[str, dict[str, Any]] = {}
    for name, fields in SECTIONS.items():
        out[name] = check_table(cfg.get(name, {}), fields, name)
    groups = []
    for i, g in enumerate(out["cluster"]["node_groups"]):
        groups.append(check_table(g, NODE_GROUP, f"cluster.node_groups[{i}]"))
    out["cluster"]["node_groups"] = groups
    if sum(g["count"] for g in groups) > MAX_NODES:
        raise ConfigError(f"the groups' counts add up to {sum(g['count'] for g in groups):,} nodes, more than "
                          f"{MAX_NODES:,}", key="cluster.node_groups")
    _check_node_changes(out["cluster"])
    f = out["faults"]
    f["node_failures"] = [check_table(x, NODE_FAILURE, f"faults.node_failures[{i}]")
                          for i, x in enumerate(f["node_failures"])]
    f["worker_failures"] = [check_table(x, NODE_FAILURE, f"faults.worker_failures[{i}]")
                            for i, x in enumerate(f["worker_failures"])]
    f["node_additions"] = [check_table(x, NODE_ADDITION, f"faults.node_additions[{i}]")
                           for i, x in enumerate(f["node_additions"])]
    f["gcs_replica_failures"] = _check_gcs_failures(f, out["cluster"])
    if out["run"]["engine"] == "real":
        from .faults import check_real_node_failures
        check_real_node_failures(f["node_failures"], real_node_count(out["cluster"], out["run"]))
    return out


def real_node_count(cluster: Mapping[str, Any], run: Mapping[str, Any]) -> int:
    """Logical nodes of the real engine's cluster: the first ``run.real_nodes`` of ``[cluster]``."""
    n = sum(g["count"] for g in cluster["node_groups"]) if cluster["node_groups"] else cluster["nodes"]
    return min(n, run["real_nodes"])


def _check_node_changes(c: dict) -> None:
    """cluster.slowdowns, link_bandwidth, bandwidth_changes: each entry's keys, and node
    indices below the cluster's node count (nodes, or the node_groups' counts)."""
    n = sum(g["count"] for g in c["node_groups"]) if c["node_groups"] else c["nodes"]

    def check_nodes(nodes: list[int], key: str) -> None:
        for i, node in enumerate(nodes):
            if not 0 <= node < n:
                raise ConfigError(f"item {i} must be a node index in 0..{n - 1}, got {node}", key=key)

    for name, fields in (("slowdowns", SLOWDOWN), ("link_bandwidth", LINK_BANDWIDTH),
                         ("bandwidth_changes", BANDWIDTH_CHANGE)):
        checked = []
        for i, raw in enumerate(c[name]):
            key = f"cluster.{name}[{i}]"
            x = check_table(raw, fields, key)
            if "node" in x and x["node"] >= n:
                raise ConfigError(f"must be a node index in 0..{n - 1}, got {x['node']}", key=f"{key}.node")
            if "nodes" in x:
                check_nodes(x["nodes"], f"{key}.nodes")
            checked.append(x)
        c[name] = checked


def _check_gcs_failures(f: dict, cluster: dict) -> list[dict]:
    """Each {at_s, shard, replica} against the cluster's shards and chain length; without
    replacement a shard must keep one live replica (every acknowledged write is on it)."""
    shards, length = cluster["gcs_shards"], cluster["gcs_chain_length"]
    out = []
    kills: dict[int, int] = {}
    for i, raw in enumerate(f["gcs_replica_failures"]):
        key = f"faults.gcs_replica_failures[{i}]"
        x = check_table(raw, GCS_REPLICA_FAILURE, key)
        if x["shard"] >= shards:
            raise ConfigError(f"must be < cluster.gcs_shards ({shards}), got {x['shard']}", key=f"{key}.shard")
        if not -length <= x["replica"] < length:
            raise ConfigError(f"must be in {-length}..{length - 1} (cluster.gcs_chain_length = {length}), "
                              f"got {x['replica']}", key=f"{key}.replica")
        if length == 1:
            raise ConfigError("kills the only replica of a shard, losing its state; give "
                              "cluster.gcs_chain_length >= 2", key=key)
        kills[x["shard"]] = kills.get(x["shard"], 0) + 1
        if not f["gcs_replace_replicas"] and kills[x["shard"]] >= length:
            raise ConfigError(f"kills every replica of shard {x['shard']} (chain length {length}) and "
                              f"faults.gcs_replace_replicas is false: the shard's state would be lost", key=key)
        out.append(x)
    return out


# --- sweeps ---------------------------------------------------------------------------

class SweepTooLarge(ConfigError):
    """A sweep of more points than the caller allows (``points``: how many it has)."""

    def __init__(self, points: int, limit: int):
        self.points = points
        super().__init__(f"expands to {points:,} points, more than {limit:,}", key="sweep")


def sweep_points(sweep: Mapping[str, Any] | None, known: Mapping[str, Any],
                 max_points: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Expand ``[sweep]`` into ``(label, {dotted key: value})`` points.

    Grid axes are ``"section.key" = [values]``; a linked axis ``[sweep.linked.NAME]`` sets
    several keys together (``"section.key" = [values]`` each, all of one length, with an
    optional ``label = [strings]`` of that length) and counts as one grid axis; ``cases =
    [{label = ..., "section.key" = value, ...}, ...]`` is a list of override sets crossed with
    the grid. Cases may come in named groups instead — ``[[sweep.cases.estimator]]``,
    ``[[sweep.cases.workload]]``, ... — crossed with each other in the order written (a later
    group's key wins over an earlier one's) and with the grid. Axes vary in the order they are
    written, the first slowest. Every key must exist in ``known`` (the resolved config), so a
    sweep over a typo fails early, and no key may be set by two axes. :func:`sweep_factors`
    names each point's case per group and option per linked axis.
    More than ``max_points`` points raise :class:`SweepTooLarge` before any is made.
    """
    return [(label, over) for label, over, _ in sweep_expand(sweep, known, max_points)]


def sweep_factors(sweep: Mapping[str, Any] | None, known: Mapping[str, Any]) -> list[dict[str, str]]:
    """Per point of :func:`sweep_points` (same order): the case label of each case group and
    the option label of each linked axis (``{"estimator": "EWMA", "size": "1k nodes"}``; an
    ungrouped ``cases`` list is group ``""``)."""
    return [factors for _, _, factors in sweep_expand(sweep, known)]


def _cases(values: Any, key: str, known: Mapping[str, Any]) -> list[tuple[str, dict]]:
    """One ``cases`` list -> (label, {dotted key: value}) per case; labels must differ."""
    if not isinstance(values, list) or not values or not all(isinstance(c, Mapping) for c in values):
        raise ConfigError("must be a non-empty list of tables", key=key)
    out = []
    for i, case in enumerate(values):
        label = case.get("label")
        if label is not None and not isinstance(label, str):
            raise ConfigError("label must be a string", key=f"{key}[{i}].label")
        over = {k: v for k, v in case.items() if k != "label"}
        if not over:
            raise ConfigError("a case must set at least one key", key=f"{key}[{i}]")
        for k in over:
            _check_known(k, known, f"{key}[{i}]")
        out.append((label or ", ".join(f"{_leaf(k)}={_short(v)}" for k, v in over.items()), dict(over)))
    labels = [lbl for lbl, _ in out]
    dup = next((lbl for lbl in labels if labels.count(lbl) > 1), None)
    if dup is not None:
        raise ConfigError(f"two cases have the label {dup!r}; labels tell cases apart in the results", key=key)
    return out


def sweep_expand(sweep: Mapping[str, Any] | None, known: Mapping[str, Any],
                 max_points: int | None = None) -> list[tuple[str, dict, dict]]:
    """(label, overrides, factors) per point: :func:`sweep_points` and :func:`sweep_factors` in one."""
    if not sweep:
        return [("", {}, {})]
    if not isinstance(sweep, Mapping):
        raise ConfigError("must be a table", key="sweep")
    #: each axis is its list of options: (label part, {dotted key: value}); named: a linked axis
    axes: list[list[tuple[str, dict[str, Any]]]] = []
    names: list[str | None] = []
    owner: dict[str, str] = {}          # dotted key -> the axis that sets it
    groups: list[tuple[str, list[tuple[str, dict]]]] = []
    for key, values in sweep.items():
        if key == "cases":
            if isinstance(values, Mapping):
                if not values:
                    raise ConfigError("must name at least one case group", key="sweep.cases")
                groups.extend((g, _cases(v, f"sweep.cases.{g}", known)) for g, v in values.items())
            else:
                groups.append(("", _cases(values, "sweep.cases", known)))
            continue
        if key == "linked":
            linked = _linked_axes(values, known, owner)
            axes.extend(linked)
            names.extend(list(values)[:len(linked)])
            continue
        _check_known(key, known, "sweep")
        if not isinstance(values, list) or not values:
            raise ConfigError("a sweep axis must be a non-empty list of values", key=f"sweep.{key}")
        _claim(owner, key, f"sweep.{key}")
        axes.append([(f"{_leaf(key)}={_short(v)}", {key: v}) for v in values])
        names.append(None)
    clash = {g for g, _ in groups} & {n for n in names if n}
    if clash:
        raise ConfigError(f"{sorted(clash)[0]!r} names both a case group and a linked axis", key="sweep")
    n = math.prod(len(axis) for axis in axes) * math.prod(len(cases) for _, cases in groups)
    if max_points is not None and n > max_points:
        raise SweepTooLarge(n, max_points)
    grid = [(", ".join(lbl for lbl, _ in combo), {k: v for _, over in combo for k, v in over.items()},
             {n: lbl for n, (lbl, _) in zip(names, combo) if n})
            for combo in itertools.product(*axes)]
    points = []
    for combo in itertools.product(*[cases for _, cases in groups]):
        label = " | ".join(lbl for lbl, _ in combo if lbl)
        over = {k: v for _, o in combo for k, v in o.items()}
        factors = {g: lbl for (g, _), (lbl, _) in zip(groups, combo)}
        for glabel, g, gfactors in grid:
            points.append((" | ".join(x for x in (label, glabel) if x), {**over, **g}, {**factors, **gfactors}))
    return points


def _linked_axes(linked: Any, known: Mapping[str, Any], owner: dict[str, str]) -> list[list[tuple[str, dict]]]:
    """``[sweep.linked.NAME]`` tables -> one axis each, its i-th option setting every key's i-th value."""
    shape = 'a table of linked axes, e.g. [sweep.linked.size] with "section.key" = [values]'
    if not isinstance(linked, Mapping) or not linked:
        raise ConfigError(f"must be {shape}", key="sweep.linked")
    axes = []
    for name, axis in linked.items():
        where = f"sweep.linked.{name}"
        if not isinstance(axis, Mapping):
            raise ConfigError(f"must be a table of \"section.key\" = [values] ({shape})", key=where)
        keys = {k: v for k, v in axis.items() if k != "label"}
        if not keys:
            raise ConfigError('a linked axis must set at least one "section.key" = [values]', key=where)
        length, first = None, None
        for k, values in keys.items():
            _check_known(k, known, where)
            if not isinstance(values, list) or not values:
                raise ConfigError("a sweep axis must be a non-empty list of values", key=f"{where}.{k}")
            if length is None:
                length, first = len(values), k
            elif len(values) != length:
                raise ConfigError(f"has {len(values)} values but {first!r} has {length}: every list of a linked "
                                  f"axis must have the same length", key=f"{where}.{k}")
            _claim(owner, k, where)
        labels = axis.get("label")
        if labels is not None and (not isinstance(labels, list) or len(labels) != length
                                   or not all(isinstance(x, str) and x for x in labels)):
            raise ConfigError(f"must be a list of {length} non-empty strings, one per value", key=f"{where}.label")
        options = []
        for i in range(length):
            over = {k: v[i] for k, v in keys.items()}
            auto = ", ".join(f"{_leaf(k)}={_short(v)}" for k, v in over.items())
            options.append((labels[i] if labels else auto, over))
        axes.append(options)
    return axes


def _claim(owner: dict[str, str], dotted: str, where: str) -> None:
    """Record that axis ``where`` sets ``dotted``; two axes setting one key is an error."""
    if dotted in owner:
        raise ConfigError(f"{dotted!r} is already set by {owner[dotted]}; a key can be on one sweep axis only",
                          key=where)
    owner[dotted] = where


#: keys that hold for the whole experiment, so they cannot be swept
NOT_SWEEPABLE = ("run.seeds", "run.study")


def _check_known(dotted: str, known: Mapping[str, Any], where: str) -> None:
    if dotted in NOT_SWEEPABLE:
        raise ConfigError(f"{dotted!r} applies to the whole experiment and cannot be swept; "
                          f"set it in [run]", key=where)
    parts = dotted.split(".")
    node: Any = known
    for i, p in enumerate(parts):
        if not isinstance(node, Mapping) or p not in node:
            raise ConfigError(f"sweeps over {dotted!r}, which is not a config key", key=where)
        node = node[p]
        if i >= 1 and not isinstance(node, Mapping):
            # section.key exists; deeper parts (a policy's argument) are checked on expansion
            if i < len(parts) - 1:
                raise ConfigError(f"sweeps over {dotted!r}, but {'.'.join(parts[:i + 1])!r} is not a table",
                                  key=where)
            return
    if len(parts) < 2:
        raise ConfigError(f"sweeps over {dotted!r}; expected 'section.key'", key=where)


def _leaf(dotted: str) -> str:
    return dotted.rsplit(".", 1)[-1]


def _short(v: Any) -> str:
    """A value as a label: policy specs as ``Name(arg=value)``, plug-ins without their module."""
    if isinstance(v, Mapping) and "name" in v:
        name = str(v["name"]).rsplit(":", 1)[-1]
        args = ", ".join(f"{k}={x}" for k, x in v.items() if k != "name")
        return f"{name}({args})" if args else name
    if isinstance(v, str):
        return v.rsplit(":", 1)[-1]
    return str(v)


def apply_point(cfg: dict, point: Mapping[str, Any], resolved: Mapping[str, Any] | None = None) -> dict:
    """``cfg`` with the point's keys set. A key inside a table the file left to its default
    (``scheduler.task_time.alpha``) starts from the resolved default table, so sweeping one
    argument keeps the rest (the policy's name, the distribution's kind)."""
    out = copy.deepcopy(cfg)
    for k, v in point.items():
        parts = k.split(".")
        if resolved is not None and len(parts) > 2:
            _materialise(out, resolved, parts[:-1])
        set_path(out, k, copy.deepcopy(v), what="sweep")
    return out


def _materialise(raw: dict, resolved: Mapping[str, Any], parents: list[str]) -> None:
    node, ref = raw, resolved
    for p in parents:
        ref = ref.get(p) if isinstance(ref, Mapping) else None
        cur = node.get(p)
        if cur is None and isinstance(ref, Mapping):
            cur = node[p] = copy.deepcopy(dict(ref))
        elif isinstance(cur, str) and isinstance(ref, Mapping) and "name" in ref:
            cur = node[p] = {"name": cur}          # "Name" given as a string: make it a table
        elif cur is None:
            return
        if not isinstance(cur, dict):
            return
        node = cur


def default(section: str, key: str) -> Any:
    """The schema's default of ``section.key`` (a fresh copy): the one place a default lives,
    read by every caller that offers the same knob (``tb.init``, the runtime's processes)."""
    return _copy(SECTIONS[section][key].default)
