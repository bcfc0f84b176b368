r"""A task's life, shared by both engines and recorded in the Trace.

    SUBMITTED -> WAITING_FOR_INPUTS -> QUEUED -> RUNNING -> FINISHED
         \              \                 \          \-> FAILED / LOST
          \-------------->\--------------->\-> INFEASIBLE (no node can ever run it)
    LOST -> RECONSTRUCTING -> QUEUED ...

Engines call :func:`check_transition` in validation mode (tests), so an illegal
step is caught where it happens.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .resources import Resources


class TaskState(enum.Enum):
    SUBMITTED = "submitted"
    WAITING_FOR_INPUTS = "waiting_for_inputs"
    #: the runtime only: the global scheduler chose a node, the node has not queued it yet
    ASSIGNED = "assigned"
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    LOST = "lost"
    RECONSTRUCTING = "reconstructing"
    INFEASIBLE = "infeasible"


S = TaskState
#: Legal (from, to) transitions.
TRANSITIONS: frozenset[tuple[TaskState, TaskState]] = frozenset({
    (S.SUBMITTED, S.WAITING_FOR_INPUTS),
    (S.SUBMITTED, S.QUEUED),
    (S.SUBMITTED, S.INFEASIBLE),
    (S.WAITING_FOR_INPUTS, S.QUEUED),
    (S.WAITING_FOR_INPUTS, S.INFEASIBLE),
    (S.WAITING_FOR_INPUTS, S.FAILED),
    (S.QUEUED, S.RUNNING),
    (S.QUEUED, S.INFEASIBLE),
    (S.QUEUED, S.LOST),
    (S.RUNNING, S.FINISHED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.LOST),
    (S.FINISHED, S.LOST),
    (S.LOST, S.RECONSTRUCTING),
    (S.LOST, S.FAILED),
    (S.RECONSTRUCTING, S.QUEUED),
    (S.SUBMITTED, S.ASSIGNED),
    (S.RECONSTRUCTING, S.ASSIGNED),
    (S.ASSIGNED, S.QUEUED),
    (S.ASSIGNED, S.INFEASIBLE),
    (S.ASSIGNED, S.LOST),
    (S.RECONSTRUCTING, S.WAITING_FOR_INPUTS),
    # placed at submission (scheduler.decide_at = "submit"), waiting there for its inputs,
    # when that node dies
    (S.WAITING_FOR_INPUTS, S.LOST),
    (S.RECONSTRUCTING, S.LOST),
    # spilled back from a node's queue to the global scheduler, which places it again
    # (SpilloverPolicy.spillback): a new placement of the same attempt (the runtime's task
    # table orders placements by their ``hop``, real.gcs.Shard.task_update)
    (S.QUEUED, S.ASSIGNED),
})

def _within_attempt() -> dict[TaskState, frozenset[TaskState]]:
    """For each state, the states one attempt can reach from it through legal transitions
    (not through LOST: a lost attempt's task runs again as a new attempt)."""
    step: dict[TaskState, set[TaskState]] = {}
    for a, b in TRANSITIONS:
        if b is not S.LOST and a is not S.LOST:
            step.setdefault(a, set()).add(b)
    out = {}
    for a in S:
        seen, todo = set(), [a]
        while todo:
            for b in step.get(todo.pop(), ()):
                if b not in seen:
                    seen.add(b)
                    todo.append(b)
        out[a] = frozenset(seen)
    return out


#: state -> the states an attempt can reach from it (a table that records only some of the
#: states an attempt passes through checks its moves against this: real.gcs.Shard.task_update)
REACHABLE_WITHIN_ATTEMPT: dict[TaskState, frozenset[TaskState]] = _within_attempt()
#: where a new attempt can start (a rebuild, or a retry after its worker died)
ATTEMPT_STARTS = frozenset({S.SUBMITTED, S.RECONSTRUCTING})


def legal_record(old: TaskState | None, new: TaskState, new_attempt: bool) -> bool:
    """May a record that saw ``old`` now say ``new``? Within an attempt, ``new`` must be
    reachable from ``old``; a new attempt must be reachable from where attempts start."""
    if old is None or (old is new and not new_attempt):
        return True
    if new_attempt:
        return new in ATTEMPT_STARTS or any(new in REACHABLE_WITHIN_ATTEMPT[s] for s in ATTEMPT_STARTS)
    return new in REACHABLE_WITHIN_ATTEMPT[old]


#: :func:`legal_record` as sets of state values, for a hot path (the runtime's task table checks
#: every write): the (old, new) moves within an attempt, and the states a new attempt may be in
RECORD_MOVES: frozenset[tuple[str, str]] = frozenset(
    (a.value, b.value) for a in S for b in S if legal_record(a, b, False))
NEW_ATTEMPT_STATES: frozenset[str] = frozenset(b.value for b in S if legal_record(S.SUBMITTED, b, True))

#: States a task attempt can end in (the Trace's ``state`` column).
FINAL_STATES = frozenset({S.FINISHED, S.FAILED, S.LOST, S.INFEASIBLE})


class IllegalTransition(RuntimeError):
    pass


def check_transition(old: TaskState, new: TaskState, task_id: object = None) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is legal."""
    if (old, new) not in TRANSITIONS:
        raise IllegalTransition(f"task {task_id}: {old.value} -> {new.value} is not a legal transition")


@dataclass(slots=True)
class TaskSpec:
    """One task of a workload, as both engines receive it.

    Dependencies are indices of other tasks *in the same job* (``Job.tasks``), so a
    job is a small self-contained DAG and a workload can be streamed job by job.
    """
    #: index of this task within its job
    index: int
    #: the remote function's name (estimators can be keyed by it)
    function: str
    #: how long the task computes on a node of speed 1.0, seconds
    duration_s: float
    #: resources the task holds while it runs
    resources: Resources
    #: size of the object the task returns, bytes
    output_bytes: int = 0
    #: indices (within the job) of tasks whose outputs this task takes as inputs
    deps: tuple[int, ...] = ()


@dataclass(slots=True)
class Job:
    """A unit of submission: one task, a chain, a map-reduce, a tree-reduce."""
    #: workload-wide job number, in submission order
    job_id: int
    #: index of the driver that submits it
    driver: int
    #: the job's tasks; a task's deps point at lower indices only (topological order)
    tasks: list[TaskSpec] = field(default_factory=list)
