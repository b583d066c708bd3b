"""A run stuck for good: a `MockClock` that tells a deadlocked example from a slow one.

On a `trio.testing.MockClock` with autojump, a run whose tasks all wait on something with a
deadline goes on at once (the clock jumps to the deadline). A run whose tasks all wait and
that has no deadline left can only go on if something outside trio wakes it (a worker
thread ending, I/O): trio's loop spins, waiting for it, forever if it never comes, and
neither pytest's timeout nor Hypothesis can stop it. `Watch` notices when that has
lasted `stuck_after` seconds of real time with no task run meanwhile, and makes the run
stop: it raises `Stopped` from the run loop (trio then abandons the run, as after an
internal error: `trio.TrioInternalError` from `Stopped`). `collect_abandoned` then lets the
abandoned tasks go quietly.
"""

from __future__ import annotations

import gc
import inspect
import math
import sys
import time
import warnings
from types import FrameType
from typing import Any

import trio
import trio.testing

#: Real seconds a run may wait with no deadline and no task run before it counts as stuck.
STUCK_AFTER = 2.0


class Stopped(Exception):
    """Raised from trio's run loop by `Watch`: the run is stuck for good."""

    def __init__(self, at: float, waiting: tuple[str, ...]) -> None:
        super().__init__(f"stuck at t={at}")
        self.at = at
        self.waiting = waiting


class _Steps(trio.abc.Instrument):
    """Counts task steps: a run in which a task ran is not stuck."""

    def __init__(self) -> None:
        self.count = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.count += 1


class Watch:
    """A `trio.testing.MockClock` with autojump (`clock`) that stops a run stuck for good
    (`Stopped`); pass `instrument` to `trio.run` with it.

    `MockClock` is final: its public `deadline_to_sleep_time`, which trio's loop asks only
    when no task is runnable (with the next deadline, if any), is wrapped on the instance.
    """

    def __init__(self, stuck_after: float = STUCK_AFTER) -> None:
        self.clock = trio.testing.MockClock(autojump_threshold=0)
        self.stuck_after = stuck_after
        self.instrument = _Steps()
        self._idle_since: float | None = None  # real time the run was first seen waiting
        self._steps_then = 0  # task steps by then
        self._sleep_time = self.clock.deadline_to_sleep_time
        setattr(self.clock, "deadline_to_sleep_time", self._deadline_to_sleep_time)  # noqa: B010

    def _deadline_to_sleep_time(self, deadline: float) -> float:
        if deadline != math.inf:
            self._idle_since = None
        elif self._idle_since is None or self.instrument.count != self._steps_then:
            self._idle_since = time.monotonic()
            self._steps_then = self.instrument.count
        elif time.monotonic() - self._idle_since >= self.stuck_after:
            raise Stopped(self.clock.current_time(), waiting_tasks())
        return self._sleep_time(deadline)


_INTERNAL = ("<init>", "<TrioToken.run_sync_soon task>")


def waiting_tasks() -> tuple[str, ...]:
    """Each task of the run that waits, as ``name: function (file:line)``, where it waits."""
    root = trio.lowlevel.current_root_task()
    found: list[str] = []
    stack = [root] if root is not None else []
    while stack:
        task = stack.pop()
        stack.extend(
            child for nursery in reversed(task.child_nurseries) for child in nursery.child_tasks
        )
        if task.name in _INTERNAL:
            continue
        frame = _innermost(task.coro)
        where = "" if frame is None else f": {_describe(frame)}"
        found.append(f"{task.name}{where}")
    return tuple(found)


def _innermost(coro: Any) -> FrameType | None:
    """The innermost frame of a coroutine chain that is not trio's own.

    A coroutine that a generator steps by hand (as the server's task drives a handler that
    began in its caller's step) is no awaitee of it: it is found among the generator's locals.
    """
    found: FrameType | None = None
    seen: set[int] = set()
    while coro is not None and id(coro) not in seen:
        seen.add(id(coro))
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        if not _is_trios(frame):
            found = frame
        awaited = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if awaited is None:
            driven = [v for v in frame.f_locals.values() if inspect.iscoroutine(v)]
            awaited = next((c for c in driven if c.cr_frame is not None), None)
        coro = awaited
    return found


def _is_trios(frame: FrameType) -> bool:
    module = frame.f_globals.get("__name__", "")
    return isinstance(module, str) and (module == "trio" or module.startswith("trio."))


def _describe(frame: FrameType) -> str:
    module = frame.f_globals.get("__name__", "?")
    return f"{frame.f_code.co_qualname} ({module}, line {frame.f_lineno})"


def collect_abandoned() -> None:
    """Collect what an abandoned run left (its tasks' coroutines, async generators), quietly:
    closed outside trio, their cleanup fails in ways that say nothing about the test."""
    hook = sys.unraisablehook
    sys.unraisablehook = _ignore
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Finalizers run by one pass can keep others alive until the next.
            for _ in range(8):
                if not gc.collect():
                    break
    finally:
        sys.unraisablehook = hook


def _ignore(unraisable: Any) -> None:
    pass
