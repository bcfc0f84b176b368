"""Rules of the ``[faults]`` section that both engines follow."""
from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np

from .errors import ConfigError


def may_run_again(done: int, limit: int) -> bool:
    """Whether a task may be re-executed (an actor rebuilt) once more, after ``done`` re-runs
    so far, under a ``max_retries`` / ``max_restarts`` of ``limit`` (-1: no limit)."""
    return limit < 0 or done < limit


#: stream tag (second SeedSequence word) of the random-kill generator
RANDOM_KILL_STREAM = 0xFA17


def random_kill_rng(seed: int) -> np.random.Generator:
    """The generator ``random_victim`` draws from in a run seeded ``seed`` (both engines use
    this one, so with the same live nodes they pick the same victims)."""
    return np.random.default_rng(np.random.SeedSequence([seed, RANDOM_KILL_STREAM]))


def random_victim(live: Iterable[int], min_live_nodes: int, rng: np.random.Generator,
                  protected: Collection[int] = ()) -> int | None:
    """The node a ``kill_every_s`` tick kills: uniform among the live nodes not
    ``protected``, drawn from ``rng``; None (no kill) if that would leave fewer than
    ``min_live_nodes`` alive, or no node may be killed."""
    live = sorted(live)
    choices = [m for m in live if m not in protected]
    if len(live) <= min_live_nodes or not choices:
        return None
    return choices[int(rng.integers(len(choices)))]


#: Nodes a ``kill_every_s`` tick never picks, in both engines: node 0 holds the real driver's
#: connection to the cluster (losing it ends the run), and the simulator spares it too so
#: that both engines draw their victims from the same set with the same generator.
RANDOM_KILL_PROTECTED = frozenset({0})


#: The node the real runtime can never kill: node 0 holds the driver's connection to the
#: cluster (losing it ends the run). Random kills spare it in both engines
#: (:data:`RANDOM_KILL_PROTECTED`); a *scheduled* failure of it is a config error on the real
#: engine (:func:`check_real_node_failures`) and carried out by the simulator, which can.
REAL_DRIVER_NODE = 0


def real_node(node: int, n: int) -> int:
    """Node ``node`` of a config is node ``node % n`` of a real cluster of ``n`` nodes (a
    config written for a larger cluster runs on the scaled-down one, ``run.real_nodes``)."""
    return node % n


def check_real_node_failures(node_failures: Iterable[dict], n: int) -> None:
    """**Which scheduled node failures the real runtime carries out** — all of them, or the
    config is rejected: a failure of a node that is node 0 there (``node % n`` == 0, ``n``
    the real cluster's nodes) cannot be honoured (:data:`REAL_DRIVER_NODE`), so it is a
    ConfigError naming ``faults.node_failures[i].node``, before anything runs. Never skipped
    silently: a skipped failure would give a fault-tolerance result with no fault in it, and
    drivers placed as if it happened. The simulator carries out every scheduled failure, node
    0's too (its drivers then move to a live node)."""
    for i, x in enumerate(node_failures):
        if real_node(x["node"], n) == REAL_DRIVER_NODE:
            via = "" if x["node"] == REAL_DRIVER_NODE else f" ({x['node']} % {n} real nodes)"
            raise ConfigError(f"node {x['node']} is node 0 of the real engine{via}, which holds the driver and "
                              f"cannot fail there; kill another node, or run it with run.engine = \"sim\"",
                              key=f"faults.node_failures[{i}].node")


def driver_nodes(given: Iterable[int], n_drivers: int, n: int, scheduled_kills: Iterable[int] = (),
                 kill_every_s: float = 0.0, min_live_nodes: int = 1) -> list[int]:
    """The node of each of ``n_drivers`` drivers on nodes 0 .. n - 1 (both engines).

    ``given`` (the workload's ``driver_nodes``), if not empty, is kept (node k is k % n, so a
    config written for a larger cluster runs on a scaled-down one). Otherwise drivers are
    spread evenly, driver i on ``safe[i * len(safe) // n_drivers]``, over the nodes no
    scheduled failure kills (``scheduled_kills``: node indices) — or only over the
    :data:`RANDOM_KILL_PROTECTED` nodes when random kills (every ``kill_every_s`` seconds,
    > 0) can fire, i.e. ``min_live_nodes`` < n — so no driver dies with its node; if every
    node is to be killed, over all nodes.
    """
    given = [x % n for x in given]
    if given:
        return given
    if kill_every_s > 0 and min_live_nodes < n:
        safe = sorted(m for m in RANDOM_KILL_PROTECTED if m < n)
    else:
        killed = {m % n for m in scheduled_kills}
        safe = [i for i in range(n) if i not in killed]
    safe = safe or list(range(n))
    return [safe[i * len(safe) // n_drivers] for i in range(n_drivers)]
