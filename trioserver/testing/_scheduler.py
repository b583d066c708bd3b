"""Scheduling under Hypothesis' control: which runnable task resumes first is part of the input.

trio's run loop takes every runnable task of a pass as one batch. Under
Hypothesis (trio registers a plugin that turns this on), it sorts the batch by
task age and shuffles it with a module-level ``random.Random`` that Hypothesis
reseeds to 0 for every example, so plain trio always picks the same order and
races that depend only on ordering are missed. While a `Schedule` is active in
a thread, trioserver swaps that random source for one whose ``shuffle`` follows
the schedule: oldest task first (the *canonical* order), except at the passes
where the schedule deviates. Shrinking a schedule removes deviations, so a
failure shrinks toward the canonical order and replays exactly.

The source (``trio._core._run._r``) is private to trio. It is used only on the
trio versions this module was checked against, and only after a probe run has
shown that it behaves as expected; otherwise scheduling falls back, with a
`SchedulingFallbackWarning`, to seeding trio's own shuffle from Hypothesis
(``st.random_module()``): orderings still vary, but no longer shrink toward
the canonical order.
"""

from __future__ import annotations

import contextvars
import random
import threading
import warnings
from collections.abc import Generator, MutableSequence, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
import trio
from hypothesis import strategies as st

#: trio versions whose run loop was read and tested with this hook (``trio>=0.31`` is required).
TESTED_TRIO_VERSIONS = ((0, 31), (0, 36))


#: The lane (or machine caller) a task works for: set in the lane's task, inherited by the
#: tasks it starts, so that scheduling decisions name tasks by lane.
LANE: contextvars.ContextVar[str | None] = contextvars.ContextVar("trioserver_lane", default=None)


class SchedulingFallbackWarning(UserWarning):
    """Warned when trio's scheduler cannot be steered: orderings are drawn less precisely."""


@attrs.frozen
class Deviation:
    """One departure from the canonical order: at a contested pass, resume another task first.

    Attributes:
      after: How many contested passes (passes with two or more runnable tasks)
        keep the canonical order before this one.
      resume: Which task resumes first, counted among the runnable tasks in
        age order and wrapped around (``1`` is the second oldest).
    """

    after: int
    resume: int

    def __repr__(self) -> str:
        return f"Deviation(after={self.after}, resume={self.resume})"


@attrs.frozen
class Decision:
    """A scheduling decision that departed from the canonical order, as the story shows it.

    Attributes:
      time: The virtual time of the pass.
      runnable: Names of the runnable tasks, oldest first (the canonical order): a lane's
        task by the lane's name (``#2``), a task a lane started by the lane and the task's
        own name (``#2/grab``), any other task (the server's) by its trio name.
      resumed: The name of the task that resumed first instead.
    """

    time: float
    runnable: tuple[str, ...]
    resumed: str

    def describe(self) -> str:
        """One line: ``t=1.000  #2 resumed first (runnable: #1, #2)``."""
        runnable = ", ".join(self.runnable)
        return f"t={self.time:.3f}  {self.resumed} resumed first (runnable: {runnable})"


def schedules(max_deviations: int = 4) -> st.SearchStrategy[tuple[Deviation, ...]]:
    """A strategy for schedules: at most `max_deviations` deviations from the canonical order.

    Args:
      max_deviations: The bound on the number of deviations in one schedule.

    Returns:
      A strategy of tuples of `Deviation`, shrinking toward ``()`` (canonical order).
    """
    # One integer per deviation keeps Hypothesis' work per example small; it shrinks toward
    # after=0, resume=1. Three deviations in four come within the next 6 contested passes
    # (a small run has few: there, one in eight hits a given pass, not one in sixteen), the
    # others up to 16 passes on.
    codes = st.lists(st.integers(0, _SOON * 3 + _LATER - 1), max_size=max_deviations)
    return codes.map(lambda drawn: tuple(_deviation(c) for c in drawn))


_SOON = 6 * 7  # codes of deviations within 6 passes (after 0 to 5, resume 1 to 7)
_LATER = 10 * 7  # codes of deviations 6 to 15 passes on


def _deviation(code: int) -> Deviation:
    """Code 0 to 3 * _SOON - 1: after 0 to 5 (three times over); then after 6 to 15."""
    x = code % _SOON if code < 3 * _SOON else _SOON + code - 3 * _SOON
    return Deviation(x // 7, 1 + x % 7)


def _trio_version() -> tuple[int, int]:
    parts = trio.__version__.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):  # pragma: no cover - trio always has a numeric version
        return (0, 0)


class _ScheduledRandom(random.Random):
    """trio's random source, replaced: follows the active schedule in the thread it serves."""

    def __init__(self, original: random.Random) -> None:
        super().__init__()
        self.original = original
        self.thread: int | None = None
        self.pending: list[Deviation] = []
        self.countdown = 0
        self.decisions: list[Decision] = []
        self.contested = 0

    # Everything except the batch shuffle goes to trio's own source, untouched.
    def random(self) -> float:
        return self.original.random()

    def uniform(self, a: float, b: float) -> float:
        return self.original.uniform(a, b)

    def shuffle(self, x: MutableSequence[Any]) -> None:
        if self.thread != threading.get_ident():
            self.original.shuffle(x)
            return
        # trio sorted the batch oldest first and resumes it from the end. Its own tasks (the
        # init task, the run_sync_soon task) go first and are never steered.
        internal = [t for t in x if _is_internal(t)]
        order = [t for t in x if not _is_internal(t)]
        if len(order) > 1:
            self.contested += 1
            if self.pending:
                if self.countdown == 0:
                    deviation = self.pending.pop(0)
                    self.countdown = self.pending[0].after if self.pending else 0
                    runnable = tuple(_name(t) for t in order)
                    first = order.pop(1 + (deviation.resume - 1) % (len(order) - 1))
                    self.decisions.append(Decision(_now(), runnable, _name(first)))
                    order.insert(0, first)
                else:
                    self.countdown -= 1
        order[:0] = internal
        x[:] = order[::-1]


