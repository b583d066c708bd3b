"""One timer per trio run: handlers' deadlines and idle servers' retirement, in one heap.

A handler that suspends must be cut at its deadline, and its caller told `CallTimeout` right
then, even while a shielded cleanup keeps the server busy; a server's task idle for a while
must end. Neither gets a cancel scope or a task of its own: entering and closing a scope per
call was a fifth of an awaiting round trip, and moving a retire timer twice per call another
tenth. Instead each run has one `Timers`: a heap of ``(when, number, target)`` entries and
one system task that sleeps until the earliest and calls ``target.timer_fired()`` for each
entry that is due.

Entries are never removed when they stop mattering (a handler that returned before its
deadline leaves its entry behind): ``target.timer_live()`` says whether one still does, and
the heap is rebuilt without the dead ones whenever it holds twice as many entries as it
held live ones at the last rebuild (amortized O(1) per entry; memory bounded by the live
ones). The task's own deadline follows the heap's earliest entry, which only moves when an
entry comes in earlier than every other (deadlines mostly arrive in order), so a round trip
costs one ``heappush``.
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

    def timer_fired(self) -> None:
        """The entry is due (never raises)."""
        ...

    def timer_live(self) -> bool:
        """Whether the entry still matters (dead ones are dropped when the heap is rebuilt)."""
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
        """Call ``target.timer_fired()`` at `when` (trio's clock), if it is live then."""
        heap = self._heap
        heappush(heap, (when, next(self._numbers), target))
        if when < self._wake_at:
            self._wake_at = when
            if self._scope is not None:
                self._scope.deadline = when
        if len(heap) > self._limit:
            self._prune()

    def _prune(self) -> None:
        heap = [entry for entry in self._heap if entry[2].timer_live()]
        heapify(heap)
        self._heap = heap
        self._limit = max(_MIN_PRUNE, 2 * len(heap))

    def _fire(self) -> None:
        heap = self._heap
        now = self.now()
        while heap and heap[0][0] <= now:
            heappop(heap)[2].timer_fired()

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
