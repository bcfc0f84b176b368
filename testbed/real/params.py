"""The runtime's timing parameters: every constant that shapes its overheads, named, with a unit.

One table (:data:`RUNTIME`, :class:`~testbed.core.schema.Field` per key: type, default, rule,
unit and meaning) is the only place these defaults live. ``tb.init(_system_config={...})``
overrides any of them (as Ray's ``_system_config``); :func:`resolve` validates the dict (an
unknown key or a bad value is a ``ValueError`` naming it) and the result travels in the
cluster config (``Context.config["system"]``) to every process, which reads it with
:func:`of`. Code without a Context (the event loop's listener, ``connect_retry``) reads the
process's installed copy through :func:`get`; the supervisor installs it before it forks the
roles. The README section "Runtime parameters" is generated from this table
(:func:`markdown_table`; a test keeps the two equal). The calibration (``testbed calibrate``)
refers to these names.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.errors import ConfigError
from ..core.schema import Field, check_table, non_negative, positive

#: the two rules a parameter can have, by the words the README's table and errors use
_RULES = {"> 0": positive, ">= 0": non_negative}


def _num(default: float, doc: str, rule: str = "> 0") -> Field:
    """A number parameter (its unit opens ``doc``) that must satisfy ``rule``."""
    return Field((float,), default, _RULES[rule], rule, doc)


RUNTIME: dict[str, Field] = {
    "gcs_write_behind_s": _num(0.002, "seconds: a GCS client holds write-behind "
                               "writes (task-table entries off the critical path) to one shard this long and "
                               "sends them as one batch", ">= 0"),
    "gcs_ack_coalesce_s": _num(0.001, "seconds: the tail of a GCS chain "
                               "acknowledges a client's writes at most once per this window (one ack per client)",
                               ">= 0"),
    "gcs_chain_ack_coalesce_s": _num(0.001, "seconds: a GCS replica's "
                                     "acknowledgement back up its chain is coalesced over this window", ">= 0"),
    "node_startup_grace_s": _num(10.0, "seconds: a configured node that has not sent "
                                 "its first heartbeat this long after the global scheduler started, plus the "
                                 "heartbeat timeout, is declared dead"),
    "lost_recheck_heartbeats": _num(5.0, "heartbeat intervals: how often a node manager "
                                    "re-checks the objects its tasks wait for that live on dead nodes"),
    "lost_recheck_min_s": _num(0.2, "seconds: the shortest re-check interval of lost "
                               "objects (the interval is max(this, lost_recheck_heartbeats x heartbeat))"),
    "spec_wait_retry_s": _num(0.05, "seconds: when a lost object's task entry has no "
                              "spec yet (its submitter's write is still in flight), look again after this"),
    "records_gather_timeout_s": _num(5.0, "seconds: a node gathering task records "
                                     "from its peers answers with what it has after this (a peer died)"),
    "peer_connect_timeout_s": _num(2.0, "seconds: deadline of a connection (connect and "
                                   "handshake) from a node manager or the global scheduler to a node that has "
                                   "reported"),
    "connect_deadline_s": _num(20.0, "seconds: how long a process retries connecting "
                               "to a peer that is still starting (GCS, chain master, node manager)"),
    "handshake_timeout_s": _num(5.0, "seconds: a listener closes a connection whose "
                                "authentication handshake has not finished by then"),
    "start_timeout_s": _num(60.0, "seconds: tb.init (and tb.add_node) fail when the "
                            "cluster (the node) has not started and reported within this"),
    "start_poll_s": _num(0.005, "seconds: the driver polls for every node's first "
                         "report this often during tb.init and tb.add_node"),
    "supervisor_poll_s": _num(0.2, "seconds: the supervisor's wait between checks "
                              "for exited processes when no command arrives"),
    "idle_worker_timeout_s": _num(1.0, "seconds: a pooled worker idle this long exits while "
                                  "its node has more task workers than CPUs (min 1), as Ray's idle-worker killing; "
                                  "workers blocked in get, or nested tasks, grow the pool, this shrinks it back"),
    "replay_warn_calls": _num(100.0, "calls: an actor restart that replays more calls "
                              "than this (the calls since its last checkpoint) prints one warning per actor "
                              "naming checkpoint_interval"),
}

#: this process's parameters (installed by the supervisor before it forks the roles)
_installed: dict[str, Any] = {}


def resolve(system_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every parameter, with ``system_config``'s overrides checked; a bad one is a ValueError."""
    if system_config is None:
        system_config = {}
    if not isinstance(system_config, Mapping):
        raise TypeError(f"_system_config must be a dict of parameter -> value, got {type(system_config).__name__}")
    try:
        return check_table(system_config, RUNTIME, "_system_config")
    except ConfigError as exc:
        raise ValueError(f"init(): {exc}") from None


def of(ctx, name: str) -> Any:
    """Parameter ``name`` of the cluster ``ctx`` belongs to."""
    return ctx.config["system"][name]


def install(system: Mapping[str, Any]) -> None:
    """Make ``system`` this process's parameters for code that has no Context."""
    _installed.clear()
    _installed.update(system)


def get(name: str) -> Any:
    """This process's parameter ``name`` (the default before :func:`install`)."""
    if name in _installed:
        return _installed[name]
    return RUNTIME[name].default


def markdown_table() -> str:
    """The README's "Runtime parameters" table."""
    lines = ["| parameter | default | meaning (unit first) |", "|---|---|---|"]
    for name, f in RUNTIME.items():
        lines.append(f"| `{name}` | {f.default:g} | {f.doc} |")
    return "\n".join(lines)
