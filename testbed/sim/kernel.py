"""A SimPy environment with a fast lane for the simulator's hot path.

SimPy processes and events work as usual (heartbeats, drivers of faults, anything a
study adds). On top, :meth:`Kernel.call_in` schedules a plain ``fn(arg)`` call on the
same heap, keyed ``(time, priority, event id)`` like every SimPy event, so ties are
broken in scheduling order and runs are deterministic. A fast-lane entry is the 5-tuple
``(time, priority, event id, fn, arg)`` (SimPy's own are 4-tuples; the unique event id
means no comparison ever reaches the fourth item) and costs one heap push and pop and a
call: no Event object, no callback list. That is the difference
between ~25k and ~100k simulated tasks per second here (see ``testbed bench sim``).

It relies on SimPy 4's ``_queue``/``_eid``/``_now`` (pinned ``simpy>=4.1,<5``); the
simulator reads ``env._now`` directly on its hot path for the same reason (the ``now``
property costs a call). The test-suite checks that fast calls and SimPy events interleave
in time order.
"""
from __future__ import annotations

from heapq import heapify, heappop, heappush
from typing import Any, Callable

import simpy
from simpy.core import NORMAL


class Kernel(simpy.Environment):
    def __init__(self, initial_time: float = 0.0):
        super().__init__(initial_time)
        #: set to True (by any callback) to stop :meth:`drive`
        self.stopped = False

    def call_in(self, delay: float, fn: Callable[[Any], None], arg: Any) -> None:
        """Call ``fn(arg)`` at ``now + delay`` (fast lane)."""
        heappush(self._queue, (self._now + delay, NORMAL, next(self._eid), fn, arg))

    def cancel_calls(self, fn: Callable[[Any], None], args: list) -> int:
        """Remove the pending fast-lane calls ``fn(a)`` for every object ``a`` in ``args``
        (compared by identity); returns how many were removed. O(heap size)."""
        doomed = {id(a) for a in args}
        q = self._queue
        keep = [e for e in q if not (len(e) == 5 and e[3] == fn and id(e[4]) in doomed)]
        removed = len(q) - len(keep)
        if removed:
            q[:] = keep                 # in place: drive's loop holds this list
            heapify(q)
        return removed

    def drive(self, until: float = float("inf")) -> None:
        """Process events in time order until ``stopped``, no event is left, or the next
        one lies beyond ``until`` (then ``now`` becomes ``until``)."""
        queue = self._queue
        step = self.step
        while queue and not self.stopped:
            entry = heappop(queue)
            if len(entry) == 5:             # a fast-lane call
                t, _, _, fn, arg = entry
                if t > until:
                    heappush(queue, entry)  # its key is unique: the heap's order is unchanged
                    self._now = until
                    return
                self._now = t
                fn(arg)
            else:                           # a SimPy event: put back, let SimPy process it
                heappush(queue, entry)
                if entry[0] > until:
                    self._now = until
                    return
                step()