def _is_internal(task: Any) -> bool:
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:  # pragma: no cover - the scheduler always runs inside trio.run
        root = None
    return task is root or _name(task) == "<TrioToken.run_sync_soon task>"


def _name(task: Any) -> str:
    """The task's name in a story: by the lane it works for, if any (see `LANE`)."""
    name = str(getattr(task, "name", repr(task)))
    context = getattr(task, "context", None)
    lane = context.get(LANE) if isinstance(context, contextvars.Context) else None
    if lane is None or lane == name:
        return name
    return f"{lane}/{name.rpartition('.')[2]}"


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:  # pragma: no cover - the scheduler always runs inside trio.run
        return float("nan")


_lock = threading.Lock()
_hook: _ScheduledRandom | None = None
_available: bool | None = None


def _install() -> _ScheduledRandom | None:
    """Swap trio's random source for a `_ScheduledRandom`, once per process; None if unusable."""
    global _hook
    if _hook is not None:
        return _hook
    if not TESTED_TRIO_VERSIONS[0] <= _trio_version() < TESTED_TRIO_VERSIONS[1]:
        return None
    run_module: Any = getattr(getattr(trio, "_core", None), "_run", None)
    original = getattr(run_module, "_r", None)
    if not isinstance(original, random.Random) or not hasattr(
        run_module, "_ALLOW_DETERMINISTIC_SCHEDULING"
    ):
        return None
    _hook = _ScheduledRandom(original)
    run_module._r = _hook
    # trio's Hypothesis plugin turns this on when Hypothesis is imported; make sure of it.
    run_module._ALLOW_DETERMINISTIC_SCHEDULING = True
    return _hook


def _probe(hook: _ScheduledRandom) -> bool:
    """Run a tiny program twice: the canonical order, then one deviation must swap two tasks."""

    async def program(order: list[str]) -> None:
        async def first_step(name: str) -> None:
            order.append(name)

        async with trio.open_nursery() as nursery:  # both start in the same pass
            nursery.start_soon(first_step, "old")
            nursery.start_soon(first_step, "new")

    results: list[list[str]] = []

    def probe() -> None:  # in a thread of its own: the caller may be inside a trio run
        for schedule in [(), (Deviation(after=0, resume=1),)] * 2:
            order: list[str] = []
            with _steering(hook, schedule):
                trio.run(program, order)
            results.append(order)

    thread = threading.Thread(target=probe, name="trioserver.testing probe")
    thread.start()
    thread.join()
    return (
        len(results) == 4
        and results[0] == results[2] == ["old", "new"]
        and results[1] == results[3] == ["new", "old"]
    )


def hook_available() -> bool:
    """Whether trio's scheduler can be steered here (checked once: trio version, then a probe).

    Returns:
      ``True`` if schedules drawn by `schedules` are followed exactly; ``False``
      if `steer` falls back to trio's own shuffle.
    """
    global _available
    with _lock:
        if _available is None:
            hook = _install()
            _available = hook is not None and _probe(hook)
        return _available


@contextmanager
def _steering(hook: _ScheduledRandom, schedule: Sequence[Deviation]) -> Generator[list[Decision]]:
    if hook.thread is not None:
        raise RuntimeError("trioserver.testing: only one steered trio run at a time")
    hook.thread = threading.get_ident()
    hook.pending = list(schedule)
    hook.countdown = schedule[0].after if schedule else 0
    hook.decisions = []
    hook.contested = 0
    try:
        yield hook.decisions
    finally:
        hook.thread = None
        hook.pending = []


@contextmanager
def steer(schedule: Sequence[Deviation] | None) -> Generator[list[Decision]]:
    """Follow `schedule` in every trio run in this thread, inside the block.

    Args:
      schedule: The deviations from the canonical order, or ``None`` when
        scheduling falls back (see `hook_available`).

    Yields:
      The list that collects the decisions taken (`Decision` objects), as they happen.

    Raises:
      RuntimeError: Another thread is steering already.
    """
    hook = _hook if schedule is not None and hook_available() else None
    if hook is None:
        yield []
        return
    with _steering(hook, schedule or ()) as decisions:
        yield decisions


def fallback_warning() -> None:
    """Warn, once per call site, that scheduling falls back to seeding trio's own shuffle."""
    warnings.warn(
        f"trioserver.testing cannot steer trio {trio.__version__}'s scheduler (tested: "
        f"{'.'.join(map(str, TESTED_TRIO_VERSIONS[0]))} to before "
        f"{'.'.join(map(str, TESTED_TRIO_VERSIONS[1]))}); orderings are drawn with "
        "st.random_module() instead and will not shrink toward the canonical order",
        SchedulingFallbackWarning,
        stacklevel=3,
    )


def schedule_strategy(max_deviations: int) -> st.SearchStrategy[Any]:
    """`schedules`, or ``st.random_module()`` (seeding trio's shuffle) when the hook is unusable."""
    if hook_available():
        return schedules(max_deviations)
    fallback_warning()
    return st.random_module().map(lambda _: None)
