"""One timer per trio run: handlers' deadlines and idle servers' retirement, in one heap.

A handler that suspends must be cut at its deadline, and its caller told `CallTimeout` right
then, even while a shielded cleanup keeps the server busy; a server's task idle for a while
must end. Neither gets a cancel scope or a task of its own: entering and closing a scope per
call was a fifth of an awaiting round trip, and moving a retire timer twice per call another
tenth. Instead each run has one `Timers`: a heap of ``(when, number, target)`` entries and
one system task that sleeps until the earliest and calls ``target.timer_fired(when)`` for
each entry that is due.

A server keeps one entry, for the earliest of its running handler's deadline and its idle
task's retirement, and asks for an earlier one only when it needs one
(`ServerState.look_at`): the handlers that follow one another mostly have later deadlines,
and the entry, when it fires, looks at the handler running then. So a round trip costs one
comparison, and a busy server one ``heappush`` per `RETIRE_AFTER` or per budget. A handler
in a released block has an entry of its own.

Entries are never removed when they stop mattering (a server's entry that an earlier one
replaced, a released handler's that returned in time): ``target.timer_live(when)`` says
whether one still does, and the heap is rebuilt without the dead ones whenever it holds
twice as many entries as it held live ones at the last rebuild (amortized O(1) per entry;
memory bounded by the live ones). The task's own deadline follows the heap's earliest
entry, which only moves when an entry comes in earlier than every other.
"""

from __future__ import annotations

import itertools
import math
from heapq import heapify, heappop, heappush
from typing import Protocol

import trio
from trio.lowlevel import RunVar, spawn_system_task

_INF = math.inf
_MIN_PRUNE = 64  # entries below which the heap is never rebuilt


class Timed(Protocol):
    """What a timer entry points at: a request whose handler has a deadline, or a server."""

    def timer_fired(self, when: float, /) -> None:
        """The entry for `when` is due (never raises)."""
        ...

    def timer_live(self, when: float, /) -> bool:
        """Whether the entry for `when` still matters (dead ones are dropped when the heap is
        rebuilt)."""
        ...


class Timers:
    """The timers of one trio run (`timers`)."""

    __slots__ = ("_heap", "_limit", "_numbers", "_scope", "_wake_at", "now")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timed]] = []
        self._numbers = itertools.count()
        self._limit = _MIN_PRUNE
        self._scope: trio.CancelScope | None = None  # the sleeping task's, while it sleeps
        self._wake_at = _INF  # the task's deadline (or, before it sleeps, where it will look)
        self.now = trio.lowlevel.current_clock().current_time

    def add(self, when: float, target: Timed) -> None:
        """Call ``target.timer_fired(when)`` at `when` (trio's clock)."""
        heap = self._heap
        heappush(heap, (when, next(self._numbers), target))
        if when < self._wake_at:
            self._wake_at = when
            if self._scope is not None:
                self._scope.deadline = when
        if len(heap) > self._limit:
            self._prune()

    def _prune(self) -> None:
        heap = [entry for entry in self._heap if entry[2].timer_live(entry[0])]
        heapify(heap)
        self._heap = heap
        self._limit = max(_MIN_PRUNE, 2 * len(heap))

    def _fire(self) -> None:
        heap = self._heap
        now = self.now()
        while heap and heap[0][0] <= now:
            when, _, target = heappop(heap)
            target.timer_fired(when)

    async def run(self) -> None:
        """The run's timer task: sleep until the earliest entry, fire what is due, again."""
        while True:
            self._fire()
            self._wake_at = self._heap[0][0] if self._heap else _INF
            with trio.CancelScope(deadline=self._wake_at) as self._scope:
                await trio.sleep_forever()
            self._scope = None


_TIMERS: RunVar[Timers] = RunVar("trioserver.timers")


def timers() -> Timers:
    """This trio run's timers; the first call starts its task (a system task: it ends with
    the run, and is never among the tasks of a user's nurseries)."""
    try:
        return _TIMERS.get()
    except LookupError:
        found = Timers()
        _TIMERS.set(found)
        spawn_system_task(found.run, name="trioserver: timers")
        return found
